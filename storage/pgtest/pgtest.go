// Package pgtest runs a real, throwaway PostgreSQL server for the tests of
// one package: there is no fake database in this project, for either
// dialect.
//
// The first test that asks for a database starts the server (initdb and
// postgres from the installed PostgreSQL, about two seconds), in a
// temporary directory, listening only on a Unix socket there, so parallel
// test binaries never share a server or compete for a port. It migrates a
// template database once; each test then gets its own database copied from
// the template (CREATE DATABASE … TEMPLATE, a few tens of milliseconds),
// dropped when the test ends.
//
// Durability is off (fsync, synchronous_commit, full_page_writes): the data
// lives as long as the test binary. The server runs as the "postgres" user
// when the tests run as root (initdb refuses root), else as the current
// user. Tests connect as a role that is not a superuser and owns its
// database, the setup the README documents for operators.
//
// Without PostgreSQL binaries the tests that need them are skipped, unless
// KANADE_REQUIRE_PG=1 (set by CI), in which case they fail.
//
// Cleanup: Main (or Stop from a package's own TestMain) stops the server
// and removes its directory when the tests end. The server is also watched
// by a small shell that holds a pipe from the test binary: when the binary
// exits in any way, even killed by a timeout, the pipe closes and the shell
// stops the server and removes the directory, so no process outlives the
// tests.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"kanade-backend/storage"
)

// Environment variables the harness reads.
const (
	// RequireEnv set to 1 turns a missing PostgreSQL into a test failure.
	RequireEnv = "KANADE_REQUIRE_PG"
	// BinEnv names the directory of initdb and postgres, when they are not
	// under /usr/lib/postgresql/<version>/bin or on PATH.
	BinEnv = "KANADE_PG_BIN"
)

const (
	// superuser administers the server (creates and drops databases).
	superuser = "postgres"
	// role is the tests' own login: not a superuser, owner of its database.
	role = "kanade"
	// template is the migrated database every test database is copied from.
	template = "kanade_template"
	// port only names the socket file; there is no TCP listener.
	port = 5432
)

// errNoPostgres means the binaries are not installed.
var errNoPostgres = errors.New("PostgreSQL binaries (initdb, postgres) not found")

var (
	mu       sync.Mutex
	started  bool
	current  *server
	startErr error
)

// Main runs the package's tests and then stops the server. Packages whose
// tests use PostgreSQL call it from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	if err := Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// Stop stops the server, if one was started, and removes its directory.
// A package with its own TestMain calls it after m.Run.
func Stop() error {
	mu.Lock()
	defer mu.Unlock()
	if current == nil {
		return nil
	}
	err := current.stop()
	current = nil
	return err
}

// URL returns the URL of a new database for t, already migrated, and drops
// the database when t ends. It skips t when PostgreSQL is not installed,
// or fails it under KANADE_REQUIRE_PG=1.
func URL(t testing.TB) string {
	t.Helper()
	return newDB(t, template)
}

// newDB creates a database from the template (and options) and drops it
// when t ends.
func newDB(t testing.TB, from string) string {
	t.Helper()
	s := get(t)
	name, err := s.createDB(from)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := s.dropDB(name); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return s.url(role, name)
}

// EmptyURL returns the URL of a new database for t that is not migrated
// (copied from template0), dropped when t ends. clause is appended to
// CREATE DATABASE, e.g. "LOCALE_PROVIDER icu ICU_LOCALE 'en'" for a
// database that sorts text by language rules; "" keeps the server's C
// locale.
func EmptyURL(t testing.TB, clause string) string {
	t.Helper()
	return newDB(t, "template0 "+clause)
}

