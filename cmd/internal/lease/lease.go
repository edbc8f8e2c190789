// Package lease elects one backend among those sharing a NATS: the leader
// holds a key in a dedicated JetStream KV bucket, and only the leader runs
// the singletons (the scheduler and the projectors).
//
// The algorithm is the one of the scale-out notes (spec scaleout.md §0.2),
// hand-written over jetstream.KeyValue:
//
//   - the bucket (kanade_leases) keeps one revision per key and expires
//     keys TTL (5 s) after their last write, on the server's clock;
//   - a candidate acquires with Create (create-if-absent) and retries
//     every RetryEvery (500 ms), and at once when its watch of the key
//     sees it deleted or expired;
//   - the leader renews every RenewEvery (1 s) with Update on the revision
//     it last wrote (compare-and-set): a renewal refused because the
//     revision moved means another backend holds the key now;
//   - the leader steps down on its local monotonic clock StepDownAfter
//     (4 s) after sending the last renewal that succeeded, i.e. before the
//     server lets the key expire, so that two leaders never overlap while
//     the clocks run at the same rate;
//   - Stop resigns with a revision-checked Delete, so that a graceful stop
//     hands over at once.
//
// Ownership is only ever inferred from a Create, Update or Delete that
// succeeded, never from a Get or a watch (KV reads may be answered by a
// follower that is behind); those only name the holder for the operator.
//
// The revision returned by the Create that acquired the lease is the
// fencing token: the stream sequence, so a later leader always has a
// larger one. The app raises the store's leader fence to it before the
// scheduler seeds, and the exec engine checks it where a fire first
// writes (storage.CheckFence).
package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/actors/clock"
	"kanade-backend/messages"
)

// Defaults (scaleout.md §0.2).
const (
	DefaultBucket        = messages.BucketLeases
	DefaultKey           = "leader"
	DefaultTTL           = 5 * time.Second
	DefaultRenewEvery    = time.Second
	DefaultRetryEvery    = 500 * time.Millisecond
	DefaultStepDownAfter = 4 * time.Second
)

// Holder is the lease's value: who holds it, for the operator.
type Holder struct {
	ReplicaID string    `json:"replica_id"`
	PID       int       `json:"pid"`
	Host      string    `json:"host"`
	Address   string    `json:"address,omitempty"` // HTTP address
	StartedAt time.Time `json:"started_at"`        // the process's start
	// Since is when this holder acquired the lease (its wall clock).
	Since time.Time `json:"since"`
}

// String names the holder in one phrase, for logs and /ready.
func (h Holder) String() string {
	s := fmt.Sprintf("backend pid %d at host %s", h.PID, h.Host)
	if h.Address != "" {
		s += " (" + h.Address + ")"
	}
	if !h.Since.IsZero() {
		s += " since " + h.Since.UTC().Format(time.RFC3339)
	}
	return s
}

// Config is what a Lease needs. JS, Clock and Self.ReplicaID are required.
type Config struct {
	JS     jetstream.JetStream
	Bucket string // default DefaultBucket
	Key    string // default DefaultKey
	// Replicas of the bucket's stream ([nats] replicas; default 1).
	Replicas int
	// TTL is the bucket's TTL; RenewEvery, RetryEvery and StepDownAfter
	// pace the holder and the candidates (defaults above). StepDownAfter
	// must stay below TTL.
	TTL, RenewEvery, RetryEvery, StepDownAfter time.Duration
	// OpTimeout bounds one KV operation (default RenewEvery).
	OpTimeout time.Duration
	// Clock paces renewals, retries and the step-down deadline (a
	// monotonic clock in production, clock.Fake in tests).
	Clock clock.Clock
	// Self is this backend; its Address is refreshed from Address (when
	// set) at every write, since the HTTP address may be known late.
	Self    Holder
	Address func() string
	Logger  *slog.Logger
	Metrics *Metrics // nil: not counted

	// The callbacks run on the lease's goroutine and must not block on
	// the lease (its methods are fine).
	//
	// OnAcquired: this backend holds the lease, with this fencing token.
	OnAcquired func(token uint64)
	// OnLost: it held the lease and no longer does (step-down or the key
	// moved). It keeps campaigning afterwards.
	OnLost func(err error)
	// OnStandby: while campaigning, another backend was seen holding the
	// lease (called again when the holder changes).
	OnStandby func(h Holder)
}

