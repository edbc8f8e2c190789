package sim

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/messages/humantime"
)

// Environment variables the command reads.
const (
	EnvNATSURL   = "KANADE_NATS_URL"
	EnvNATSToken = "KANADE_NATS_TOKEN"
)

// Options is the command line of kanade-fleet.
type Options struct {
	Config
	// AssignGroups, when set, makes the command write agent_groups and
	// exit instead of running agents.
	AssignGroups []GroupShare
	// StopAfter ends the run after this long (0 = until SIGINT/SIGTERM);
	// for benchmarks and scripted demos.
	StopAfter time.Duration
	// ConnectTimeout bounds the wait for NATS at start; then the command
	// exits 1 (DefaultConnectTimeout).
	ConnectTimeout time.Duration
	LogLevel       slog.Level
}

// ParseArgs reads the command line (without the program name).
func ParseArgs(args []string, getenv func(string) string, stderr io.Writer) (Options, error) {
	o := Options{}
	fs := flag.NewFlagSet("kanade-fleet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats-url", "", "NATS URL of the backend (default $"+EnvNATSURL+", else nats://127.0.0.1:4222); token from $"+EnvNATSToken)
	fs.IntVar(&o.Agents, "agents", 10, "number of simulated agents")
	fs.StringVar(&o.Prefix, "prefix", "SIM-", "pc_id prefix: SIM-0001, SIM-0002, …")
	heartbeat := fs.String("heartbeat", "30s", "heartbeat interval of each agent (phases are randomised)")
	fs.StringVar(&o.AgentVersion, "agent-version", DefaultAgentVersion, "agent_version reported in heartbeats")
	fs.StringVar(&o.OSFamily, "os-family", "windows", "os_family reported in heartbeats: windows, linux or macos")
	fs.Float64Var(&o.FailRate, "fail-rate", 0, "probability (0 to 1) that a script without directives exits 1")
	runTime := fs.String("run-time", "100ms..2s", "run time of a script without directives: MIN..MAX or one duration")
	assign := fs.String("assign-groups", "", "write agent_groups for the fleet's pc_ids and exit, e.g. canary=5%,wave1=45% (consecutive, non-overlapping slices; merged with existing groups)")
	fs.Uint64Var(&o.Seed, "seed", 0, "random seed for phases, jitter, run times and failures (0 = random, logged)")
	stopAfter := fs.String("stop-after", "", "stop after this long instead of waiting for SIGINT/SIGTERM")
	ramp := fs.String("ramp", "0s", "switch the agents on one after another over this long, each announcing itself with a heartbeat (PCs switched on through a morning); 0: all at once")
	credentials := fs.String("credentials", "", "CSV pc_id,token (POST /api/agents/credentials): run these agents, each on its own connection with its own token (--agents N: the first N)")
	connectTimeout := fs.String("connect-timeout", humantime.Format(DefaultConnectTimeout), "give up (exit 1) when NATS cannot be reached within this long")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	var errs []error
	o.NATSURL = first(*natsURL, getenv(EnvNATSURL), "nats://127.0.0.1:4222")
	o.Token = getenv(EnvNATSToken)
	var err error
	if o.Heartbeat, err = humantime.Parse(*heartbeat); err != nil || o.Heartbeat <= 0 {
		errs = append(errs, fmt.Errorf("--heartbeat %q: want a positive duration such as 30s", *heartbeat))
	}
	if o.RunTime, err = ParseRange(*runTime); err != nil {
		errs = append(errs, fmt.Errorf("--run-time: %w", err))
	}
	if *assign != "" {
		if o.AssignGroups, err = ParseGroupSpec(*assign); err != nil {
			errs = append(errs, fmt.Errorf("--assign-groups: %w", err))
		}
	}
	if *credentials != "" {
		if o.Credentials, err = readCredentialsFile(*credentials, agentsSet(fs), o.Agents); err != nil {
			errs = append(errs, fmt.Errorf("--credentials: %w", err))
		}
	}
	if o.ConnectTimeout, err = humantime.Parse(*connectTimeout); err != nil || o.ConnectTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--connect-timeout %q: want a positive duration such as 10s", *connectTimeout))
	}
	if o.Ramp, err = humantime.Parse(*ramp); err != nil {
		errs = append(errs, fmt.Errorf("--ramp %q: want a duration such as 30s", *ramp))
	}
	if *stopAfter != "" {
		if o.StopAfter, err = humantime.Parse(*stopAfter); err != nil {
			errs = append(errs, fmt.Errorf("--stop-after: %w", err))
		}
	}
	if err := o.LogLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		errs = append(errs, fmt.Errorf("--log-level %q: want debug, info, warn or error", *logLevel))
	}
	if _, err := o.Config.withDefaults(); err != nil {
		errs = append(errs, err)
	}
	return o, errors.Join(errs...)
}

