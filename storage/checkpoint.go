package storage

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"kanade-backend/actors/clock"
)

// Checkpointing the SQLite write-ahead log (copying its frames into the
// database file) is work that SQLite otherwise does in the commit of
// whichever transaction finds the log past 1 000 pages: that commit copies
// every frame not copied yet and fsyncs twice before it returns. The
// writer is the one connection every projection and the exec API queue
// on, so those stalls were on the paths a user waits for: an exec API
// commit of 10 000 expected PCs took 22–40 ms when it met a checkpoint
// and 3 ms when it did not, and a broadcast's results projection met
// several (docs/benchmarks.md, "Broadcast end to end", fifth pass).
//
// The Checkpointer copies the log from a connection of its own, on another
// core, while the writer goes on (a PASSIVE checkpoint never blocks the
// writer nor waits for it). The writer's own automatic checkpoint is left
// as SQLite has it: it still bounds the log (a checkpoint at commit lets
// the next transaction start the log over, which the writer alone can
// do), and it finds most frames already copied. Not all: the committing
// transaction's own frames cannot have been copied yet, so a commit past
// the threshold still copies those and fsyncs. Raising the writer's
// threshold to make that rarer was measured no faster at 10 000 agents
// (and at 4 000 pages no faster at 100 000; docs/benchmarks.md, sixth
// pass), and at 10 000 pages it let the log file grow to tens of
// megabytes under a steady stream of batches, which a nearly full disk
// cannot hold.

// DefaultCheckpointInterval is how often the Checkpointer looks at the log.
// A look that finds nothing to copy costs a lock and a read of the log's
// index; one that copies does fsyncs that the writer would otherwise do
// in a commit.
const DefaultCheckpointInterval = 50 * time.Millisecond

// CheckpointerOptions configure a Checkpointer.
type CheckpointerOptions struct {
	// Interval between checkpoints (default DefaultCheckpointInterval).
	Interval time.Duration
	// Clock drives the interval (default clock.Real).
	Clock clock.Clock
	// Registerer receives the checkpoint metrics (nil: not registered).
	Registerer prometheus.Registerer
	// Logger receives failures (default slog.Default).
	Logger *slog.Logger
}

// Checkpointer checkpoints a SQLite store's write-ahead log in the
// background. On PostgreSQL it does nothing.
type Checkpointer struct {
	store *Store
	db    *sql.DB
	opts  CheckpointerOptions

	// cancel ends the loop (and a checkpoint in progress); done closes
	// when the loop has returned.
	cancel context.CancelFunc
	done   chan struct{}
	// failing says the last checkpoint failed (logged once per streak);
	// only the loop touches it.
	failing bool

	duration  prometheus.Histogram
	walFrames prometheus.Gauge
	behind    prometheus.Gauge
	failures  prometheus.Counter
}

// StartCheckpointer starts checkpointing every opts.Interval from a
// connection of its own. Stop it before closing the store.
func (s *Store) StartCheckpointer(ctx context.Context, opts CheckpointerOptions) (*Checkpointer, error) {
	if opts.Interval <= 0 {
		opts.Interval = DefaultCheckpointInterval
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	f := promauto.With(opts.Registerer)
	c := &Checkpointer{store: s, opts: opts,
		duration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "kanade_sqlite_checkpoint_duration_seconds",
			Help:    "Time of the background WAL checkpoints of SQLite (copying the log into the database file, fsyncs included).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		walFrames: f.NewGauge(prometheus.GaugeOpts{
			Name: "kanade_sqlite_wal_frames",
			Help: "Frames (pages) in the SQLite write-ahead log at the last background checkpoint; the log restarts once all are copied.",
		}),
		behind: f.NewGauge(prometheus.GaugeOpts{
			Name: "kanade_sqlite_wal_frames_behind",
			Help: "WAL frames the last background checkpoint could not copy, because a reader still used them; growing means a long read holds the log.",
		}),
		failures: f.NewCounter(prometheus.CounterOpts{
			Name: "kanade_sqlite_checkpoint_failures_total",
			Help: "Background WAL checkpoints that failed (full disk, I/O error); the writer's own checkpoint still runs.",
		}),
	}
	if s.IsPostgres() {
		return c, nil
	}
	db, err := sql.Open("sqlite", DSN(s.path, false))
	if err != nil {
		return nil, fmt.Errorf("open the checkpoint connection to %s: %w", s.path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetConnMaxIdleTime(0)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open the checkpoint connection to %s: %w", s.path, err)
	}
	c.db = db
	loop, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan struct{})
	go c.run(loop)
	return c, nil
}

// run checkpoints every Interval until ctx ends.
func (c *Checkpointer) run(ctx context.Context) {
	defer close(c.done)
	for clock.Sleep(ctx, c.opts.Clock, c.opts.Interval) {
		c.checkpoint(ctx)
	}
}

// checkpoint copies what the log holds beyond the last checkpoint.
func (c *Checkpointer) checkpoint(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	start := time.Now()
	// busy is set when another checkpoint (the writer's own) ran at
	// the same moment: nothing to report, the next look goes on.
	var busy, logFrames, done int
	err := c.db.QueryRowContext(cctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logFrames, &done)
	if err != nil {
		if ctx.Err() != nil {
			return // cut short by Stop: no failure
		}
		c.failures.Inc()
		if !c.failing {
			c.failing = true
			c.opts.Logger.Warn("background WAL checkpoint failed; retrying (the writer's own checkpoint still runs)",
				"database", c.store.path, "err", err)
		}
		return
	}
	if c.failing {
		c.failing = false
		c.opts.Logger.Info("background WAL checkpoint works again", "database", c.store.path)
	}
	c.duration.Observe(time.Since(start).Seconds())
	c.walFrames.Set(float64(logFrames))
	c.behind.Set(float64(max(logFrames-done, 0)))
}

// Stop ends the checkpoints, waits for one in progress and closes the
// connection. Calling it again does nothing.
func (c *Checkpointer) Stop(context.Context) error {
	if c == nil || c.db == nil {
		return nil
	}
	c.cancel()
	<-c.done
	if err := c.db.Close(); err != nil {
		return fmt.Errorf("close the checkpoint connection: %w", err)
	}
	return nil
}
