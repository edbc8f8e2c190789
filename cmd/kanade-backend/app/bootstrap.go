package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/actors/clock"
	"kanade-backend/actors/schedule"
	"kanade-backend/cmd/internal/lease"
	"kanade-backend/http/health"
	"kanade-backend/storage/broker"
)

// Start-up never depends on NATS being there (issue 15): HTTP and /health
// come up at once, and the JetStream resources are created by a loop that
// waits for the connection and retries with backoff until they exist. The
// components that cannot work without them (the projectors) start when
// they do; the scheduler is spawned at once but opens KV schedules only
// then (gatedSource). /ready and fleet health say what is still waiting.

// Bootstrap tunes the resource loop; tests shorten it before Run.
type Bootstrap struct {
	// MinBackoff and MaxBackoff bound the wait between two failed
	// attempts to create the resources while connected (defaults 250 ms
	// and 5 s). While the connection is down the loop just watches it.
	MinBackoff, MaxBackoff time.Duration
	// Wait bounds how long start waits for the resources when NATS is
	// reachable (default 10 s), so that in the usual case the projectors
	// are projecting before HTTP answers. It does not wait at all while
	// NATS is away.
	Wait time.Duration
}

// bootstrap is the resource loop's state.
type bootstrap struct {
	cfg  Bootstrap
	done chan struct{} // closed once every resource exists

	mu       sync.Mutex
	waiting  string    // what the loop waits for now ("" once done)
	since    time.Time // when it started waiting
	attempts int
	then     []func() // run (in order) once done, on the loop's goroutine
	stopped  bool

	cancel context.CancelFunc
	exited chan struct{}
}

func (b *bootstrap) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&b.cfg.MinBackoff, 250*time.Millisecond)
	def(&b.cfg.MaxBackoff, 5*time.Second)
	def(&b.cfg.Wait, 10*time.Second)
}

// isDone reports whether the resources exist.
func (b *bootstrap) isDone() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// Waiting says what the bootstrap still waits for ("" when done).
func (b *bootstrap) Waiting() (what string, since time.Time, attempts int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.waiting, b.since, b.attempts
}

func (b *bootstrap) setWaiting(what string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.waiting != what {
		b.waiting, b.since = what, time.Now()
	}
}

// whenDone runs f once the resources exist: at once if they do (on the
// caller's goroutine), else on the loop's. It reports false, without
// running f, once the loop was stopped.
func (b *bootstrap) whenDone(f func()) bool {
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return false
	}
	if !b.isDone() {
		b.then = append(b.then, f)
		b.mu.Unlock()
		return true
	}
	b.mu.Unlock()
	f()
	return true
}

// startBootstrap starts the loop, and waits for it (up to Wait) only when
// NATS is reachable.
func (a *App) startBootstrap(ctx context.Context) error {
	b := a.boot
	b.defaults()
	lctx, cancel := context.WithCancel(context.Background())
	b.cancel, b.exited = cancel, make(chan struct{})
	go func() {
		defer close(b.exited)
		a.bootstrapLoop(lctx)
	}()
	if !a.Conn.IsConnected() {
		a.Logger.Warn("NATS not reachable yet; HTTP starts now, JetStream resources and projectors once it is",
			"url", redactedNATS(a.Config))
		return nil
	}
	t := time.NewTimer(b.cfg.Wait)
	defer t.Stop()
	select {
	case <-b.done:
	case <-t.C:
		what, _, _ := b.Waiting()
		a.Logger.Warn("JetStream resources not ready yet; starting anyway, they keep being retried", "waiting", what)
	case <-ctx.Done():
	}
	return nil
}

// stopBootstrap ends the loop; nothing it was to start starts after this.
func (a *App) stopBootstrap(context.Context) error {
	b := a.boot
	b.mu.Lock()
	b.stopped = true
	b.mu.Unlock()
	if b.cancel != nil {
		b.cancel()
		<-b.exited
	}
	return nil
}

