package projector

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"kanade-backend/actors/clock"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

func heartbeat(t *testing.T, h *harness, pc string, at time.Time, version string, hostname, os *string) {
	t.Helper()
	b, _ := json.Marshal(messages.Heartbeat{PcID: pc, At: at, AgentVersion: version, Hostname: hostname, OsFamily: os})
	if err := h.broker.Conn.Publish(messages.HeartbeatSubject(pc), b); err != nil {
		t.Fatal(err)
	}
}

func str(s string) *string { return &s }

// waitReceived waits until the projector has received n heartbeats.
func (h *harness) waitReceived(n int) {
	h.t.Helper()
	testsupport.Eventually(h.t, waitFor, func() error {
		if got := h.metric("kanade_heartbeats_received_total"); got != float64(n) {
			return fmt.Errorf("received %v heartbeats, want %d", got, n)
		}
		return nil
	})
}

func agentRow(t *testing.T, h *harness, pc string) storage.Agent {
	t.Helper()
	var a storage.Agent
	if err := h.store.R.NewSelect().Model(&a).Where("pc_id = ?", pc).Scan(context.Background()); err != nil {
		t.Fatalf("agent %s: %v", pc, err)
	}
	return a
}

func TestHeartbeatsCoalescedAndOrderIndependent(t *testing.T) {
	storagetest.ForEachDialect(t, testHeartbeatsCoalescedAndOrderIndependent)
}

func testHeartbeatsCoalescedAndOrderIndependent(t *testing.T, st *storage.Store) {
	fake := clock.NewFake(t0)
	h := newHarness(t, harnessOpts{clock: fake, store: st}).start()
	flushes := func() float64 { return h.metric("kanade_heartbeat_flush_duration_seconds") }

	// 2 000 agents, each twice, plus three beats of pc-1 in one period.
	for i := range 2000 {
		heartbeat(t, h, fmt.Sprintf("pc-%04d", i), t0.Add(-time.Second), "1.0", nil, nil)
		heartbeat(t, h, fmt.Sprintf("pc-%04d", i), t0, "1.1", nil, nil)
	}
	heartbeat(t, h, "pc-1", t0.Add(2*time.Second), "2.0", nil, str("windows"))
	heartbeat(t, h, "pc-1", t0.Add(1*time.Second), "1.9", str("HOST-1"), str("linux"))
	heartbeat(t, h, "pc-1", t0.Add(3*time.Second), "2.1", str("OTHER"), nil)
	if err := h.broker.Conn.Publish("heartbeat.broken", []byte(`{"pc_id":`)); err != nil {
		t.Fatal(err)
	}
	h.waitReceived(4004)
	if flushes() != 0 {
		t.Fatal("flushed before the period ended")
	}
	fake.Advance(time.Second)
	testsupport.Eventually(t, waitFor, func() error {
		if flushes() != 1 {
			return fmt.Errorf("%v flushes", flushes())
		}
		return nil
	})
	// One write transaction for the whole period, whatever the fleet size.
	if n := h.count("agents"); n != 2001 {
		t.Fatalf("%d agents", n)
	}
	a := agentRow(t, h, "pc-1")
	if a.Hostname == nil || *a.Hostname != "HOST-1" || a.OsFamily == nil || *a.OsFamily != "windows" ||
		a.AgentVersion != "2.1" || !a.LastHeartbeat.Equal(t0.Add(3*time.Second)) || !a.UpdatedAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("pc-1 = %+v (%v, %v)", a, deref(a.Hostname), deref(a.OsFamily))
	}
	if a := agentRow(t, h, "pc-0007"); a.AgentVersion != "1.1" || !a.LastHeartbeat.Equal(t0) || a.Hostname != nil {
		t.Fatalf("pc-0007 = %+v", a)
	}
	h.waitCount("projection_errors", 1, time.Second, "projection = 'heartbeat'", "stream = ''", "stream_seq = 0", "subject = 'heartbeat.broken'")
	seen := eventsOf[*messages.AgentsSeen](h)
	if len(seen) != 1 || len(seen[0].Agents) != 2001 || !seen[0].Agents[0].New {
		t.Fatalf("AgentsSeen = %d events", len(seen))
	}

	// A late, older heartbeat: last_heartbeat and agent_version stay; the
	// first hostname stays; os_family stays; updated_at is the flush time.
	heartbeat(t, h, "pc-1", t0.Add(-time.Hour), "0.9", str("LATE"), str("macos"))
	h.waitReceived(4005)
	fake.Advance(time.Second)
	testsupport.Eventually(t, waitFor, func() error {
		if flushes() != 2 {
			return fmt.Errorf("%v flushes", flushes())
		}
		return nil
	})
	a = agentRow(t, h, "pc-1")
	if *a.Hostname != "HOST-1" || *a.OsFamily != "windows" || a.AgentVersion != "2.1" ||
		!a.LastHeartbeat.Equal(t0.Add(3*time.Second)) || !a.UpdatedAt.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("pc-1 after a late heartbeat = %+v", a)
	}
	seen = eventsOf[*messages.AgentsSeen](h)
	if len(seen) != 2 || len(seen[1].Agents) != 1 || seen[1].Agents[0].New {
		t.Fatalf("second AgentsSeen = %+v", seen[len(seen)-1])
	}
	// An idle period writes nothing.
	fake.Advance(5 * time.Second)
	time.Sleep(50 * time.Millisecond)
	if flushes() != 2 {
		t.Fatalf("%v flushes after idle periods", flushes())
	}
}

