package app

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"kanade-backend/actors/clock"
	"kanade-backend/actors/schedule"
	"kanade-backend/cmd/internal/lease"
	"kanade-backend/http/health"
	"kanade-backend/messages"
	"kanade-backend/storage/broker"
)

// Backends sharing one NATS elect a leader (issues 15 and 13): the
// scheduler and the projectors, which must run once
// per fleet, run only on the backend holding the leader lease
// (cmd/internal/lease). Every backend serves the API. A backend that does
// not hold the lease is a standby: it says so (one WARN, /ready, fleet
// health) and keeps campaigning, so that it takes over when the holder
// goes away.
//
// The lease is campaigned for once the JetStream resources exist (the
// bootstrap's whenDone), and the singletons start when it is first held
// and the store's leader fence is raised to its token (whenHeld; the
// scheduler is spawned at once but reads nothing before, see
// gatedSource). Every scheduled fire carries the token of the term it is
// issued in (fireToken), and the exec engine refuses it once a newer
// leader raised the fence (storage.CheckFence); the exec engine's
// rollout-wave timers run while this backend holds the lease.
//
// Once started, the singletons are never stopped while the process runs
// (README, "Production topology": why a frozen leader exits). So:
//   - a leader whose renewals fail (NATS away) steps down but keeps them
//     running and campaigns again: nothing fires without NATS anyway, and
//     when NATS returns it takes the lease back unless another backend
//     got it first;
//   - a former leader that sees another backend holding the lease exits
//     non-zero (the app's fatal path), so that a supervisor restarts it as
//     a standby instead of both running the scheduler.

// leadership is the app's side of the lease.
type leadership struct {
	held chan struct{} // closed once this backend first holds the lease
	// fenced is closed once this backend, holding the lease, raised the
	// leader fence to its token (raiseFence): the scheduler seeds nothing
	// before, so that a former leader's fires in flight are done or
	// refused by then.
	fenced  chan struct{}
	decided chan struct{} // closed at the first answer: held, or a standby
	halted  chan struct{} // closed by halt: a fence raise under way ends

	mu         sync.Mutex
	lease      *lease.Lease
	then       []func() // run (in order) once held
	stopped    bool
	everHeld   bool
	standby    *lease.Holder // who holds it, while this backend never did
	decidedSet bool
	starting   sync.WaitGroup
}

func newLeadership() *leadership {
	return &leadership{held: make(chan struct{}), fenced: make(chan struct{}), decided: make(chan struct{}), halted: make(chan struct{})}
}

// isHeld reports whether this backend has held the lease (and so runs
// the singletons).
func (l *leadership) isHeld() bool {
	select {
	case <-l.held:
		return true
	default:
		return false
	}
}

// whenHeld runs f once this backend holds the lease: at once if it does
// (on the caller's goroutine), else on a goroutine of its own. Nothing
// runs once halted.
func (l *leadership) whenHeld(f func()) {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return
	}
	if !l.isHeld() {
		l.then = append(l.then, f)
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	f()
}

// decide closes decided once (l.mu held).
func (l *leadership) decide() {
	if !l.decidedSet {
		l.decidedSet = true
		close(l.decided)
	}
}

// halt: nothing starts any more; waits for a start under way.
func (l *leadership) halt() {
	l.mu.Lock()
	if !l.stopped {
		l.stopped = true
		close(l.halted)
	}
	l.mu.Unlock()
	l.starting.Wait()
}

// campaign creates the lease and starts campaigning (bootstrap done).
func (a *App) campaign() {
	host, _ := os.Hostname()
	l, err := lease.New(lease.Config{
		JS: a.JS, Replicas: a.Config.NATS.Replicas,
		// The real monotonic clock, whatever the actors use: the lease's
		// deadlines must run at the rate of the server's TTL.
		Clock: clock.Real{},
		Self: lease.Holder{ReplicaID: a.ReplicaID, PID: os.Getpid(), Host: host,
			StartedAt: a.started},
		Address:    a.httpAddress,
		Logger:     a.Logger,
		Metrics:    a.leaseMetrics,
		OnAcquired: a.leaseAcquired,
		OnLost: func(err error) {
			a.Logger.Error("lost the leader lease; the scheduler and projectors keep running while this backend takes it back, "+
				"and it exits if another backend holds it", "err", err)
		},
		OnStandby: a.leaseStandby,
	})
	if err != nil {
		a.fatal(fmt.Errorf("leader lease: %w", err))
		return
	}
	a.lead.mu.Lock()
	defer a.lead.mu.Unlock()
	if a.lead.stopped {
		return
	}
	a.lead.lease = l
	l.Start()
}