// bootstrapLoop waits for the connection, creates the resources (retrying
// with backoff), then runs what waited for them.
func (a *App) bootstrapLoop(ctx context.Context) {
	b := a.boot
	backoff := clock.Backoff{Min: b.cfg.MinBackoff, Max: b.cfg.MaxBackoff}
	for ctx.Err() == nil {
		if !a.Conn.IsConnected() {
			b.setWaiting("nats connection (" + redactedNATS(a.Config) + ")")
			if broker.WaitConnected(ctx, a.Conn) != nil {
				return
			}
		}
		b.mu.Lock()
		b.attempts++
		b.mu.Unlock()
		ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := broker.Ensure(ectx, a.JS, a.Config.NATS.Replicas, a.Logger)
		cancel()
		if err == nil {
			break
		}
		b.setWaiting("jetstream resources: " + err.Error())
		d := backoff.Next()
		a.Logger.Warn("JetStream resources not created yet; retrying", "err", err, "in", d)
		if !clock.Sleep(ctx, clock.Real{}, d) {
			return
		}
	}
	if ctx.Err() != nil {
		return
	}
	b.mu.Lock()
	then := b.then
	b.then, b.waiting = nil, ""
	close(b.done)
	attempts := b.attempts
	b.mu.Unlock()
	a.Logger.Info("JetStream resources ready", "attempts", attempts)
	for _, f := range then {
		f()
	}
}

// redactedNATS names the NATS the backend uses, without credentials.
func redactedNATS(cfg Config) string {
	if cfg.Embedded() {
		return "embedded"
	}
	return broker.RedactURL(cfg.NATS.URL)
}

// gatedSource opens KV schedules only once this backend holds the leader
// lease (which it campaigns for once the bootstrap created the resources),
// so that the scheduler starts watching the moment it may rather than at
// its next retry. The last fires are read then too: a standby that takes
// over must not catch up from what it read at start.
type gatedSource struct {
	schedule.Source
	done <-chan struct{}
}

func (g gatedSource) wait(ctx context.Context) error {
	select {
	case <-g.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the leader lease: %w", ctx.Err())
	}
}

func (g gatedSource) Schedules(ctx context.Context) (jetstream.KeyValue, error) {
	if err := g.wait(ctx); err != nil {
		return nil, err
	}
	return g.Source.Schedules(ctx)
}

func (g gatedSource) LastFires(ctx context.Context) (map[string]time.Time, error) {
	if g.wait(ctx) != nil {
		// Stopped before ever leading: nothing to catch up, and nothing
		// to warn about.
		return nil, nil
	}
	return g.Source.LastFires(ctx)
}

// readiness is the body of /ready.
type readiness struct {
	Ready bool `json:"ready"`
	// Waiting lists what the backend still waits for.
	Waiting []string `json:"waiting"`
	// Standby names the backend that runs the scheduler and the
	// projectors, when it is not this one.
	Standby *lease.Holder `json:"standby,omitempty"`
}

// serveReady answers GET /ready: 200 once NATS is connected, the resources
// exist, this backend holds the leader lease and the projectors run; 503
// with what is still waiting before that, while NATS is away, and on a
// standby (whose projectors run elsewhere). /health stays the liveness
// probe.
func (a *App) serveReady(w http.ResponseWriter, _ *http.Request) {
	r := readiness{Waiting: []string{}}
	if what, _, _ := a.boot.Waiting(); what != "" {
		r.Waiting = append(r.Waiting, what)
	}
	if !a.Conn.IsConnected() && a.boot.isDone() {
		r.Waiting = append(r.Waiting, "nats connection ("+redactedNATS(a.Config)+"): reconnecting")
	}
	standby, why, _ := a.leaseState()
	if why != "" {
		r.Waiting, r.Standby = append(r.Waiting, why), standby
	} else if a.boot.isDone() && !a.projectorsStarted() {
		r.Waiting = append(r.Waiting, "projectors")
	}
	r.Ready = len(r.Waiting) == 0
	status := http.StatusOK
	if !r.Ready {
		status = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(r)
}

// bootstrapProblem is the fleet health problem while resources are missing.
func (a *App) bootstrapProblem() (health.Problem, bool) {
	what, since, attempts := a.boot.Waiting()
	if what == "" {
		return health.Problem{}, false
	}
	p := health.Problem{Check: health.CheckJetStream, Name: "bootstrap",
		Reason: fmt.Sprintf("waiting for %s (%d attempts)", what, attempts)}
	if !since.IsZero() {
		p.Since = &since
	}
	return p, true
}
