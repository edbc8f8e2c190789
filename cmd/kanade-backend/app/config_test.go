package app

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadDefaults(t *testing.T) {
	cfg, err := Load(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Bind != "127.0.0.1:8080" || cfg.DataDir != "./data" || cfg.NATS.Listen != "127.0.0.1:4222" ||
		!cfg.Embedded() || cfg.DBPath() != filepath.Join("data", "backend.db") {
		t.Fatalf("defaults = %+v", cfg)
	}
}

// File < environment < flags (architecture.md §4).
func TestLoadPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "backend.toml")
	err := os.WriteFile(file, []byte(`
[server]
bind = "0.0.0.0:9000"
[nats]
url = "nats://file:4222"
[db]
sqlite_path = "/file/db.sqlite"
[log]
level = "debug"
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	e := env(map[string]string{
		"KANADE_BACKEND_CONFIG": file,
		"KANADE_NATS_URL":       "nats://env:4222",
		"KANADE_LOG_LEVEL":      "warn",
		"KANADE_NATS_TOKEN":     "tok",
	})
	cfg, err := Load([]string{"--log-level", "error"}, e, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ConfigFile != file || cfg.Server.Bind != "0.0.0.0:9000" || cfg.DBPath() != "/file/db.sqlite" {
		t.Fatalf("file values not applied: %+v", cfg)
	}
	if cfg.NATS.URL != "nats://env:4222" || cfg.NATS.Token != "tok" || cfg.Embedded() {
		t.Fatalf("env does not win over file: %+v", cfg.NATS)
	}
	if cfg.Log.Level != "error" {
		t.Fatalf("flag does not win over env: %q", cfg.Log.Level)
	}
	cfg, err = Load([]string{"--config", file, "--nats-url", "nats://flag:4222"}, env(nil), io.Discard)
	if err != nil || cfg.NATS.URL != "nats://flag:4222" {
		t.Fatalf("flag --config/--nats-url: %v %+v", err, cfg.NATS)
	}
}

func TestLoadRejectsUnknownKeysAndBadValues(t *testing.T) {
	file := filepath.Join(t.TempDir(), "backend.toml")
	if err := os.WriteFile(file, []byte("[server]\nbnid = \"x\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load([]string{"--config", file}, env(nil), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "server.bnid") {
		t.Fatalf("err = %v, want unknown key server.bnid", err)
	}
	for _, args := range [][]string{
		{"--log-level", "loud"},
		{"--log-format", "xml"},
		{"stray"},
	} {
		if _, err := Load(args, env(nil), io.Discard); err == nil {
			t.Errorf("Load(%v) accepted", args)
		}
	}
}

// [db] url < KANADE_DB_URL < --db-url selects PostgreSQL; anything but a
// postgres:// URL is refused at load, without echoing a password.
func TestLoadDatabaseURL(t *testing.T) {
	file := filepath.Join(t.TempDir(), "backend.toml")
	err := os.WriteFile(file, []byte("[db]\nurl = \"postgres://file@db/kanade\"\nread_conns = 20\nwrite_conns = 5\n"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Load([]string{"--config", file}, env(nil), io.Discard)
	if err != nil || cfg.DB.URL != "postgres://file@db/kanade" || cfg.DB.ReadConns != 20 || cfg.DB.WriteConns != 5 {
		t.Fatalf("file: %v %+v", err, cfg.DB)
	}
	e := env(map[string]string{"KANADE_DB_URL": "postgresql://env@db/kanade"})
	if cfg, err = Load([]string{"--config", file}, e, io.Discard); err != nil || cfg.DB.URL != "postgresql://env@db/kanade" {
		t.Fatalf("env: %v %+v", err, cfg.DB)
	}
	if cfg, err = Load([]string{"--config", file, "--db-url", "postgres://flag@db/kanade"}, e, io.Discard); err != nil || cfg.DB.URL != "postgres://flag@db/kanade" {
		t.Fatalf("flag: %v %+v", err, cfg.DB)
	}
	for _, args := range [][]string{
		{"--db-url", "mysql://u:s3cret@db/kanade"},
		{"--db-url", "/var/lib/kanade.db"},
	} {
		_, err := Load(args, env(nil), io.Discard)
		if err == nil || !strings.Contains(err.Error(), "want postgres://") || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Load(%v): err = %v", args, err)
		}
	}
	if err := os.WriteFile(file, []byte("[db]\nread_conns = -1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load([]string{"--config", file}, env(nil), io.Discard); err == nil {
		t.Error("negative read_conns accepted")
	}
}

// Listening beyond loopback without a token is no longer refused: the
// auth callout lets no client in without a credential there, unless
// --insecure-nats opens the bus to anonymous clients on purpose.
func TestNATSBeyondLoopbackNeedsACredentialOrInsecure(t *testing.T) {
	cases := []struct {
		args      []string
		env       map[string]string
		anonymous bool
	}{
		{nil, nil, true}, // 127.0.0.1:4222
		{[]string{"--nats-listen", "localhost:4222"}, nil, true},
		{[]string{"--nats-listen", "[::1]:4222"}, nil, true},
		{[]string{"--nats-listen", "off"}, nil, true},
		{[]string{"--nats-listen", "0.0.0.0:4222"}, nil, false},
		{[]string{"--nats-listen", ":4222"}, nil, false},
		{[]string{"--nats-listen", "10.1.2.3:4222"}, nil, false},
		{[]string{"--nats-listen", "nats.example:4222"}, nil, false},
		{[]string{"--nats-listen", "127.0.0.1:4222"}, map[string]string{"KANADE_NATS_TOKEN": "s3cret"}, false},
		{[]string{"--nats-listen", "0.0.0.0:4222", "--insecure-nats"}, nil, true},
	}
	for _, c := range cases {
		cfg, err := Load(c.args, env(c.env), io.Discard)
		if err != nil {
			t.Errorf("%v %v: %v", c.args, c.env, err)
			continue
		}
		a := New(cfg, nil)
		n, err := a.prepareNATSAuth()
		if err != nil || !n.enforced || n.policy.AllowAnonymous != c.anonymous {
			t.Errorf("%v %v: anonymous clients allowed = %v (%v), want %v", c.args, c.env, n.policy.AllowAnonymous, err, c.anonymous)
		}
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "backend.toml")
	if err := os.WriteFile(path, []byte("[nats]\nlisten = \"0.0.0.0:4222\"\ninsecure = true\n[disk]\nmin_free_percent = 2.5\nmin_free_mib = 512\n"+
		"[server]\nread_timeout = \"5s\"\nmax_conns_per_client = 16\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load([]string{"--config", path}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.NATS.Insecure || cfg.Disk.MinFreePercent != 2.5 || cfg.Disk.MinFreeMiB != 512 ||
		cfg.Server.ReadTimeout.Duration.Seconds() != 5 || cfg.Server.MaxConnsPerClient != 16 {
		t.Fatalf("config = %+v", cfg)
	}
}

// [fleet] decommission_after: humantime days, default 14d, file < env <
// flag, and at least an hour.
func TestLoadDecommissionAfter(t *testing.T) {
	day := 24 * time.Hour
	cfg, err := Load(nil, env(nil), io.Discard)
	if err != nil || cfg.Fleet.DecommissionAfter.Duration != 14*day {
		t.Fatalf("default %v (%v)", cfg.Fleet.DecommissionAfter, err)
	}
	file := filepath.Join(t.TempDir(), "backend.toml")
	if err := os.WriteFile(file, []byte("[fleet]\ndecommission_after = \"30d\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		env  map[string]string
		want time.Duration
	}{
		{[]string{"--config", file}, nil, 30 * day},
		{[]string{"--config", file}, map[string]string{Env.DecommissionAfter: "7d"}, 7 * day},
		{[]string{"--config", file, "--decommission-after", "2w 1d"}, map[string]string{Env.DecommissionAfter: "7d"}, 15 * day},
	} {
		cfg, err := Load(c.args, env(c.env), io.Discard)
		if err != nil || cfg.Fleet.DecommissionAfter.Duration != c.want {
			t.Fatalf("%v %v: %v (%v), want %v", c.args, c.env, cfg.Fleet.DecommissionAfter, err, c.want)
		}
	}
	for _, bad := range []string{"10m", "soon"} {
		if _, err := Load([]string{"--decommission-after", bad}, env(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "decommission") {
			t.Fatalf("--decommission-after %s: %v", bad, err)
		}
	}
}