// readCredentialsFile reads the kitting CSV at path, keeping the first n
// agents when --agents was given.
func readCredentialsFile(path string, limit bool, n int) ([]Credential, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	creds, err := ReadCredentials(f)
	if err != nil {
		return nil, err
	}
	if limit {
		if n > len(creds) {
			return nil, fmt.Errorf("--agents %d: %s lists %d PCs", n, path, len(creds))
		}
		creds = creds[:n]
	}
	return creds, nil
}

func agentsSet(fs *flag.FlagSet) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == "agents" })
	return set
}

func first(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// Main is the whole kanade-fleet program: it runs until SIGINT/SIGTERM
// and returns the exit code.
func Main(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return Run(ctx, args, getenv, stdout, stderr)
}

// Run is Main with the process's lifetime given as ctx (tests cancel it
// instead of sending a signal).
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	o, err := ParseArgs(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "kanade-fleet:", err)
		return 2
	}
	o.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.LogLevel}))
	connectCtx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	token := o.Token
	if o.Credentials != nil && o.AssignGroups == nil {
		// Agents with their own credentials: whether NATS can be reached
		// is asked with the first one's token, the fleet has no other.
		token = o.Credentials[0].Token
	}
	nc, err := Dial(connectCtx, o.NATSURL, token, o.Logger)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return 0 // stopped (Ctrl-C) before NATS answered
		}
		o.Logger.Error("gave up connecting to NATS", "url", o.NATSURL, "connect_timeout", o.ConnectTimeout, "err", err)
		return 1
	}
	defer nc.Close()
	o.Conn = nc
	if o.AssignGroups != nil {
		if err := assign(ctx, o, stdout); err != nil {
			o.Logger.Error("assign groups failed", "err", err)
			return 1
		}
		return 0
	}

	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	f, err := Start(startCtx, o.Config)
	cancel()
	if err != nil {
		o.Logger.Error("fleet did not start", "err", err)
		return 1
	}
	if o.StopAfter > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.StopAfter)
		defer cancel()
	}
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err = f.Stop(stopCtx)
	fmt.Fprintln(stdout, "kanade-fleet:", f.Stats())
	if err != nil {
		o.Logger.Error("fleet stopped with an error", "err", err)
		return 1
	}
	return 0
}

// assign is the --assign-groups step: write the groups and report who
// got what, on the connection Run made.
func assign(ctx context.Context, o Options, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	js, err := jetstream.New(o.Conn)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	plan, err := AssignGroups(ctx, js, o.Config.pcIDs(), o.AssignGroups)
	if err != nil {
		return err
	}
	groups := make([]string, 0, len(plan))
	for g := range plan {
		groups = append(groups, g)
	}
	slices.Sort(groups)
	for _, g := range groups {
		pcs := plan[g]
		fmt.Fprintf(stdout, "%s: %s PCs (%s..%s)\n", g, strconv.Itoa(len(pcs)), pcs[0], pcs[len(pcs)-1])
	}
	return nil
}
