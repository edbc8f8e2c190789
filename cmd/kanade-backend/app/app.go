// Package app wires the backend together: it turns a Config into the
// ordered list of components (embedded NATS, NATS connection, JetStream
// resources, SQL store, actors, HTTP) and runs them with a graceful stop.
// Behaviour lives in the feature packages; this package only connects them,
// and tests and the benchmark command use it to run a whole backend
// in-process.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/actors/actorsys"
	"kanade-backend/actors/audit"
	"kanade-backend/actors/clock"
	"kanade-backend/actors/live"
	"kanade-backend/actors/schedule"
	"kanade-backend/cmd/internal/dirlock"
	"kanade-backend/cmd/internal/lease"
	"kanade-backend/cmd/internal/lifecycle"
	"kanade-backend/http/auth"
	"kanade-backend/http/metrics"
	"kanade-backend/http/operators"
	"kanade-backend/http/server"
	"kanade-backend/storage"
	"kanade-backend/storage/agentauth"
	"kanade-backend/storage/broker"
	"kanade-backend/storage/broker/replicas"
)

// StopTimeout bounds the whole graceful stop (architecture.md §4).
const StopTimeout = 10 * time.Second

// Version is set at build time with -ldflags "-X kanade-backend/cmd/kanade-backend/app.Version=…";
// otherwise the module version from the build info is used.
var Version = ""

// VersionString returns the version this binary reports.
func VersionString() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// App is one backend process.
type App struct {
	Config Config
	Logger *slog.Logger
	// Getenv reads the environment (auth settings); tests replace it.
	Getenv func(string) string

	// Set while running, in start order.
	NATSServer *broker.Embedded // nil with an external NATS
	Conn       *nats.Conn
	JS         jetstream.JetStream
	Store      *storage.Store
	Actors     *actor.ActorSystem
	Audit      *audit.Publisher
	Auth       *auth.Authenticator
	HTTP       *server.Server
	Router     *server.Router
	// Exec is the exec engine's PID: schedule actors send it
	// *messages.ExecRequest (ctx.Request) and get *messages.ExecReply back.
	Exec *actor.PID
	// Live is the live-events hub behind /api/events.
	Live *live.Hub
	// Operators are the API's operators and their hashed tokens.
	Operators *operators.Store
	// AgentCreds are the agents' NATS credentials; AgentAuth runs the
	// auth callout that enforces them (nil when not enforced).
	AgentCreds *agentauth.Store
	AgentAuth  *agentauth.Service
	natsAuth   natsAuth
	natsSystem *nats.Conn // external cluster: the system-account connection
	// Guards report what fleet health lists as the backend's own
	// problems (disk space, stalled projections, broken streams).
	Guards Guards

	// Metrics exists from New on so every component can register collectors.
	Metrics *metrics.Registry
	// Clock is the time source of every actor (tests may replace it
	// before Run).
	Clock clock.Clock

	// Scheduler asks the schedule supervisor for status and manual runs
	// (set once the actors run).
	Scheduler *schedule.Client
	// ScheduleTickHook, if set before Run, is called at the start of every
	// schedule tick (tests inject a panicking tick with it).
	ScheduleTickHook func(scheduleID string)

	// Bootstrap tunes the loop that creates the JetStream resources (tests
	// shorten it before Run).
	Bootstrap Bootstrap
	boot      *bootstrap
	// fatal stops the process after a failure in the background (a late
	// component start).
	fatal func(error)
	// late holds the projectors' PID when they started after Run's start
	// sequence, once NATS became reachable.
	lateMu   sync.Mutex
	late     *actor.PID
	lateDone bool
	// lead is the leader lease: the scheduler and the projectors run only
	// while this backend holds it (leader.go).
	lead         *leadership
	leaseMetrics *lease.Metrics
	httpAddr     atomic.Value // string, once HTTP listens

	// ReplicaID names this backend in the leader lease and the replica
	// registry (cluster.go); new at every start.
	ReplicaID string
	started   time.Time
	registry  *replicas.Announcer

	ready chan struct{}
	// httpShutdown runs when the HTTP server starts shutting down (routes
	// add what must end long-lived requests, such as event streams).
	httpShutdown []func()
}

// New returns an App that Run will start.
func New(cfg Config, logger *slog.Logger) *App {
	if logger == nil {
		logger = slog.Default()
	}
	return &App{Config: cfg, Logger: logger, Getenv: os.Getenv, Metrics: metrics.New(), Clock: clock.Real{}, ready: make(chan struct{}),
		boot: &bootstrap{done: make(chan struct{})}, lead: newLeadership(),
		ReplicaID: uuid.NewString(), started: processStart}
}

// Ready is closed once every component has started.
func (a *App) Ready() <-chan struct{} { return a.ready }

// HTTPAddr is the bound HTTP address once ready.
func (a *App) HTTPAddr() string { return a.HTTP.Addr() }