// ErrSteppedDown is the cause given to OnLost when renewals failed for
// StepDownAfter.
var ErrSteppedDown = errors.New("leader lease renewals failed for too long; stepped down")

// ErrTaken is the cause given to OnLost when a renewal found the key moved
// (another backend acquired it, or it expired).
var ErrTaken = errors.New("leader lease taken over or expired")

// Status is a snapshot of the lease.
type Status struct {
	// Leader says this backend holds the lease now.
	Leader bool
	// Token is the fencing token of the current term (0 when not leader).
	Token uint64
	// Revision is the key's revision this backend last wrote (leader).
	Revision uint64
	// Holder is the other backend seen holding the lease (standby), if
	// any; Self when leader.
	Holder *Holder
	// Lost is why the lease was last lost, while it is not held again.
	Lost error
	// Err is why the last attempt to reach the lease failed (NATS away,
	// bucket not creatable), until one works.
	Err error
}

// Lease is one backend's candidacy: Start campaigns until Stop.
type Lease struct {
	cfg  Config
	log  *slog.Logger
	kick chan struct{} // wakes the loop (timers, watch events)

	mu       sync.Mutex
	kv       jetstream.KeyValue
	leader   bool
	token    uint64
	rev      uint64
	sentOK   time.Time // when the last successful write was sent (Clock)
	deadline clock.Timer
	term     uint64 // counts terms, so a stale step-down timer does nothing
	holder   *Holder
	lost     error
	err      error // why the last campaign step failed, until one works
	lostNote bool  // OnLost is due (set by the step-down timer)
	tick     clock.Timer

	cancel context.CancelFunc
	done   chan struct{}
}

// New checks cfg and fills in its defaults.
func New(cfg Config) (*Lease, error) {
	if cfg.JS == nil || cfg.Clock == nil || cfg.Self.ReplicaID == "" {
		return nil, errors.New("lease: JS, Clock and Self.ReplicaID are required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.TTL, DefaultTTL)
	def(&cfg.RenewEvery, DefaultRenewEvery)
	def(&cfg.RetryEvery, DefaultRetryEvery)
	def(&cfg.StepDownAfter, DefaultStepDownAfter)
	def(&cfg.OpTimeout, cfg.RenewEvery)
	if cfg.StepDownAfter >= cfg.TTL {
		return nil, fmt.Errorf("lease: step-down (%s) must come before the TTL (%s)", cfg.StepDownAfter, cfg.TTL)
	}
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if cfg.Key == "" {
		cfg.Key = DefaultKey
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Lease{cfg: cfg, log: cfg.Logger.With("lease", cfg.Bucket+"/"+cfg.Key), kick: make(chan struct{}, 1)}, nil
}

// BucketConfig is the lease bucket: one revision per key, keys expiring
// TTL after their last write, expiry markers kept a second so that
// watchers see them (nats-server ≥ 2.11), file storage so that a NATS
// restart keeps the holder.
func BucketConfig(bucket string, ttl time.Duration, replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: bucket, Description: "kanade-backend leader lease", History: 1, TTL: ttl,
		LimitMarkerTTL: time.Second, Storage: jetstream.FileStorage, Replicas: replicas}
}

// Start begins campaigning on a goroutine of its own.
func (l *Lease) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel, l.done = cancel, make(chan struct{})
	go func() {
		defer close(l.done)
		l.run(ctx)
	}()
}

// Stop ends the candidacy and, when this backend holds the lease, resigns
// it with a revision-checked delete so that another candidate takes over at
// once. A lease lost meanwhile is left alone.
func (l *Lease) Stop(ctx context.Context) error {
	if l.cancel == nil {
		return nil
	}
	l.cancel()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopTimers()
	if !l.leader {
		return nil
	}
	l.leader = false
	l.gauge(false)
	dctx, cancel := context.WithTimeout(ctx, l.cfg.OpTimeout)
	defer cancel()
	rev := l.rev
	err := l.kv.Delete(dctx, l.cfg.Key, jetstream.LastRevision(rev))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		// The stop cancelled a renewal whose write the server made
		// anyway: the key then holds this term's value at a newer
		// revision. Still ours: resign on that one. Anyone else's value
		// stays.
		if e, gerr := l.kv.Get(dctx, l.cfg.Key); gerr == nil && l.ours(e.Value()) {
			rev = e.Revision()
			err = l.kv.Delete(dctx, l.cfg.Key, jetstream.LastRevision(rev))
		}
	}
	if err != nil {
		return fmt.Errorf("resign the leader lease (revision %d): %w", rev, err)
	}
	l.log.Info("resigned the leader lease", "revision", rev, "token", l.token)
	return nil
}

