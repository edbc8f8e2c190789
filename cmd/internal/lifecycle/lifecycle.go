// Package lifecycle runs a process as one ordered list of (start, stop)
// pairs: components start in the order they were added, and when the
// context ends or any component reports a fatal error, the started ones
// stop in reverse order within one shared deadline. Reading the list in
// main is reading the process.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Group is an ordered list of components. It is not safe to Add while Run
// is running.
type Group struct {
	logger *slog.Logger
	comps  []component
	fatal  chan error
}

type component struct {
	name  string
	start func(ctx context.Context) error
	stop  func(ctx context.Context) error
}

// New returns an empty group.
func New(logger *slog.Logger) *Group {
	if logger == nil {
		logger = slog.Default()
	}
	return &Group{logger: logger, fatal: make(chan error, 1)}
}

// Add appends a component. start must not block beyond its own setup (run
// long-lived work in goroutines that stop owns); stop may be nil.
func (g *Group) Add(name string, start, stop func(ctx context.Context) error) {
	g.comps = append(g.comps, component{name: name, start: start, stop: stop})
}

// Fatal reports that a running component failed for good (a listener died,
// the embedded broker stopped); Run then stops everything and returns err.
// Only the first report counts.
func (g *Group) Fatal(err error) {
	select {
	case g.fatal <- err:
	default:
	}
}

// Run starts every component, waits for ctx to end or a Fatal report, then
// stops the started components in reverse order with stopTimeout for all of
// them together. A start error stops what was already started.
func (g *Group) Run(ctx context.Context, stopTimeout time.Duration) error {
	started := 0
	var runErr error
	for _, c := range g.comps {
		t0 := time.Now()
		if err := c.start(ctx); err != nil {
			runErr = fmt.Errorf("start %s: %w", c.name, err)
			break
		}
		g.logger.Debug("started", "component", c.name, "took", time.Since(t0))
		started++
	}
	if runErr == nil {
		select {
		case <-ctx.Done():
			g.logger.Info("shutting down", "cause", context.Cause(ctx))
		case err := <-g.fatal:
			runErr = err
			g.logger.Error("shutting down after a fatal error", "err", err)
		}
	}

	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
	defer cancel()
	var stopErrs []error
	for i := started - 1; i >= 0; i-- {
		c := g.comps[i]
		if c.stop == nil {
			continue
		}
		t0 := time.Now()
		if err := c.stop(stopCtx); err != nil {
			stopErrs = append(stopErrs, fmt.Errorf("stop %s: %w", c.name, err))
			g.logger.Error("stop failed", "component", c.name, "err", err)
			continue
		}
		g.logger.Debug("stopped", "component", c.name, "took", time.Since(t0))
	}
	return errors.Join(append([]error{runErr}, stopErrs...)...)
}