// Run starts the backend and blocks until ctx ends (or a component fails),
// then stops it gracefully. The list below is the process: components start
// in this order and stop in reverse, which gives the shutdown sequence of
// architecture.md §4: stop HTTP (drain requests), stop actors (schedules,
// then projectors finishing their batch and acking), drain NATS, close the
// database (WAL checkpoint), stop the embedded server.
func (a *App) Run(ctx context.Context) error {
	cfg := a.Config
	log := a.Logger
	g := lifecycle.New(log)
	na, err := a.prepareNATSAuth()
	if err != nil {
		return err
	}
	a.natsAuth = na
	a.boot.cfg = a.Bootstrap

	// One backend per data directory, before anything in it is opened: a
	// second one would corrupt the JetStream store and fire every schedule
	// twice.
	var dirLock *dirlock.Lock
	g.Add("data dir lock", func(context.Context) error {
		l, err := dirlock.Acquire(cfg.DataDir)
		if err != nil {
			return err
		}
		dirLock = l
		return nil
	}, func(context.Context) error { return dirLock.Release() })

	a.setUpGuards()
	if cfg.Embedded() {
		g.Add("embedded nats", func(context.Context) error {
			ns, err := broker.StartEmbedded(broker.EmbeddedOptions{
				StoreDir: a.jetStreamDir(),
				Listen:   cfg.NATS.Listen,
				Token:    cfg.NATS.Token,
				Callout:  a.natsAuth.calloutOptions(),
				Logger:   log,
				Store:    a.Guards.JetStream,
			})
			if err != nil {
				return err
			}
			a.NATSServer = ns
			if cfg.NATS.Listen != "off" && cfg.NATS.Listen != "" {
				log.Info("embedded NATS listening for agents", "url", ns.ClientURL())
			}
			return nil
		}, func(context.Context) error {
			a.NATSServer.Shutdown()
			return nil
		})
		g.Add("jetstream store watch", a.startStoreWatch, a.stopStoreWatch)
	}

	g.Add("sql store", func(ctx context.Context) error {
		st, err := storage.Open(ctx, storage.Options{Path: cfg.DBPath(), URL: cfg.DB.URL,
			ReadConns: cfg.DB.ReadConns, WriteConns: cfg.DB.WriteConns, Logger: log})
		if err != nil {
			return err
		}
		a.Store = st
		log.Info("database ready", "database", st.Location())
		return nil
	}, func(context.Context) error { return a.Store.Close() })

	var checkpointer *storage.Checkpointer
	g.Add("sql checkpointer", func(ctx context.Context) error {
		c, err := a.Store.StartCheckpointer(ctx, storage.CheckpointerOptions{
			Clock: a.Clock, Registerer: a.Metrics, Logger: log})
		checkpointer = c
		return err
	}, func(ctx context.Context) error { return checkpointer.Stop(ctx) })

	g.Add("nats connection", func(ctx context.Context) error {
		copts := a.natsAuth.connectOptions(broker.ConnectOptions{
			URL: cfg.NATS.URL, Name: "kanade-backend", Logger: log, OnStateChange: a.Metrics.NATSState,
		}, cfg.NATS.Token)
		if a.NATSServer != nil {
			copts.InProcess = a.NATSServer // a nil *Embedded in the interface would not be nil
		}
		nc, err := broker.Connect(copts)
		if err != nil {
			return err
		}
		a.Conn = nc
		a.Metrics.FollowNATS(nc.IsConnected)
		js, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("jetstream context: %w", err)
		}
		a.JS = js
		return nil
	}, func(ctx context.Context) error {
		// Drain lets in-flight publishes and acks complete before closing.
		done := make(chan struct{})
		a.Conn.SetClosedHandler(func(*nats.Conn) { close(done) })
		if err := a.Conn.Drain(); err != nil {
			a.Conn.Close()
			return nil
		}
		select {
		case <-done:
		case <-ctx.Done():
			a.Conn.Close()
		}
		return nil
	})

	// Never blocks on NATS: the resources are created (and the projectors
	// started) whenever NATS is reachable (bootstrap.go).
	g.Add("jetstream resources", a.startBootstrap, a.stopBootstrap)

	// Agents waiting to connect are answered from here on.
	g.Add("agent auth", a.startAgentAuth, a.stopAgentAuth)

	a.fatal = g.Fatal
	// Started before the actors so that a lone backend holds the lease
	// when they start; stopped after them, so that it resigns only once
	// its scheduler and projectors are stopped.
	g.Add("leader lease", a.startLeadership, a.stopLeadership)

	var topActors []*actor.PID
	// actorsBase is the actors' base context: their store and KV calls
	// derive from it, and the actors' stop cancels it first, so a stop
	// never waits for those calls' own timeouts. It is not the start
	// context, which ends as shutdown begins, while the HTTP server still
	// lets running requests finish through the actors.
	actorsBase, stopActorsIO := context.WithCancel(context.Background())
	g.Add("actors", func(ctx context.Context) error {
		a.Actors = actorsys.New(log)
		a.Audit = audit.NewPublisher(a.JS, a.Clock)
		pids, err := a.startActors(ctx, actorsBase)
		topActors = pids
		return err
	}, func(ctx context.Context) error {
		stopActorsIO()
		// Nothing starts late once the actors stop.
		_ = a.stopBootstrap(ctx)
		a.lead.halt()
		// Reverse start order: later actors depend on earlier ones; the
		// projectors started first (or late, once NATS was there) and
		// stop last.
		rev := make([]*actor.PID, 0, len(topActors)+1)
		for i := len(topActors) - 1; i >= 0; i-- {
			rev = append(rev, topActors[i])
		}
		if p := a.lateProjectors(); p != nil {
			rev = append(rev, p)
		}
		return actorsys.Stop(ctx, a.Actors, rev...)
	})

	g.Add("http", func(ctx context.Context) error {
		authCfg, err := auth.ConfigFromEnv(a.Getenv)
		if err != nil {
			return err
		}
		a.Operators = operators.NewStore(a.Store, a.Clock)
		authCfg.Operators = a.Operators
		_, statErr := os.Stat(filepath.Join(cfg.DataDir, auth.TokenFileName))
		freshToken := errors.Is(statErr, fs.ErrNotExist)
		au, err := auth.New(authCfg, cfg.DataDir, log)
		if err != nil {
			return err
		}
		if au.Mode() == auth.ModeGenerated {
			// The generated token is the first admin operator, named admin.
			if err := a.Operators.Bootstrap(ctx, au.Token(), log); err != nil {
				return err
			}
		}
		a.Auth = au
		router := server.NewRouter()
		a.Router = router
		a.routes(router)
		if err := auth.MissingRoles(router.Patterns()); err != nil {
			return err
		}
		h := router.Handler(server.Options{Logger: log, Auth: au.Middleware, Guard: a.guard, Observe: a.Metrics.ObserveHTTP,
			WriteTimeout: cfg.Server.WriteTimeout.Duration})
		srv, err := server.Listen(cfg.Server.Bind, h, a.httpLimits())
		if err != nil {
			return err
		}
		a.HTTP = srv
		a.httpAddr.Store(srv.Addr())
		for _, f := range a.httpShutdown {
			srv.OnShutdown(f)
		}
		go func() {
			if err := srv.Serve(); err != nil {
				g.Fatal(fmt.Errorf("http server: %w", err))
			}
		}()
		a.logDashboardURL(freshToken)
		return nil
	}, func(ctx context.Context) error { return a.HTTP.Shutdown(ctx) })

	g.Add("replica registry", a.startRegistry, a.stopRegistry)

	g.Add("ready", func(context.Context) error { close(a.ready); return nil }, nil)

	return g.Run(ctx, StopTimeout)
}