// ours reports whether a key value was written by this term: this
// replica, since the time it acquired (l.mu held).
func (l *Lease) ours(value []byte) bool {
	var h Holder
	return json.Unmarshal(value, &h) == nil && h.ReplicaID == l.cfg.Self.ReplicaID && h.Since.Equal(l.cfg.Self.Since)
}

// Status returns a snapshot.
func (l *Lease) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := Status{Leader: l.leader, Revision: l.rev, Lost: l.lost, Err: l.err}
	if l.leader {
		st.Token = l.token
		self := l.cfg.Self
		st.Holder = &self
	} else if l.holder != nil {
		h := *l.holder
		st.Holder = &h
	}
	return st
}

// Token is the fencing token of the current term (0 when not leader).
func (l *Lease) Token() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.leader {
		return 0
	}
	return l.token
}

// run is the lease's goroutine: it makes sure the bucket exists, watches
// the key, and then acts at every wake-up: renew while leader, try to
// acquire otherwise.
func (l *Lease) run(ctx context.Context) {
	var watch jetstream.KeyWatcher
	defer func() {
		if watch != nil {
			_ = watch.Stop()
		}
	}()
	for ctx.Err() == nil {
		if kv := l.bucket(ctx); kv != nil && watch == nil {
			// The watch only hastens a takeover; the retries do the rest.
			if w, err := kv.Watch(ctx, l.cfg.Key, jetstream.UpdatesOnly()); err == nil {
				watch = w
			}
		}
		l.step(ctx)
		if !l.wait(ctx, watch) {
			_ = watch.Stop()
			watch = nil
		}
	}
}

// wait returns at the next wake-up: a timer, or the key deleted or
// expired (a holder resigning or gone), which a candidate acts on at once.
// It reports false when the watch ended.
func (l *Lease) wait(ctx context.Context, watch jetstream.KeyWatcher) bool {
	var updates <-chan jetstream.KeyValueEntry
	if watch != nil {
		updates = watch.Updates()
	}
	for {
		select {
		case <-ctx.Done():
			return true
		case <-l.kick:
			return true
		case e, ok := <-updates:
			if !ok {
				return false
			}
			if e != nil && e.Operation() != jetstream.KeyValuePut {
				l.log.Debug("leader lease released or expired", "op", e.Operation().String())
				return true
			}
			// A holder renewing: nothing to do before the next retry.
		}
	}
}

