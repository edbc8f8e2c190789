package pgtest_test

import (
	"bufio"
	"bytes"
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kanade-backend/storage"
	"kanade-backend/storage/pgtest"
)

const childEnv = "PGTEST_CHILD"

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestChild is the body of the child processes below; it does nothing in a
// normal run.
func TestChild(t *testing.T) {
	mode := os.Getenv(childEnv)
	if mode == "" {
		t.Skip("helper process only")
	}
	u := pgtest.URL(t)
	os.Stdout.WriteString("URL " + u + "\n")
	if mode == "crash" {
		// Exit without Stop, as a test binary killed by a timeout would.
		os.Exit(3)
	}
}

// serverDir reads the socket directory (the server's temp dir) out of a
// database URL.
func serverDir(t *testing.T, u string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	dir := p.Query().Get("host")
	if !strings.Contains(dir, "kanade-pgtest-") {
		t.Fatalf("socket dir %q is not the harness's temp dir", dir)
	}
	return dir
}

// processesIn lists the command lines of running processes that mention
// dir (postgres is started with -D <dir>/data).
func processesIn(dir string) []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(dir)) {
			out = append(out, string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
		}
	}
	return out
}

// runChild runs TestChild in a new test process and returns the URL it got.
func runChild(t *testing.T, mode string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	out, err := cmd.Output()
	if mode == "clean" && err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "URL "); ok {
			return u
		}
	}
	if strings.Contains(string(out), "SKIP") {
		t.Skipf("child skipped: %s", out)
	}
	t.Fatalf("child printed no URL: %v\n%s", err, out)
	return ""
}

// A test binary that ends normally (Main) leaves no server process and no
// directory behind by the time it has exited.
func TestMainStopsTheServer(t *testing.T) {
	dir := serverDir(t, runChild(t, "clean"))
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists after the test binary exited (stat: %v)", dir, err)
	}
	if ps := processesIn(dir); len(ps) > 0 {
		t.Errorf("processes left running: %q", ps)
	}
}

// A test binary that dies without stopping the server (a timeout, a crash)
// still leaves nothing behind: the watcher notices the closed pipe.
func TestServerDiesWithTheTestBinary(t *testing.T) {
	dir := serverDir(t, runChild(t, "crash"))
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := os.Stat(dir)
		ps := processesIn(dir)
		if os.IsNotExist(err) && len(ps) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("20 s after the crash: dir stat %v, processes %q", err, ps)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Each test gets its own database, copied from the migrated template:
// writes in one are invisible in another, and the tests' role is not a
// superuser.
func TestEachTestGetsItsOwnMigratedDatabase(t *testing.T) {
	ctx := context.Background()
	open := func(u string) *storage.Store {
		s, err := storage.Open(ctx, storage.Options{URL: u})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(pgtest.URL(t)), open(pgtest.URL(t))
	now := storage.T(time.Now())
	if _, err := a.W.NewInsert().Model(&storage.Agent{PcID: "pc-1", AgentVersion: "1", LastHeartbeat: now, UpdatedAt: now}).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := b.R.NewSelect().Model((*storage.Agent)(nil)).Count(ctx)
	if err != nil || n != 0 {
		t.Fatalf("second database sees n=%d err=%v, want an empty agents table", n, err)
	}
	var super bool
	if err := a.R.NewRaw("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(ctx, &super); err != nil || super {
		t.Fatalf("rolsuper=%v err=%v, want an ordinary role", super, err)
	}
}