// leaseAcquired starts the singletons the first time (lease goroutine).
func (a *App) leaseAcquired(token uint64) {
	ld := a.lead
	ld.mu.Lock()
	defer ld.mu.Unlock()
	if ld.everHeld {
		a.Logger.Info("holds the leader lease again", "token", token)
		// The singletons run on; the fence moves to the new term.
		ld.starting.Add(1)
		go func() {
			defer ld.starting.Done()
			a.raiseFence(token)
		}()
		return
	}
	if ld.standby != nil {
		a.Logger.Warn("took over the leader lease: starting the scheduler and the projectors here",
			"token", token, "previous_holder", ld.standby.String())
	} else {
		a.Logger.Info("holds the leader lease: the scheduler and the projectors run here", "token", token)
	}
	ld.everHeld, ld.standby = true, nil
	close(ld.held)
	then := ld.then
	ld.then = nil
	if ld.stopped {
		ld.decide()
		return
	}
	// The lease goroutine must keep renewing while they start.
	ld.starting.Add(1)
	go func() {
		defer ld.starting.Done()
		if !a.raiseFence(token) {
			ld.mu.Lock()
			ld.decide()
			ld.mu.Unlock()
			return
		}
		close(ld.fenced)
		for _, f := range then {
			f()
		}
		ld.mu.Lock()
		ld.decide()
		ld.mu.Unlock()
	}()
}

// raiseFence raises the leader fence to token (storage.RaiseFence) before
// anything of this term is seeded or fired, retrying (with the token of a
// later term of this backend, if it got one meanwhile) until it works;
// false when the backend stopped first.
// A fence above the token means a newer leader raised it (this one is
// stale, and its renewal will find the key moved) or the lease bucket was
// recreated with its revisions starting over (see the README's
// production topology: reset leader_fence then).
func (a *App) raiseFence(token uint64) bool {
	base, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		select {
		case <-a.lead.halted:
			stop()
		case <-base.Done():
		}
	}()
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(base, 5*time.Second)
		err := a.Store.RaiseFence(ctx, token)
		cancel()
		if err == nil {
			a.Logger.Info("raised the leader fence", "token", token)
			return true
		}
		if base.Err() != nil {
			return false
		}
		if i%30 == 0 {
			a.Logger.Error("cannot raise the leader fence to this term's token; the scheduler waits", "token", token, "err", err)
		}
		if !clock.Sleep(base, clock.Real{}, time.Second) {
			return false
		}
		if t := a.fenceToken(); t != 0 {
			token = t
		}
	}
}

// fenceToken is the fencing token of the lease's current term: its
// revision while this backend holds it, 0 otherwise.
func (a *App) fenceToken() uint64 {
	a.lead.mu.Lock()
	l := a.lead.lease
	a.lead.mu.Unlock()
	if l == nil {
		return 0
	}
	return l.Token()
}

// fireToken is the token a scheduled fire carries, or why there is none:
// NATS away (the lease cannot be renewed then, and nothing could be
// published anyway: the exec engine's own answer) or another backend
// leads.
func (a *App) fireToken() (uint64, error) {
	if t := a.fenceToken(); t != 0 {
		return t, nil
	}
	if !a.Conn.IsConnected() {
		return 0, fmt.Errorf("%w; nothing was recorded or published", broker.ErrNATSDown)
	}
	return 0, messages.Unavailablef("this backend does not hold the leader lease now; nothing was recorded or published")
}

// leaseStandby: another backend holds the lease (lease goroutine).
func (a *App) leaseStandby(h lease.Holder) {
	ld := a.lead
	ld.mu.Lock()
	defer ld.mu.Unlock()
	if ld.everHeld {
		a.fatal(fmt.Errorf("the leader lease is held by %s now; exiting so that the scheduler and the projectors run on one backend only", h))
		return
	}
	ld.standby = &h
	ld.decide()
	a.Logger.Warn("standby: another backend on this NATS holds the leader lease; the scheduler and the projectors run there, "+
		"this backend serves the API and takes over when it goes away",
		"holder_pid", h.PID, "holder_host", h.Host, "holder_address", h.Address, "holder_since", h.Since, "holder_replica", h.ReplicaID)
}