// bucket opens (creating or updating) the lease bucket once.
func (l *Lease) bucket(ctx context.Context) jetstream.KeyValue {
	l.mu.Lock()
	kv := l.kv
	l.mu.Unlock()
	if kv != nil {
		return kv
	}
	bctx, cancel := context.WithTimeout(ctx, 5*l.cfg.OpTimeout)
	defer cancel()
	bc := BucketConfig(l.cfg.Bucket, l.cfg.TTL, l.cfg.Replicas)
	kv, err := l.cfg.JS.CreateOrUpdateKeyValue(bctx, bc)
	if errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported) {
		// A server before 2.11: no expiry markers, so a candidate
		// notices an expired holder at its next retry instead of at once.
		bc.LimitMarkerTTL = 0
		kv, err = l.cfg.JS.CreateOrUpdateKeyValue(bctx, bc)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("create the leader lease bucket %s: %w", l.cfg.Bucket, err)
		if l.err == nil || l.err.Error() != err.Error() {
			l.log.Warn("leader lease bucket not ready; retrying", "err", err)
		}
		l.err = err
		return nil
	}
	l.kv, l.err = kv, nil
	return kv
}

// step does what is due now and arms the next wake-up.
func (l *Lease) step(ctx context.Context) {
	l.mu.Lock()
	kv, leader, lostNote := l.kv, l.leader, l.lostNote
	l.lostNote = false
	lost := l.lost
	l.mu.Unlock()
	if lostNote {
		l.notifyLost(lost)
	}
	notify := func() {}
	switch {
	case kv == nil:
	case leader:
		l.renew(ctx, kv)
	default:
		notify = l.acquire(ctx, kv)
	}
	l.mu.Lock()
	every := l.cfg.RetryEvery
	if l.leader {
		every = l.cfg.RenewEvery
	}
	if l.tick != nil {
		l.tick.Stop()
	}
	l.tick = l.cfg.Clock.AfterFunc(every, l.wake)
	l.mu.Unlock()
	// OnAcquired and OnStandby run once the next step is armed: whoever
	// they wake (a test that then advances a fake clock) finds the
	// renewal or retry already due at the right time.
	notify()
}

// wake asks the loop to run a step (never blocks: one pending is enough).
func (l *Lease) wake() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// value is the key's value: this backend, with its current address.
func (l *Lease) value(since time.Time) []byte {
	h := l.cfg.Self
	if l.cfg.Address != nil {
		h.Address = l.cfg.Address()
	}
	h.Since = since
	b, _ := json.Marshal(h) // a struct of strings, ints and times
	return b
}

// acquire tries to become the leader. It returns the OnAcquired or
// OnStandby call its outcome calls for, for step to make once the next
// step is armed.
func (l *Lease) acquire(ctx context.Context, kv jetstream.KeyValue) (notify func()) {
	notify = func() {}
	sent := l.cfg.Clock.Now()
	since := time.Now().UTC()
	octx, cancel := context.WithTimeout(ctx, l.cfg.OpTimeout)
	defer cancel()
	rev, err := kv.Create(octx, l.cfg.Key, l.value(since))
	if errors.Is(err, jetstream.ErrKeyExists) {
		e, gerr := kv.Get(octx, l.cfg.Key)
		if gerr != nil {
			return notify // gone meanwhile: the next retry takes it
		}
		var h Holder
		if json.Unmarshal(e.Value(), &h) != nil {
			h = Holder{ReplicaID: "unknown (" + string(e.Value()) + ")"}
		}
		if h.ReplicaID == l.cfg.Self.ReplicaID {
			// Our own key, from a term that stepped down while a renewal
			// was in flight: take it back on its revision (a write by
			// anyone else in between makes this fail).
			rev, err = kv.Update(octx, l.cfg.Key, l.value(since), e.Revision())
			if err != nil {
				return notify
			}
		} else {
			return l.observe(h)
		}
	} else if err != nil {
		l.log.Debug("cannot acquire the leader lease yet; retrying", "err", err)
		l.mu.Lock()
		l.err = fmt.Errorf("acquire the leader lease: %w", err)
		l.mu.Unlock()
		return notify
	}
	l.mu.Lock()
	l.leader, l.token, l.rev, l.holder, l.lost, l.err = true, rev, rev, nil, nil, nil
	l.cfg.Self.Since = since
	l.gauge(true)
	l.renewed(sent)
	l.mu.Unlock()
	l.log.Debug("acquired the leader lease", "token", rev)
	if l.cfg.OnAcquired != nil {
		return func() { l.cfg.OnAcquired(rev) }
	}
	return notify
}

