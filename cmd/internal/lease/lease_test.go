package lease

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"kanade-backend/actors/clock"
	"kanade-backend/internal/testsupport"
	"kanade-backend/storage/broker"
	"kanade-backend/storage/broker/brokertest"
)

// The server expires keys on its own clock (real time), so the tests of
// expiry use a short bucket TTL (testTTL); the candidates' pacing and
// step-down deadline run on a fake clock that the tests advance. The
// other tests use stableTTL: with one second of real time, a loaded
// machine let the key expire between two steps of a test, and the lease
// then (rightly) reported it taken or refused a resign, instead of what
// the test checks.
const (
	testTTL      = time.Second
	stableTTL    = time.Minute
	testRenew    = 200 * time.Millisecond
	testRetry    = 100 * time.Millisecond
	testStepDown = 800 * time.Millisecond
)

type candidate struct {
	t        *testing.T
	name     string
	l        *Lease
	nc       *nats.Conn
	metrics  *Metrics
	acquired chan uint64
	lost     chan error
	standby  chan Holder
}

// newCandidate is one backend: its own NATS connection (closing it is the
// backend dying), the shared fake clock.
func newCandidate(t *testing.T, br *brokertest.Broker, clk clock.Clock, name string) *candidate {
	t.Helper()
	return newCandidateTTL(t, br, clk, name, stableTTL)
}