// logDashboardURL says where the dashboard is. A generated token is shown
// once, in the URL logged when it is generated (fresh); later starts say
// where the token file is, so that the token does not end up in every
// start's log (and whatever collects logs).
func (a *App) logDashboardURL(fresh bool) {
	url := "http://" + a.HTTP.Addr() + "/"
	switch a.Auth.Mode() {
	case auth.ModeGenerated:
		if fresh {
			a.Logger.Info("dashboard ready (new admin token, shown once; keep this URL private)",
				"url", url+"#token="+a.Auth.Token(), "token_file", a.Auth.TokenFile())
			return
		}
		a.Logger.Info("dashboard ready (admin token in the token file; open the URL with #token=<token>)",
			"url", url, "token_file", a.Auth.TokenFile())
	case auth.ModeDisabled:
		a.Logger.Warn("dashboard ready with authentication DISABLED", "url", url)
	default:
		a.Logger.Info("dashboard ready", "url", url, "auth", string(a.Auth.Mode()))
	}
}

// Main is the whole program: parse configuration, run until SIGINT/SIGTERM,
// return the exit code.
func Main(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "nats-config" {
		return natsConfigMain(args[1:], getenv, stdout, stderr)
	}
	cfg, err := Load(args, getenv, stderr)
	if errors.Is(err, ErrVersion) {
		fmt.Fprintln(stdout, "kanade-backend", VersionString())
		return 0
	}
	if errors.Is(err, flagHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "kanade-backend:", err)
		return 2
	}
	logger := NewLogger(cfg.Log, stderr)
	slog.SetDefault(logger)
	logger.Info("starting kanade-backend", "version", VersionString(), "config_file", cfg.ConfigFile,
		"data_dir", cfg.DataDir, "embedded_nats", cfg.Embedded())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	a := New(cfg, logger)
	a.Getenv = getenv
	if err := a.Run(ctx); err != nil {
		logger.Error("kanade-backend stopped with an error", "err", err)
		return 1
	}
	logger.Info("kanade-backend stopped")
	return 0
}