// observe records the other holder and returns the OnStandby call to make
// when it changed.
func (l *Lease) observe(h Holder) (notify func()) {
	l.mu.Lock()
	l.err = nil
	changed := l.holder == nil || l.holder.ReplicaID != h.ReplicaID || !l.holder.Since.Equal(h.Since)
	l.holder = &h
	l.mu.Unlock()
	if changed && l.cfg.OnStandby != nil {
		return func() { l.cfg.OnStandby(h) }
	}
	return func() {}
}

// renew writes the key again on the revision last written.
func (l *Lease) renew(ctx context.Context, kv jetstream.KeyValue) {
	sent := l.cfg.Clock.Now()
	l.mu.Lock()
	rev, since := l.rev, l.cfg.Self.Since
	l.mu.Unlock()
	octx, cancel := context.WithTimeout(ctx, l.cfg.OpTimeout)
	defer cancel()
	nrev, err := kv.Update(octx, l.cfg.Key, l.value(since), rev)
	l.mu.Lock()
	if !l.leader || l.rev != rev {
		// Stepped down while the renewal was in flight: the next
		// acquire sorts out whose key it is.
		l.mu.Unlock()
		return
	}
	if err == nil {
		l.rev = nrev
		l.renewed(sent)
		l.mu.Unlock()
		if m := l.cfg.Metrics; m != nil {
			m.renewals.Inc()
		}
		return
	}
	if m := l.cfg.Metrics; m != nil {
		m.failures.Inc()
	}
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) {
		l.stepDown(fmt.Errorf("%w: renewal on revision %d refused: %v", ErrTaken, rev, err))
		lost := l.lost
		l.lostNote = false
		l.mu.Unlock()
		l.notifyLost(lost)
		l.wake() // campaign at once: the key may just have expired
		return
	}
	l.mu.Unlock()
	l.log.Warn("leader lease renewal failed; retrying", "err", err, "revision", rev)
}

// renewed restarts the step-down deadline from the send time of a write
// that succeeded (l.mu held).
func (l *Lease) renewed(sent time.Time) {
	l.sentOK = sent
	if l.deadline != nil {
		l.deadline.Stop()
	}
	term := l.term
	d := l.cfg.StepDownAfter - l.cfg.Clock.Now().Sub(sent)
	l.deadline = l.cfg.Clock.AfterFunc(d, func() {
		l.mu.Lock()
		if !l.leader || l.term != term || l.cfg.Clock.Now().Sub(l.sentOK) < l.cfg.StepDownAfter {
			l.mu.Unlock()
			return
		}
		l.stepDown(fmt.Errorf("%w (last successful renewal sent %s ago)", ErrSteppedDown, l.cfg.StepDownAfter))
		l.lostNote = true
		l.mu.Unlock()
		l.wake()
	})
}

// stepDown stops being the leader at once (l.mu held); OnLost follows on
// the loop.
func (l *Lease) stepDown(cause error) {
	l.leader, l.token, l.lost = false, 0, cause
	l.term++
	if l.deadline != nil {
		l.deadline.Stop()
		l.deadline = nil
	}
	l.gauge(false)
}

// notifyLost tells OnLost, or logs when nobody listens.
func (l *Lease) notifyLost(err error) {
	if l.cfg.OnLost != nil {
		l.cfg.OnLost(err)
		return
	}
	l.log.Error("lost the leader lease", "err", err)
}

// gauge sets kanade_leader (l.mu held).
func (l *Lease) gauge(on bool) {
	if m := l.cfg.Metrics; m != nil {
		v := 0.0
		if on {
			v = 1
		}
		m.leader.Set(v)
	}
}

func (l *Lease) stopTimers() {
	if l.tick != nil {
		l.tick.Stop()
	}
	if l.deadline != nil {
		l.deadline.Stop()
	}
}
