// Package actorsys builds the protoactor-go actor system the way this
// application needs it: logging through the application's slog logger,
// explicit supervision strategies, a shutdown that really stops actors,
// and a worker-pool dispatcher for actors that get work all at once.
//
// Measured facts behind this package (architecture.md §2): the library's
// default logger writes coloured text to stderr; ActorSystem.Shutdown stops
// nothing by itself; the default supervisor restarts forever (10 in 10 s);
// WithDefaultPrometheusProvider listens on :2222 on all interfaces (never use
// it); ReceiveTimeout has a data race in the pinned version (use timers).
package actorsys

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// New returns an actor system that logs through logger. The library logs
// routine events (system started, dead letters) at Info; they are demoted to
// Debug so that an operator's Info log shows the application's story.
func New(logger *slog.Logger) *actor.ActorSystem {
	if logger == nil {
		logger = slog.Default()
	}
	h := demoteInfo{logger.With("component", "actor").Handler()}
	return actor.NewActorSystem(
		actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(h) }),
		actor.WithDeadLetterThrottleCount(10),
		actor.WithDeadLetterThrottleInterval(10*time.Second),
	)
}

// Stop stops the given top-level actors one after the other, in the order
// given (pass them in reverse start order), waiting for each to finish its
// stop handling, then shuts the system down. Each stop gets what is left of
// ctx; actors still running when ctx ends are reported in the error.
func Stop(ctx context.Context, sys *actor.ActorSystem, pids ...*actor.PID) error {
	var errs []error
	for _, pid := range pids {
		if pid == nil {
			continue
		}
		// StopFuture waits at most 10 s (fixed by the library); ctx may be
		// shorter, so wait for whichever ends first.
		done := make(chan error, 1)
		f := sys.Root.StopFuture(pid)
		go func() { done <- f.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				errs = append(errs, fmt.Errorf("stop actor %s: %w", pid.Id, err))
			}
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("stop actor %s: %w", pid.Id, ctx.Err()))
		}
	}
	sys.Shutdown()
	return errors.Join(errs...)
}

// RestartLimited is the strategy for a supervisor whose children are
// independent: a failing child is restarted alone, and after more than
// maxRestarts failures within window it is stopped for good (the parent then
// receives *actor.Terminated). onFailure, if not nil, sees every failure
// reason first, so the parent can record the last error.
func RestartLimited(maxRestarts int, window time.Duration, onFailure func(child *actor.PID, reason any)) actor.SupervisorStrategy {
	return &observedStrategy{
		inner:     actor.NewOneForOneStrategy(maxRestarts, window, func(any) actor.Directive { return actor.RestartDirective }),
		onFailure: onFailure,
	}
}

// RestartWithBackoff restarts a failing child after a delay that grows
// linearly with its failures: n × initial for the nth failure (plus under a
// microsecond of noise), the count starting again from one after a window
// without failures; it never gives up. The library calls this "exponential
// backoff", but its delay is failureCount × initial (strategy_exponential_
// backoff.go in protoactor-go). For children that must always come back,
// such as projectors, where giving up would silently stop the read model
// (upstream defect 13).
func RestartWithBackoff(window, initial time.Duration, onFailure func(child *actor.PID, reason any)) actor.SupervisorStrategy {
	return &observedStrategy{inner: actor.NewExponentialBackoffStrategy(window, initial), onFailure: onFailure}
}

type observedStrategy struct {
	inner     actor.SupervisorStrategy
	onFailure func(child *actor.PID, reason any)
}

func (s *observedStrategy) HandleFailure(sys *actor.ActorSystem, sup actor.Supervisor, child *actor.PID,
	rs *actor.RestartStatistics, reason any, message any) {
	if s.onFailure != nil {
		s.onFailure(child, reason)
	}
	s.inner.HandleFailure(sys, sup, child, rs, reason, message)
}

// demoteInfo turns the library's Info records into Debug records.
type demoteInfo struct{ slog.Handler }

func (d demoteInfo) Enabled(ctx context.Context, l slog.Level) bool {
	if l == slog.LevelInfo {
		l = slog.LevelDebug
	}
	return d.Handler.Enabled(ctx, l)
}

func (d demoteInfo) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelInfo {
		r.Level = slog.LevelDebug
	}
	return d.Handler.Handle(ctx, r)
}

func (d demoteInfo) WithAttrs(as []slog.Attr) slog.Handler {
	return demoteInfo{d.Handler.WithAttrs(as)}
}
func (d demoteInfo) WithGroup(n string) slog.Handler { return demoteInfo{d.Handler.WithGroup(n)} }

// ErrNotAsked is Ask's error when the caller's context left no time to
// ask at all.
var ErrNotAsked = errors.New("not asked: the caller's context has ended")

// Ask sends msg to pid from outside the actor system and waits for the
// answer: for HTTP handlers and other callers that may block, never for an
// actor (a Receive must not wait on a future; it sends with ctx.Request
// and takes the answer as a message). It waits up to timeout, shortened
// to ctx's deadline, and returns the wait it allowed, so that the caller
// can say how long it waited. The error is ErrNotAsked when no time was
// left, else the future's (actor.ErrTimeout, dead letter).
func Ask(ctx context.Context, root *actor.RootContext, pid *actor.PID, msg any, timeout time.Duration) (any, time.Duration, error) {
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if timeout <= 0 {
		return nil, timeout, ErrNotAsked
	}
	res, err := root.RequestFuture(pid, msg, timeout).Result()
	return res, timeout, err
}