// newCandidateTTL is newCandidate with the bucket TTL ttl (every candidate
// of a test must use the same: each one updates the bucket).
func newCandidateTTL(t *testing.T, br *brokertest.Broker, clk clock.Clock, name string, ttl time.Duration) *candidate {
	t.Helper()
	nc, err := broker.Connect(broker.ConnectOptions{InProcess: br.Embedded, Name: name, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	c := &candidate{t: t, name: name, nc: nc, metrics: NewMetrics(nil),
		acquired: make(chan uint64, 16), lost: make(chan error, 16), standby: make(chan Holder, 16)}
	l, err := New(Config{JS: js, TTL: ttl, RenewEvery: testRenew, RetryEvery: testRetry, StepDownAfter: testStepDown,
		OpTimeout: 2 * time.Second, Clock: clk, Logger: quiet(), Metrics: c.metrics,
		Self:       Holder{ReplicaID: name, PID: len(name), Host: "host-" + name, StartedAt: time.Now().UTC()},
		Address:    func() string { return "127.0.0.1:80" + name[len(name)-1:] },
		OnAcquired: func(tok uint64) { c.acquired <- tok },
		OnLost:     func(err error) { c.lost <- err },
		OnStandby:  func(h Holder) { c.standby <- h },
	})
	if err != nil {
		t.Fatal(err)
	}
	c.l = l
	return c
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func (c *candidate) start() {
	c.l.Start()
	c.t.Cleanup(func() { _ = c.l.Stop(context.Background()) })
}

// waitLost waits up to 5 s of real time for c to lose its lease, and
// checks why.
func waitLost(t *testing.T, c *candidate, want error) {
	t.Helper()
	select {
	case err := <-c.lost:
		if !errors.Is(err, want) {
			t.Fatalf("lost with %v, want %v", err, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no loss (%v): %+v", want, c.l.Status())
	}
}

func waitAcquired(t *testing.T, c *candidate, d time.Duration) uint64 {
	t.Helper()
	select {
	case tok := <-c.acquired:
		return tok
	case <-time.After(d):
		t.Fatalf("%s did not acquire the lease within %v (status %+v)", c.name, d, c.l.Status())
		return 0
	}
}

// renew advances the clock by one renewal period and waits until the
// leader's renewal landed.
func renew(t *testing.T, clk *clock.Fake, leader *candidate) {
	t.Helper()
	rev := leader.l.Status().Revision
	clk.Advance(testRenew)
	testsupport.Eventually(t, 5*time.Second, func() error {
		if st := leader.l.Status(); !st.Leader || st.Revision <= rev {
			return fmt.Errorf("%s: no renewal after revision %d: %+v", leader.name, rev, st)
		}
		return nil
	})
}

func newFake() *clock.Fake { return clock.NewFake(time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)) }

// Two candidates start together: exactly one leads, the other is a
// standby that names it; the holder's renewals keep the lease for longer
// than the TTL while the standby keeps trying.
func TestTwoCandidatesOneLeaderThatRenewalsKeep(t *testing.T) {
	br := brokertest.Start(t, brokertest.Options{SkipEnsure: true})
	clk := newFake()
	a, b := newCandidateTTL(t, br, clk, "replica-a", testTTL), newCandidateTTL(t, br, clk, "replica-b", testTTL)
	a.start()
	b.start()
	// Both try at once when started; a retry is only needed when a
	// first attempt failed. The clock moves no faster than the leader's
	// renewals land: faster, it would step down.
	var leader, standby *candidate
	moved := time.Now()
	testsupport.Eventually(t, 5*time.Second, func() error {
		sa, sb := a.l.Status(), b.l.Status()
		switch {
		case sa.Leader && sb.Leader:
			t.Fatalf("two leaders: %+v %+v", sa, sb)
		case sa.Leader && sb.Holder != nil:
			leader, standby = a, b
		case sb.Leader && sa.Holder != nil:
			leader, standby = b, a
		case sa.Leader:
			renew(t, clk, a) // b retries meanwhile
			return fmt.Errorf("b does not see a yet: %+v", sb)
		case sb.Leader:
			renew(t, clk, b)
			return fmt.Errorf("a does not see b yet: %+v", sa)
		default:
			if time.Since(moved) > 500*time.Millisecond {
				clk.Advance(testRetry)
				moved = time.Now()
			}
			return fmt.Errorf("no leader yet: %+v %+v", sa, sb)
		}
		return nil
	})
	tok := waitAcquired(t, leader, time.Second)
	h := <-standby.standby
	if h.ReplicaID != leader.name || h.PID != len(leader.name) || h.Host != "host-"+leader.name ||
		h.Address != "127.0.0.1:80"+leader.name[len(leader.name)-1:] || h.Since.IsZero() {
		t.Fatalf("standby sees holder %+v, want %s", h, leader.name)
	}
	if st := leader.l.Status(); st.Token != tok || st.Holder == nil || st.Holder.ReplicaID != leader.name {
		t.Fatalf("leader status %+v, token %d", st, tok)
	}
	if leader.l.Token() != tok || standby.l.Token() != 0 {
		t.Fatalf("tokens %d / %d", leader.l.Token(), standby.l.Token())
	}
	if got := testutil.ToFloat64(leader.metrics.leader); got != 1 {
		t.Fatalf("leader gauge %v", got)
	}
	if got := testutil.ToFloat64(standby.metrics.leader); got != 0 {
		t.Fatalf("standby gauge %v", got)
	}

	// Three TTLs of real time: the renewals keep the key; the standby's
	// retries (the same fake clock) never take it.
	until := time.Now().Add(3 * testTTL)
	for time.Now().Before(until) {
		renew(t, clk, leader)
		time.Sleep(50 * time.Millisecond)
	}
	if st := standby.l.Status(); st.Leader || st.Holder == nil || st.Holder.ReplicaID != leader.name {
		t.Fatalf("standby after renewals: %+v", st)
	}
	select {
	case <-standby.acquired:
		t.Fatal("the standby acquired a lease that was being renewed")
	case err := <-leader.lost:
		t.Fatalf("the leader lost its lease while renewing: %v", err)
	default:
	}
	if got := testutil.ToFloat64(leader.metrics.renewals); got < 10 {
		t.Fatalf("%v renewals counted", got)
	}
	if got := testutil.ToFloat64(leader.metrics.failures); got != 0 {
		t.Fatalf("%v renewal failures counted", got)
	}
}

// The holder dies (its connection closes, nothing resigns): the standby
// acquires once the server expired the key, not before, with a larger
// fencing token.
func TestKilledHolderIsTakenOverAfterTheTTL(t *testing.T) {
	br := brokertest.Start(t, brokertest.Options{SkipEnsure: true})
	clk := newFake()
	a, b := newCandidateTTL(t, br, clk, "replica-a", testTTL), newCandidateTTL(t, br, clk, "replica-b", testTTL)
	a.start()
	tokA := waitAcquired(t, a, 5*time.Second)
	b.start()
	select {
	case h := <-b.standby:
		if h.ReplicaID != a.name {
			t.Fatalf("standby sees %+v", h)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("b never saw a holding the lease")
	}
	renew(t, clk, a)
	a.nc.Close()
	killed := time.Now()
	var tokB uint64
	testsupport.Eventually(t, testTTL+5*time.Second, func() error {
		select {
		case tokB = <-b.acquired:
			return nil
		default:
			clk.Advance(testRetry)
			return errors.New("b has not acquired")
		}
	})
	took := time.Since(killed)
	t.Logf("taken over %v after the holder died (TTL %v)", took, testTTL)
	// The server's expiry check may run up to a quarter second early
	// relative to the last renewal, which came a little before the kill.
	if took < testTTL-300*time.Millisecond {
		t.Fatalf("taken over %v after the kill, before the TTL %v", took, testTTL)
	}
	if tokB <= tokA {
		t.Fatalf("fencing token %d after %d: not increasing", tokB, tokA)
	}
	// The dead holder, on the same clock, stepped down long before.
	select {
	case err := <-a.lost:
		if !errors.Is(err, ErrSteppedDown) {
			t.Fatalf("a lost with %v", err)
		}
	default:
		t.Fatalf("a did not step down: %+v", a.l.Status())
	}
}

// A graceful stop resigns: the standby takes over at once, without
// waiting for the TTL or even a retry (the fake clock does not move).
func TestResignHandsOverAtOnce(t *testing.T) {
	br := brokertest.Start(t, brokertest.Options{SkipEnsure: true})
	clk := newFake()
	a, b := newCandidate(t, br, clk, "replica-a"), newCandidate(t, br, clk, "replica-b")
	a.l.Start()
	tokA := waitAcquired(t, a, 5*time.Second)
	b.l.Start()
	select {
	case <-b.standby:
	case <-time.After(5 * time.Second):
		t.Fatal("b never saw a holding the lease")
	}
	t0 := time.Now()
	if err := a.l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	tokB := waitAcquired(t, b, testTTL/2)
	t.Logf("taken over %v after the resign", time.Since(t0))
	if tokB <= tokA {
		t.Fatalf("fencing token %d after %d", tokB, tokA)
	}
	if st := a.l.Status(); st.Leader || testutil.ToFloat64(a.metrics.leader) != 0 {
		t.Fatalf("a after resigning: %+v", st)
	}
	if err := b.l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	noLeaseGoroutines(t)
	// Both resigned: the key is deleted.
	kv, err := br.JS.KeyValue(context.Background(), DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(context.Background(), DefaultKey); !errors.Is(err, jetstream.ErrKeyDeleted) && !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("key after both stopped: %v", err)
	}
}

// A stop that cancels a renewal in flight can leave the key written at a
// revision the lease never learnt: the resign still deletes the key,
// since its value is this term's, and leaves a key of anyone else alone.
func TestResignAfterARenewalTheStopCancelled(t *testing.T) {
	br := brokertest.Start(t, brokertest.Options{SkipEnsure: true})
	ctx := context.Background()
	kv := func() jetstream.KeyValue {
		kv, err := br.JS.KeyValue(ctx, DefaultBucket)
		if err != nil {
			t.Fatal(err)
		}
		return kv
	}
	// Ours at a newer revision: resigned.
	a := newCandidate(t, br, newFake(), "replica-a")
	a.start()
	waitAcquired(t, a, 5*time.Second)
	e, err := kv().Get(ctx, DefaultKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv().Update(ctx, DefaultKey, e.Value(), e.Revision()); err != nil {
		t.Fatal(err) // the renewal whose answer the stop cancelled
	}
	if err := a.l.Stop(ctx); err != nil {
		t.Fatalf("resign after a renewal it did not see: %v", err)
	}
	if _, err := kv().Get(ctx, DefaultKey); !errors.Is(err, jetstream.ErrKeyDeleted) && !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("key after the resign: %v", err)
	}
	// Someone else's: left, and the stop says why.
	b := newCandidate(t, br, newFake(), "replica-b")
	b.start()
	waitAcquired(t, b, 5*time.Second)
	if _, err := kv().Put(ctx, DefaultKey, []byte(`{"replica_id":"intruder"}`)); err != nil {
		t.Fatal(err)
	}
	if err := b.l.Stop(ctx); err == nil {
		t.Fatal("resigned a key another replica wrote")
	}
	if e, err := kv().Get(ctx, DefaultKey); err != nil || !strings.Contains(string(e.Value()), "intruder") {
		t.Fatalf("the other replica's key: %v", err)
	}
}

// A holder whose renewals fail steps down on its own clock StepDownAfter
// after the last renewal that succeeded, not before, and counts the
// failures.
func TestHolderThatCannotRenewStepsDown(t *testing.T) {
	br := brokertest.Start(t, brokertest.Options{SkipEnsure: true})
	clk := newFake()
	a := newCandidate(t, br, clk, "replica-a")
	a.start()
	waitAcquired(t, a, 5*time.Second)
	renew(t, clk, a)
	a.nc.Close()
	// Renewals fail from now on; 100 ms short of the deadline it still
	// leads.
	for range testStepDown/testRenew - 1 {
		clk.Advance(testRenew)
		time.Sleep(20 * time.Millisecond)
	}
	clk.Advance(testRenew - 100*time.Millisecond)
	if !a.l.Status().Leader {
		t.Fatalf("stepped down before the deadline: %+v", a.l.Status())
	}
	clk.Advance(100 * time.Millisecond)
	waitLost(t, a, ErrSteppedDown)
	st := a.l.Status()
	if st.Leader || st.Token != 0 || !errors.Is(st.Lost, ErrSteppedDown) || testutil.ToFloat64(a.metrics.leader) != 0 {
		t.Fatalf("after stepping down: %+v", st)
	}
	testsupport.Eventually(t, 5*time.Second, func() error {
		if got := testutil.ToFloat64(a.metrics.failures); got < 1 {
			return fmt.Errorf("%v renewal failures counted", got)
		}
		return nil
	})
}

// A renewal that finds the key moved (written by someone else) steps down
// at once, without waiting for the deadline.
func TestRenewalOnAMovedKeyStepsDownAtOnce(t *testing.T) {
	br := brokertest.Start(t, brokertest.Options{SkipEnsure: true})
	clk := newFake()
	a := newCandidate(t, br, clk, "replica-a")
	a.start()
	waitAcquired(t, a, 5*time.Second)
	kv, err := br.JS.KeyValue(context.Background(), DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), DefaultKey, []byte(`{"replica_id":"intruder","pid":7,"host":"elsewhere"}`)); err != nil {
		t.Fatal(err)
	}
	clk.Advance(testRenew)
	waitLost(t, a, ErrTaken)
	// Back to campaigning: it sees the other holder.
	clk.Advance(testRetry)
	select {
	case h := <-a.standby:
		if h.ReplicaID != "intruder" || h.PID != 7 {
			t.Fatalf("holder %+v", h)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no holder seen: %+v", a.l.Status())
	}
}

// noLeaseGoroutines fails when a goroutine of this package outlives Stop.
// (goleak cannot tell them from the in-process server's, which live on
// until the test's cleanup.)
func noLeaseGoroutines(t *testing.T) {
	t.Helper()
	testsupport.Eventually(t, 2*time.Second, func() error {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "kanade-backend/cmd/internal/lease.(*Lease)") && !strings.Contains(g, "noLeaseGoroutines") {
				return fmt.Errorf("goroutine left after Stop:\n%s", g)
			}
		}
		return nil
	})
}

func TestNewRefusesAStepDownAfterTheTTL(t *testing.T) {
	_, err := New(Config{JS: nil})
	if err == nil {
		t.Fatal("no error without JS")
	}
	br := brokertest.Start(t, brokertest.Options{SkipEnsure: true})
	_, err = New(Config{JS: br.JS, Clock: newFake(), Self: Holder{ReplicaID: "x"}, TTL: time.Second, StepDownAfter: time.Second})
	if err == nil {
		t.Fatal("a step-down at the TTL was accepted")
	}
}