// startLeadership campaigns once the resources exist. When they do now,
// it waits (up to the bootstrap's Wait) for the first answer, so that a
// lone backend runs its projectors before it reports ready.
func (a *App) startLeadership(ctx context.Context) error {
	a.leaseMetrics = lease.NewMetrics(a.Metrics)
	if !a.boot.whenDone(a.campaign) || !a.boot.isDone() {
		return nil
	}
	t := time.NewTimer(a.boot.cfg.Wait)
	defer t.Stop()
	select {
	case <-a.lead.decided:
	case <-t.C:
		a.Logger.Warn("leader lease not decided yet; starting anyway, the scheduler and projectors start once it is held")
	case <-ctx.Done():
	}
	return nil
}

// stopLeadership resigns the lease (after the actors stopped), so that a
// standby takes over at once.
func (a *App) stopLeadership(ctx context.Context) error {
	a.lead.halt()
	a.lead.mu.Lock()
	l := a.lead.lease
	a.lead.mu.Unlock()
	if l == nil {
		return nil
	}
	if err := l.Stop(ctx); err != nil {
		a.Logger.Warn("could not resign the leader lease; a standby takes over when it expires", "err", err)
	}
	return nil
}

// leaseState says what /ready and fleet health show: standby (who holds
// the lease), or why this backend does not lead; fault is set when that
// is a fault rather than the way this topology works (a standby) or a
// start still under way.
func (a *App) leaseState() (standby *lease.Holder, waiting string, fault bool) {
	if !a.boot.isDone() {
		return nil, "", false // the bootstrap says what it waits for
	}
	ld := a.lead
	ld.mu.Lock()
	l, held, sb := ld.lease, ld.everHeld, ld.standby
	ld.mu.Unlock()
	if sb != nil {
		return sb, "standby: scheduler and projectors run on " + sb.String(), false
	}
	if l == nil {
		return nil, "leader lease", false
	}
	st := l.Status()
	switch {
	case !held && st.Err != nil:
		return nil, "leader lease: " + st.Err.Error(), true
	case !held:
		return nil, "leader lease", false
	case !st.Leader && st.Lost != nil:
		return nil, "leader lease lost (" + st.Lost.Error() + "); taking it back", true
	}
	return nil, "", false
}

// leaseWarnings adds the standby line to fleet health's warnings: a
// standby is how this topology works, not a fault.
func (a *App) leaseWarnings() []string {
	w := a.natsAuth.warnings()
	if sb, why, _ := a.leaseState(); sb != nil {
		w = append(w, why)
	}
	return w
}

// leaseProblem is fleet health's problem while the lease cannot be reached
// or a leader lost it.
func (a *App) leaseProblem() (health.Problem, bool) {
	_, why, fault := a.leaseState()
	if !fault {
		return health.Problem{}, false
	}
	return health.Problem{Check: health.CheckJetStream, Name: "leader lease", Reason: why}, true
}

// httpAddress is the HTTP address for the lease's value (the configured
// bind until the listener is up).
func (a *App) httpAddress() string {
	if s, ok := a.httpAddr.Load().(string); ok {
		return s
	}
	return a.Config.Server.Bind
}

// standbyScheduler answers the schedule routes on a standby: status from
// KV (the routes fall back on Unavailable), manual runs refused with who
// runs the scheduler.
type standbyScheduler struct{ a *App }

func (s standbyScheduler) client() (*schedule.Client, error) {
	if s.a.lead.isHeld() {
		return s.a.Scheduler, nil
	}
	if _, why, _ := s.a.leaseState(); why != "" {
		return nil, messages.Unavailablef("%s", why)
	}
	return nil, messages.Unavailablef("the scheduler is not running yet")
}

func (s standbyScheduler) Status(ctx context.Context, id string) (schedule.Status, error) {
	c, err := s.client()
	if err != nil {
		return schedule.Status{}, err
	}
	return c.Status(ctx, id)
}

func (s standbyScheduler) Run(ctx context.Context, id string) (schedule.Tick, error) {
	c, err := s.client()
	if err != nil {
		return schedule.Tick{}, err
	}
	return c.Run(ctx, id)
}
