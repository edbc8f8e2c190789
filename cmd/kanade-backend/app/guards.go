package app

import (
	"context"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"kanade-backend/actors/projector"
	"kanade-backend/http/health"
	"kanade-backend/http/server"
	"kanade-backend/storage"
	"kanade-backend/storage/broker"
	"kanade-backend/storage/headroom"
)

// Guards are the backend's watches over its own resources. Each keeps
// working through a fault by itself (projectors retry, the JetStream store
// is recovered); the guards make the fault visible: fleet health lists it
// as a problem (degraded) and /metrics exports it.
type Guards struct {
	// Disk measures the free space of the database's and the JetStream
	// store's filesystems.
	Disk *headroom.Watcher
	// Projection says which projection is stalled and why.
	Projection *projector.Status
	// JetStream watches and recovers the embedded server's store (nil
	// with an external NATS).
	JetStream *broker.StoreHealth
	// StoreWatchInterval is how often a broken JetStream store is retried
	// (default 10 s); tests shorten it before Run.
	StoreWatchInterval time.Duration

	stopWatch func()
}

// jetStreamDir is the embedded server's store directory.
func (a *App) jetStreamDir() string { return filepath.Join(a.Config.DataDir, "jetstream") }

// setUpGuards builds the guards from the configuration and registers their
// metrics.
func (a *App) setUpGuards() {
	cfg := a.Config
	places := []headroom.Place{{Name: "database", Dir: filepath.Dir(cfg.DBPath())}}
	if cfg.Embedded() {
		places = append(places, headroom.Place{Name: "jetstream store", Dir: a.jetStreamDir()})
		a.Guards.JetStream = broker.NewStoreHealth(a.Logger)
		a.Metrics.MustRegister(a.Guards.JetStream.Collector())
	}
	minBytes := cfg.Disk.MinFreeMiB << 20
	if cfg.Disk.MinFreeMiB < 0 {
		minBytes = -1
	}
	a.Guards.Disk = headroom.New(headroom.Config{Places: places, MinFreePercent: cfg.Disk.MinFreePercent, MinFreeBytes: minBytes})
	a.Guards.Projection = projector.NewStatus()
	a.Metrics.MustRegister(a.Guards.Disk.Collector(),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "kanade_target_invalid_pc_ids_total",
			Help: "Agents rows skipped when resolving targets because their pc_id is not a valid subject token.",
		}, func() float64 { return float64(storage.InvalidTargets()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kanade_http_connections_open",
			Help: "HTTP connections open now.",
		}, func() float64 {
			if a.HTTP == nil {
				return 0
			}
			return float64(a.HTTP.OpenConns())
		}))
}

// httpLimits is the listener's protection against slow and greedy
// clients ([server] section; zero values take the defaults).
func (a *App) httpLimits() server.Limits {
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kanade_http_connections_rejected_total",
		Help: "HTTP connections closed at accept because a limit was reached (total or per_client).",
	}, []string{"limit"})
	a.Metrics.MustRegister(rejected)
	s := a.Config.Server
	return server.Limits{
		ReadTimeout: s.ReadTimeout.Duration, IdleTimeout: s.IdleTimeout.Duration,
		MaxConns: s.MaxConns, MaxConnsPerClient: s.MaxConnsPerClient,
		Rejected: func(limit string) { rejected.WithLabelValues(limit).Inc() },
	}
}

// startStoreWatch runs the JetStream store's recovery loop.
func (a *App) startStoreWatch(context.Context) error {
	every := a.Guards.StoreWatchInterval
	if every <= 0 {
		every = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Guards.JetStream.Run(ctx, every)
	}()
	a.Guards.stopWatch = func() { cancel(); <-done }
	return nil
}

func (a *App) stopStoreWatch(context.Context) error {
	a.Guards.stopWatch()
	return nil
}

// problems lists what degrades fleet health besides the fleet itself.
func (a *App) problems() []health.Problem {
	var out []health.Problem
	for _, u := range a.Guards.Disk.Low() {
		reason := u.Reason
		if u.Err != nil {
			reason = "cannot measure free space: " + u.Err.Error()
		}
		out = append(out, health.Problem{Check: health.CheckDisk,
			Name: u.Dir + " (" + strings.Join(u.Names, ", ") + ")", Reason: reason})
	}
	for _, st := range a.Guards.Projection.Stalls() {
		since := st.Since
		out = append(out, health.Problem{Check: health.CheckProjection, Name: st.Projection,
			Reason: "stalled, retrying: " + st.Reason, Since: &since})
	}
	if p, ok := a.bootstrapProblem(); ok {
		out = append(out, p)
	}
	if p, ok := a.leaseProblem(); ok {
		out = append(out, p)
	}
	if a.Guards.JetStream != nil {
		for _, f := range a.Guards.JetStream.Failures() {
			since, name := f.Since, f.Stream
			if name == "" {
				name = "JetStream"
			}
			p := health.Problem{Check: health.CheckJetStream, Name: name, Reason: f.Reason}
			if !since.IsZero() {
				p.Since = &since
			}
			out = append(out, p)
		}
	}
	return out
}