// Stopping the projectors writes what is pending, although the stop has
// already ended their base context (finalContext).
func TestHeartbeatFlushedAtStop(t *testing.T) {
	fake := clock.NewFake(t0)
	h := newHarness(t, harnessOpts{clock: fake}).start()
	heartbeat(t, h, "pc-stop", t0, "1", nil, nil)
	h.waitReceived(1)
	h.stop()
	if n := h.count("agents", "pc_id = 'pc-stop'"); n != 1 {
		t.Fatal("pending heartbeat lost at stop")
	}
}

// A periodic flush that the stop cancels (it was waiting for the writer)
// is not a write failure: the heartbeats go back to pending, the stop's
// last flush writes them, and kanade_projection_write_failures_total,
// which operators alert on, does not move.
func TestHeartbeatFlushInterruptedByTheStopIsNoFailure(t *testing.T) {
	fake := clock.NewFake(t0)
	h := newHarness(t, harnessOpts{clock: fake}).start()
	heartbeat(t, h, "pc-interrupted", t0, "1", nil, nil)
	h.waitReceived(1)
	// Hold the writer's one connection, so that the periodic flush waits
	// for it.
	writer := h.store.W.DB
	conn, err := writer.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	waits := writer.Stats().WaitCount
	fake.Advance(time.Second)
	testsupport.EventuallyTrue(t, 5*time.Second, func() bool { return writer.Stats().WaitCount > waits },
		"the periodic flush never waited for the writer")
	stopped := make(chan struct{})
	go func() { defer close(stopped); h.stop() }()
	// The stop cancels the periodic flush, then its own flush waits in turn.
	testsupport.EventuallyTrue(t, 5*time.Second, func() bool { return writer.Stats().WaitCount > waits+1 },
		"the stop's flush never waited for the writer")
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	<-stopped
	if n := h.count("agents", "pc_id = 'pc-interrupted'"); n != 1 {
		t.Fatal("the heartbeat of the interrupted flush was lost")
	}
	if f := writeFailures(t, h, ProjHeartbeat); f != 0 {
		t.Fatalf("the stop counted %v write failures", f)
	}
}

// writeFailures sums kanade_projection_write_failures_total of projection
// over its causes.
func writeFailures(t *testing.T, h *harness, projection string) float64 {
	t.Helper()
	return testsupport.Metric(t, h.reg, "kanade_projection_write_failures_total", "projection", projection).Value
}

// A heartbeat whose pc_id is not the one of its subject is forged (agent
// credentials let a PC publish only its own subject): it never becomes
// either PC's liveness and is kept as a projection error.
func TestHeartbeatForAnotherPCIsRefused(t *testing.T) {
	fake := clock.NewFake(t0)
	h := newHarness(t, harnessOpts{clock: fake}).start()
	b, _ := json.Marshal(messages.Heartbeat{PcID: "victim", At: t0, AgentVersion: "6.6.6"})
	if err := h.broker.Conn.Publish(messages.HeartbeatSubject("forger"), b); err != nil {
		t.Fatal(err)
	}
	heartbeat(t, h, "honest", t0, "1.0", nil, nil)
	h.waitReceived(2)
	fake.Advance(time.Second)
	h.waitCount("projection_errors", 1, 5*time.Second, "projection = 'heartbeat'", "subject = 'heartbeat.forger'",
		`error = 'heartbeat on heartbeat.forger carries pc_id "victim"'`)
	if n := h.count("agents"); n != 1 {
		t.Fatalf("%d agents, want only the honest one", n)
	}
	agentRow(t, h, "honest")
}

// A PC whose row an earlier flush wrote is only updated (one statement per
// chunk, no insert attempt); should its row be gone meanwhile (the agent
// was decommissioned), its next heartbeat creates the row again and
// announces it new, like any unknown PC.
func TestHeartbeatOfKnownAgents(t *testing.T) {
	storagetest.ForEachDialect(t, testHeartbeatOfKnownAgents)
}

