package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"kanade-backend/actors/schedule"
	"kanade-backend/messages/humantime"
	"kanade-backend/storage"
)

// Config is the whole configuration of the backend. Sources, lowest
// precedence first: built-in defaults, the TOML file (--config, else
// $KANADE_BACKEND_CONFIG, else none), environment variables, flags.
type Config struct {
	Server    ServerConfig    `toml:"server"`
	NATS      NATSConfig      `toml:"nats"`
	DB        DBConfig        `toml:"db"`
	Log       LogConfig       `toml:"log"`
	Retention RetentionConfig `toml:"retention"`
	Disk      DiskConfig      `toml:"disk"`
	Fleet     FleetConfig     `toml:"fleet"`

	// DataDir holds the database (unless DB.SQLitePath says otherwise), the
	// embedded JetStream store and the generated admin token.
	DataDir string `toml:"data_dir"`
	// Rebuild drops every projection and rebuilds it from the streams.
	Rebuild bool `toml:"-"`
	// ConfigFile is the file that was loaded, if any.
	ConfigFile string `toml:"-"`
}

// ServerConfig is the [server] section. The limits keep slow or greedy
// HTTP clients from starving /health and the NATS listener; zero values
// take http/server's defaults.
type ServerConfig struct {
	Bind              string   `toml:"bind"`
	ReadTimeout       Duration `toml:"read_timeout"`
	WriteTimeout      Duration `toml:"write_timeout"`
	IdleTimeout       Duration `toml:"idle_timeout"`
	MaxConns          int      `toml:"max_conns"`
	MaxConnsPerClient int      `toml:"max_conns_per_client"`
}

// DiskConfig is the [disk] section: fleet health is degraded while a data
// filesystem has less free space than either threshold (0 = default,
// negative = off).
type DiskConfig struct {
	MinFreePercent float64 `toml:"min_free_percent"`
	MinFreeMiB     int64   `toml:"min_free_mib"`
}

// NATSConfig is the [nats] section.
type NATSConfig struct {
	// URL of an external NATS; empty starts the embedded server.
	URL string `toml:"url"`
	// Listen is where the embedded server accepts agents and the CLI; "off"
	// keeps it in-process only.
	Listen string `toml:"listen"`
	// Token is the legacy shared agent token: accepted with every right
	// beside per-PC credentials (and, with an external server without the
	// backend's auth callout, what the backend connects with).
	Token string `toml:"token"`
	// Replicas of every stream and bucket (3 on a clustered NATS).
	Replicas int `toml:"replicas"`
	// Insecure lets clients that present no token in with every right even
	// when the embedded server listens beyond loopback (--insecure-nats):
	// the open bus of old, for a lab. Without it they get in on loopback
	// only; elsewhere a client needs a credential (agentauth).
	Insecure bool `toml:"insecure"`
}

// DBConfig is the [db] section.
type DBConfig struct {
	// SQLitePath is the SQLite file (default <data-dir>/backend.db).
	SQLitePath string `toml:"sqlite_path"`
	// URL selects PostgreSQL instead: postgres://user:password@host/db.
	URL string `toml:"url"`
	// ReadConns and WriteConns size the pools (0: the store's defaults;
	// SQLite always has one writer).
	ReadConns  int `toml:"read_conns"`
	WriteConns int `toml:"write_conns"`
}

// LogConfig is the [log] section.
type LogConfig struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

// RetentionConfig is the [retention] section: how long rows stay in the read
// model (behaviour.md §1). Keep each at least as long as its stream's
// max_age so that an empty table still means an empty stream.
type RetentionConfig struct {
	ResultsDays          int      `toml:"results_days"`
	AuditDays            int      `toml:"audit_days"`
	ProjectionErrorsDays int      `toml:"projection_errors_days"`
	SweepInterval        Duration `toml:"sweep_interval"`
}

// FleetConfig is the [fleet] section.
type FleetConfig struct {
	// DecommissionAfter is how long a PC may stay silent and still be
	// waited for by once_per_pc and once_per_target schedules (their
	// "done" is judged over every known PC of the target); a PC silent
	// longer counts as decommissioned. humantime syntax ("14d").
	DecommissionAfter HumanDuration `toml:"decommission_after"`
}