// Tablespace creates a tablespace in dir (a directory the test owns,
// typically a storagetest.SmallDisk, so that a table moved there fills a
// real small filesystem) that the tests' role may use, and drops it when
// t ends. It returns the tablespace's name. Creating a tablespace needs
// the superuser, and its directory must belong to the user running the
// server, which this arranges.
func Tablespace(t testing.TB, dir string) string {
	t.Helper()
	s := get(t)
	loc := filepath.Join(dir, "tablespace")
	if err := os.Mkdir(loc, 0o700); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	cred, err := credential()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if cred != nil {
		if err := os.Chown(loc, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatalf("pgtest: hand %s to the postgres user: %v", loc, err)
		}
		// The server's user must be able to reach it through the test's
		// own (root-only) temporary directories.
		for d := dir; d != "/" && d != "."; d = filepath.Dir(d) {
			fi, err := os.Stat(d)
			if err != nil {
				t.Fatalf("pgtest: %v", err)
			}
			if fi.Mode().Perm()&0o001 == 0 {
				if err := os.Chmod(d, fi.Mode().Perm()|0o011); err != nil {
					t.Fatalf("pgtest: %v", err)
				}
			}
		}
	}
	s.adminMu.Lock()
	s.n++
	name := fmt.Sprintf("ts%d", s.n)
	s.adminMu.Unlock()
	for _, q := range []string{
		"CREATE TABLESPACE " + name + " LOCATION '" + strings.ReplaceAll(loc, "'", "''") + "'",
		"GRANT CREATE ON TABLESPACE " + name + " TO " + role,
	} {
		if err := s.exec(q); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
	}
	t.Cleanup(func() {
		if err := s.exec("DROP TABLESPACE IF EXISTS " + name); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return name
}

// Available reports whether PostgreSQL tests can run here (the binaries are
// installed), without starting a server.
func Available() bool {
	_, err := binDir()
	return err == nil
}

// get returns the running server, starting it on first use.
func get(t testing.TB) *server {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if !started {
		started = true
		current, startErr = start()
	}
	if startErr == nil && current == nil {
		startErr = errors.New("the server was stopped")
	}
	if startErr != nil {
		if errors.Is(startErr, errNoPostgres) && os.Getenv(RequireEnv) != "1" {
			t.Skipf("pgtest: %v; install postgresql or set %s (set %s=1 to fail instead of skipping)", startErr, BinEnv, RequireEnv)
		}
		t.Fatalf("pgtest: %v", startErr)
	}
	return current
}

// server is one running PostgreSQL.
type server struct {
	dir   string    // data/, the socket and server.log
	sh    *exec.Cmd // the watching shell, parent of postgres
	pipe  *os.File  // its stdin's write end: closing it stops the server
	admin *pgx.Conn // superuser session on the postgres database

	adminMu sync.Mutex
	n       int
}

// binDir finds the directory holding initdb and postgres: $KANADE_PG_BIN,
// else the newest /usr/lib/postgresql/<version>/bin (Debian, Ubuntu), else
// PATH.
func binDir() (string, error) {
	has := func(dir string) bool {
		for _, b := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if d := os.Getenv(BinEnv); d != "" {
		if !has(d) {
			return "", fmt.Errorf("%w in %s=%s", errNoPostgres, BinEnv, d)
		}
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(d string) int {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		return v
	}
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil && has(filepath.Dir(p)) {
		return filepath.Dir(p), nil
	}
	return "", errNoPostgres
}

// credential is who runs PostgreSQL: the postgres user when we are root,
// else nil (ourselves).
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and initdb refuses root: no postgres user to run it as: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("postgres user: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// serverSettings trade durability for speed and keep the server quiet; the
// data lives as long as the test binary.
var serverSettings = []string{
	"listen_addresses=", // the Unix socket only
	"fsync=off",
	"synchronous_commit=off",
	"full_page_writes=off",
	"autovacuum=off",
	"max_connections=200",
	"max_wal_size=1GB",
	"checkpoint_timeout=1h",
	"log_min_messages=warning",
	"deadlock_timeout=100ms", // the default 1 s would slow the deadlock tests
}

// watcher starts postgres in the background and stops it (fast shutdown),
// then removes the directory, once its stdin reaches EOF: when the test
// binary closes the pipe or dies.
const watcher = `
"$PGBIN/postgres" -D "$PGDIR/data" -k "$PGDIR" -p "$PGPORT" $PGOPTS >>"$PGDIR/server.log" 2>&1 </dev/null &
pid=$!
read -r _ || :
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$PGDIR"
`

func start() (*server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	// The socket path must fit in sun_path (108 bytes).
	tmp := os.TempDir()
	if len(tmp) > 60 {
		tmp = "/tmp"
	}
	dir, err := os.MkdirTemp(tmp, "kanade-pgtest-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("hand %s to the postgres user: %w", dir, err)
		}
	}
	s := &server{dir: dir}
	if err := s.initdb(bin, cred); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := s.launch(bin, cred); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := s.prepare(); err != nil {
		_ = s.stop()
		return nil, err
	}
	return s, nil
}

func (s *server) command(cred *syscall.Credential, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = s.dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "HOME=" + s.dir}
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	return cmd
}

func (s *server) initdb(bin string, cred *syscall.Credential) error {
	cmd := s.command(cred, filepath.Join(bin, "initdb"), "-D", filepath.Join(s.dir, "data"),
		"-U", superuser, "--auth=trust", "--locale=C", "--encoding=UTF8", "--no-sync", "--no-instructions")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	return nil
}

// launch starts the watching shell and waits until the server accepts
// connections.
func (s *server) launch(bin string, cred *syscall.Credential) error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("pipe: %w", err)
	}
	var opts []string
	for _, kv := range serverSettings {
		opts = append(opts, "-c", kv)
	}
	cmd := s.command(cred, "/bin/sh", "-c", watcher)
	cmd.Env = append(cmd.Env, "PGBIN="+bin, "PGDIR="+s.dir, "PGPORT="+strconv.Itoa(port), "PGOPTS="+strings.Join(opts, " "))
	cmd.Stdin = r
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return fmt.Errorf("start postgres: %w", err)
	}
	r.Close()
	s.sh, s.pipe = cmd, w

	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s.admin, err = pgx.Connect(ctx, s.url(superuser, "postgres"))
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
			_ = s.stop()
			return fmt.Errorf("postgres did not accept connections within 30s: %w\n%s", err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// prepare creates the tests' role and the migrated template database.
func (s *server) prepare() error {
	ctx := context.Background()
	for _, q := range []string{
		"CREATE ROLE " + role + " LOGIN",
		"CREATE DATABASE " + template + " OWNER " + role,
	} {
		if _, err := s.admin.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	st, err := storage.Open(ctx, storage.Options{URL: s.url(role, template), ReadConns: 1, WriteConns: 1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return fmt.Errorf("migrate the template database: %w", err)
	}
	return st.Close()
}

// url is the connection URL of database db as user, through the socket.
func (s *server) url(user, db string) string {
	q := url.Values{"host": {s.dir}, "port": {strconv.Itoa(port)}, "sslmode": {"disable"}}
	return "postgres://" + user + "@/" + db + "?" + q.Encode()
}

func (s *server) createDB(from string) (string, error) {
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	s.n++
	name := fmt.Sprintf("t%d", s.n)
	q := "CREATE DATABASE " + name + " OWNER " + role + " TEMPLATE " + from
	if _, err := s.admin.Exec(context.Background(), q); err != nil {
		return "", fmt.Errorf("%s: %w", q, err)
	}
	return name, nil
}

// exec runs q as the superuser.
func (s *server) exec(q string) error {
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	if s.admin == nil {
		return errors.New("the server was stopped")
	}
	if _, err := s.admin.Exec(context.Background(), q); err != nil {
		return fmt.Errorf("%s: %w", q, err)
	}
	return nil
}

// dropDB drops a test's database, closing any session a test left open.
func (s *server) dropDB(name string) error {
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	if s.admin == nil {
		return nil // stopped already: the whole server is gone
	}
	q := "DROP DATABASE " + name + " WITH (FORCE)"
	if _, err := s.admin.Exec(context.Background(), q); err != nil {
		return fmt.Errorf("%s: %w", q, err)
	}
	return nil
}

// stop closes the pipe, which makes the shell stop postgres and remove the
// directory, and waits for it.
func (s *server) stop() error {
	s.adminMu.Lock()
	if s.admin != nil {
		_ = s.admin.Close(context.Background())
		s.admin = nil
	}
	s.adminMu.Unlock()
	var errs []error
	if s.pipe != nil {
		errs = append(errs, s.pipe.Close())
		done := make(chan error, 1)
		go func() { done <- s.sh.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				errs = append(errs, fmt.Errorf("postgres watcher: %w", err))
			}
		case <-time.After(30 * time.Second):
			_ = s.sh.Process.Kill()
			errs = append(errs, errors.New("postgres did not stop within 30s"))
		}
		s.pipe = nil
	}
	errs = append(errs, os.RemoveAll(s.dir))
	return errors.Join(errs...)
}