func testHeartbeatOfKnownAgents(t *testing.T, st *storage.Store) {
	fake := clock.NewFake(t0)
	h := newHarness(t, harnessOpts{clock: fake, store: st}).start()
	const n = 1200 // two full chunks and a partial one
	pc := func(i int) string { return fmt.Sprintf("pc-%04d", i) }
	round := func(r int, at time.Time, version string, host *string) {
		t.Helper()
		for i := range n {
			heartbeat(t, h, pc(i), at, version, host, nil)
		}
		h.waitReceived(n * r)
		fake.Advance(time.Second)
		testsupport.Eventually(t, waitFor, func() error {
			if got := len(eventsOf[*messages.AgentsSeen](h)); got != r {
				return fmt.Errorf("%d AgentsSeen, want %d", got, r)
			}
			return nil
		})
	}
	newOnes := func(r int) []string {
		t.Helper()
		seen := eventsOf[*messages.AgentsSeen](h)[r-1]
		if len(seen.Agents) != n {
			t.Fatalf("flush %d announced %d agents, want %d", r, len(seen.Agents), n)
		}
		var ids []string
		for _, a := range seen.Agents {
			if a.New {
				ids = append(ids, a.PcID)
			}
		}
		return ids
	}

	round(1, t0, "1.0", nil)
	if got := newOnes(1); len(got) != n {
		t.Fatalf("first flush announced %d new agents, want %d", len(got), n)
	}
	// pc-0007 (first full chunk) and pc-1100 (the partial one) leave.
	ctx := context.Background()
	if _, err := h.store.W.NewDelete().Model((*storage.Agent)(nil)).Where("pc_id IN (?, ?)", pc(7), pc(1100)).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	round(2, t0.Add(30*time.Second), "1.1", str("HOST"))
	if got := newOnes(2); len(got) != 2 || got[0] != pc(7) || got[1] != pc(1100) {
		t.Fatalf("second flush announced new %v, want the two deleted PCs", got)
	}
	if c := h.count("agents"); c != n {
		t.Fatalf("%d agents, want %d", c, n)
	}
	for _, i := range []int{0, 7, 499, 500, 1100, n - 1} {
		a := agentRow(t, h, pc(i))
		if a.AgentVersion != "1.1" || !a.LastHeartbeat.Equal(t0.Add(30*time.Second)) || deref(a.Hostname) != "HOST" ||
			!a.UpdatedAt.Equal(t0.Add(2*time.Second)) {
			t.Fatalf("%s after the second flush = %+v", pc(i), a)
		}
	}
	// Older heartbeats of known agents: nothing moves back, the first
	// hostname stays, updated_at is the flush time; none is new.
	round(3, t0.Add(10*time.Second), "0.9", str("LATER"))
	if got := newOnes(3); len(got) != 0 {
		t.Fatalf("third flush announced new %v", got)
	}
	for _, i := range []int{0, 7, 500, 1100, n - 1} {
		a := agentRow(t, h, pc(i))
		if a.AgentVersion != "1.1" || !a.LastHeartbeat.Equal(t0.Add(30*time.Second)) || deref(a.Hostname) != "HOST" ||
			!a.UpdatedAt.Equal(t0.Add(3*time.Second)) {
			t.Fatalf("%s after older heartbeats = %+v", pc(i), a)
		}
	}
}

// A flush the database refuses keeps its heartbeats: the next flush writes
// them merged with those received meanwhile (the latest at and version,
// the first hostname), and the undecodable one is recorded once.
func TestHeartbeatFlushFailureKeepsHeartbeats(t *testing.T) {
	fake := clock.NewFake(t0)
	h := newHarness(t, harnessOpts{clock: fake}).start()
	ctx := context.Background()
	heartbeat(t, h, "pc-a", t0, "1.0", str("FIRST"), nil)
	heartbeat(t, h, "pc-b", t0, "1.0", nil, nil)
	if err := h.broker.Conn.Publish("heartbeat.bad", []byte(`{`)); err != nil {
		t.Fatal(err)
	}
	h.waitReceived(3)
	// The agents table is gone for a while: the flush fails.
	if _, err := h.store.W.ExecContext(ctx, "ALTER TABLE agents RENAME TO agents_away"); err != nil {
		t.Fatal(err)
	}
	fake.Advance(time.Second)
	testsupport.Eventually(t, waitFor, func() error {
		if len(h.status.Stalls()) == 0 {
			return fmt.Errorf("no stall recorded")
		}
		return nil
	})
	heartbeat(t, h, "pc-a", t0.Add(30*time.Second), "1.1", str("SECOND"), str("windows"))
	h.waitReceived(4)
	if _, err := h.store.W.ExecContext(ctx, "ALTER TABLE agents_away RENAME TO agents"); err != nil {
		t.Fatal(err)
	}
	fake.Advance(time.Second)
	h.waitCount("agents", 2, 5*time.Second)
	a := agentRow(t, h, "pc-a")
	if a.AgentVersion != "1.1" || !a.LastHeartbeat.Equal(t0.Add(30*time.Second)) || deref(a.Hostname) != "FIRST" || deref(a.OsFamily) != "windows" {
		t.Fatalf("pc-a after the failed flush = %+v (%s, %s)", a, deref(a.Hostname), deref(a.OsFamily))
	}
	h.waitCount("projection_errors", 1, 5*time.Second, "projection = 'heartbeat'", "subject = 'heartbeat.bad'")
	seen := eventsOf[*messages.AgentsSeen](h)
	if len(seen) != 1 || len(seen[0].Agents) != 2 || !seen[0].Agents[0].New || !seen[0].Agents[1].New {
		t.Fatalf("AgentsSeen = %+v", seen)
	}
}