// HumanDuration is a TOML duration in the wire's humantime syntax ("14d",
// "1h 30m"), for settings that are naturally days.
type HumanDuration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *HumanDuration) UnmarshalText(b []byte) error {
	v, err := humantime.Parse(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// Duration is a TOML duration written the way Go writes them ("1h").
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// Defaults returns the built-in configuration (architecture.md §4).
func Defaults() Config {
	return Config{
		Server:  ServerConfig{Bind: "127.0.0.1:8080"},
		NATS:    NATSConfig{Listen: "127.0.0.1:4222", Replicas: 1},
		Log:     LogConfig{Level: "info", Format: "text"},
		DataDir: "./data",
		Retention: RetentionConfig{
			ResultsDays: 90, AuditDays: 365, ProjectionErrorsDays: 30,
			SweepInterval: Duration{time.Hour},
		},
		Fleet: FleetConfig{DecommissionAfter: HumanDuration{schedule.DefaultDecommissionAfter}},
	}
}

// DBPath is the database file: [db] sqlite_path / --db, else
// <data-dir>/backend.db.
func (c Config) DBPath() string {
	if c.DB.SQLitePath != "" {
		return c.DB.SQLitePath
	}
	return filepath.Join(c.DataDir, "backend.db")
}

// Embedded reports whether the backend runs its own NATS server.
func (c Config) Embedded() bool { return c.NATS.URL == "" }

// Env names the environment variables Load reads.
var Env = struct {
	Config, Bind, DataDir, DB, DBURL, NATSURL, NATSListen, NATSToken, LogLevel, LogFormat, DecommissionAfter string
}{
	Config:     "KANADE_BACKEND_CONFIG",
	Bind:       "KANADE_BIND",
	DataDir:    "KANADE_DATA_DIR",
	DB:         "KANADE_DB",
	DBURL:      "KANADE_DB_URL",
	NATSURL:    "KANADE_NATS_URL",
	NATSListen: "KANADE_NATS_LISTEN",
	NATSToken:  "KANADE_NATS_TOKEN",
	LogLevel:   "KANADE_LOG_LEVEL",
	LogFormat:  "KANADE_LOG_FORMAT",
	// DecommissionAfter is [fleet] decommission_after.
	DecommissionAfter: "KANADE_DECOMMISSION_AFTER",
}

// ErrVersion is returned by Load when --version was given.
var ErrVersion = errors.New("version requested")

// Load builds the configuration from args (without the program name), the
// environment and the config file.
func Load(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	cfg := Defaults()
	fs := flag.NewFlagSet("kanade-backend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configPath = fs.String("config", "", "TOML config file (default $"+Env.Config+")")
		bind       = fs.String("bind", "", "HTTP listen address (default "+cfg.Server.Bind+")")
		dataDir    = fs.String("data-dir", "", "data directory (default "+cfg.DataDir+")")
		natsURL    = fs.String("nats-url", "", "external NATS URL; empty runs the embedded server")
		natsListen = fs.String("nats-listen", "", "embedded NATS listen address, or off (default "+cfg.NATS.Listen+")")
		db         = fs.String("db", "", "SQLite database path (default <data-dir>/backend.db)")
		dbURL      = fs.String("db-url", "", "PostgreSQL URL (postgres://user:password@host/db); empty uses SQLite")
		logLevel   = fs.String("log-level", "", "debug, info, warn or error (default info)")
		logFormat  = fs.String("log-format", "", "text or json (default text)")
		rebuild    = fs.Bool("rebuild", false, "drop every projection and rebuild it from the streams")
		insecure   = fs.Bool("insecure-nats", false, "let NATS clients without a token in with every right even beyond loopback (a lab)")
		version    = fs.Bool("version", false, "print the version and exit")
		decomm     = fs.String("decommission-after", "", "a PC silent this long is no longer waited for by once_per_pc/once_per_target schedules (default 14d)")
	)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *version {
		return cfg, ErrVersion
	}

	path := first(*configPath, getenv(Env.Config))
	if path != "" {
		md, err := toml.DecodeFile(path, &cfg)
		if err != nil {
			return cfg, fmt.Errorf("config file %s: %w", path, err)
		}
		// A misspelt key would otherwise be ignored and the operator would
		// wonder why the setting has no effect.
		if und := md.Undecoded(); len(und) > 0 {
			keys := make([]string, len(und))
			for i, k := range und {
				keys[i] = k.String()
			}
			return cfg, fmt.Errorf("config file %s: unknown keys: %s", path, strings.Join(keys, ", "))
		}
		cfg.ConfigFile = path
	}

	overlay := func(dst *string, vals ...string) {
		if v := first(vals...); v != "" {
			*dst = v
		}
	}
	// Flags win over the environment, which wins over the file.
	overlay(&cfg.Server.Bind, *bind, getenv(Env.Bind))
	overlay(&cfg.DataDir, *dataDir, getenv(Env.DataDir))
	overlay(&cfg.DB.SQLitePath, *db, getenv(Env.DB))
	overlay(&cfg.DB.URL, *dbURL, getenv(Env.DBURL))
	overlay(&cfg.NATS.URL, *natsURL, getenv(Env.NATSURL))
	overlay(&cfg.NATS.Listen, *natsListen, getenv(Env.NATSListen))
	overlay(&cfg.NATS.Token, getenv(Env.NATSToken))
	overlay(&cfg.Log.Level, *logLevel, getenv(Env.LogLevel))
	overlay(&cfg.Log.Format, *logFormat, getenv(Env.LogFormat))
	if v := first(*decomm, getenv(Env.DecommissionAfter)); v != "" {
		d, err := humantime.Parse(v)
		if err != nil {
			return cfg, fmt.Errorf("decommission after %q: %w", v, err)
		}
		cfg.Fleet.DecommissionAfter.Duration = d
	}
	cfg.Rebuild = *rebuild
	cfg.NATS.Insecure = cfg.NATS.Insecure || *insecure

	return cfg, cfg.validate()
}

func (c Config) validate() error {
	var errs []error
	if _, err := parseLevel(c.Log.Level); err != nil {
		errs = append(errs, err)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		errs = append(errs, fmt.Errorf("log format %q: want text or json", c.Log.Format))
	}
	if c.NATS.Replicas < 1 || c.NATS.Replicas > 5 {
		errs = append(errs, fmt.Errorf("nats replicas %d: want 1 to 5", c.NATS.Replicas))
	}
	if c.DB.URL != "" && !storage.IsPostgresURL(c.DB.URL) {
		errs = append(errs, fmt.Errorf("db url %q: want postgres://user:password@host:port/database", storage.RedactURL(c.DB.URL)))
	}
	if c.DB.ReadConns < 0 || c.DB.WriteConns < 0 {
		errs = append(errs, fmt.Errorf("db read_conns %d, write_conns %d: want 0 (default) or more", c.DB.ReadConns, c.DB.WriteConns))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir must not be empty"))
	}
	if c.Retention.ResultsDays < 30 || c.Retention.AuditDays < 1 || c.Retention.ProjectionErrorsDays < 1 {
		// Results must outlive the RESULTS stream (30 d): an empty table has
		// to imply an empty stream for the rebuild check.
		errs = append(errs, fmt.Errorf("retention: results_days must be ≥ 30 (the RESULTS stream's max_age), others ≥ 1"))
	}
	if c.Fleet.DecommissionAfter.Duration < time.Hour {
		errs = append(errs, fmt.Errorf("fleet decommission_after %s: want at least 1h", humantime.Format(c.Fleet.DecommissionAfter.Duration)))
	}
	if c.Retention.SweepInterval.Duration < time.Minute {
		errs = append(errs, fmt.Errorf("retention sweep_interval %v: want at least 1m", c.Retention.SweepInterval.Duration))
	}
	return errors.Join(errs...)
}

func first(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// flagHelp is flag.ErrHelp: -h printed the usage, which is not a failure.
var flagHelp = flag.ErrHelp
