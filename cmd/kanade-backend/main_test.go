package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"kanade-backend/cmd/internal/lease"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker/brokertest"
	"kanade-backend/storage/pgtest"
	"kanade-backend/storage/storagetest"
)

// These tests run the real binary as a subprocess: what an operator runs is
// what is tested, including signal handling and exit codes.

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kanade-backend-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "kanade-backend")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if err := pgtest.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		code = max(code, 1)
	}
	os.Exit(code)
}

type proc struct {
	cmd  *exec.Cmd
	log  *syncLog
	done chan error
}

// syncLog collects the child's stderr while the test reads it.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) WriteString(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(s)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	return startBinary(t, binary, env, args...)
}

// startBinary runs bin with args as a child process whose stderr is
// collected (and logged when the test fails); killed at cleanup.
func startBinary(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, log: &syncLog{}, done: make(chan error, 1)}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.log.WriteString(sc.Text() + "\n")
		}
	}()
	// exited is closed once Wait returned: the cleanup must not read
	// cmd.ProcessState, which Wait writes on its own goroutine (a data
	// race when the process ended by itself, as a fenced leader does),
	// nor take p.done, which the test may have taken.
	exited := make(chan struct{})
	go func() {
		<-copied
		err := cmd.Wait()
		close(exited)
		p.done <- err
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", filepath.Base(bin), p.log.String())
		}
	})
	return p
}

func waitHealth(t *testing.T, base string, within time.Duration) time.Duration {
	t.Helper()
	t0 := time.Now()
	for time.Since(t0) < within {
		resp, err := http.Get(base + "/health")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && string(body) == "ok" {
				return time.Since(t0)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("/health not 200 within %v", within)
	return 0
}

func (p *proc) sigterm(t *testing.T) {
	t.Helper()
	t0 := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
		if d := time.Since(t0); d > 10*time.Second {
			t.Fatalf("stop took %v, want ≤ 10s", d)
		}
	case <-time.After(12 * time.Second):
		t.Fatal("no exit within 12s of SIGTERM")
	}
}

func get(t *testing.T, url, token string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

type status struct {
	Streams []struct {
		Name   string
		Exists bool
	} `json:"streams"`
	KVBuckets []struct {
		Name   string
		Exists bool
	} `json:"kv_buckets"`
	ObjectStores []struct {
		Name   string
		Exists bool
	} `json:"object_stores"`
}

// wantAllResources requires /api/jetstream/status to list 5 streams, 7
// buckets and 1 object store, all existing.
func wantAllResources(t *testing.T, httpAddr, token string) {
	t.Helper()
	code, body := get(t, "http://"+httpAddr+"/api/jetstream/status", token)
	if code != 200 {
		t.Fatalf("status %d %s", code, body)
	}
	var st status
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Streams) != 6 || len(st.KVBuckets) != 8 || len(st.ObjectStores) != 1 {
		t.Fatalf("status = %s", body)
	}
	for _, r := range append(append(st.Streams, st.KVBuckets...), st.ObjectStores...) {
		if !r.Exists {
			t.Fatalf("%s missing: %s", r.Name, body)
		}
	}
}

// brokerResources describes every stream (KV buckets and object stores
// included) as a stock NATS client on the listen address sees them.
func brokerResources(t *testing.T, natsAddr string) map[string]string {
	t.Helper()
	_, js := testsupport.ConnectJS(t, "nats://"+natsAddr)
	return brokertest.DescribeStreams(t, js)
}

// Fresh data dir, generated token, a stock NATS client on the listen
// address, SIGTERM, a second start on the same data dir, clean database.
func TestBinaryStartStatusStopRestart(t *testing.T) {
	dataDir := t.TempDir()
	httpAddr, natsAddr := freePort(t), freePort(t)
	args := []string{"--bind", httpAddr, "--data-dir", dataDir, "--nats-listen", natsAddr}

	p := start(t, nil, args...)
	took := waitHealth(t, "http://"+httpAddr, 15*time.Second)
	t.Logf("first start to /health 200: %v", took)

	tokenFile := filepath.Join(dataDir, "admin.token")
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatalf("generated token file: %v", err)
	}
	if fi, _ := os.Stat(tokenFile); fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v, want 0600", fi.Mode().Perm())
	}
	if !strings.Contains(p.log.String(), tokenFile) || !strings.Contains(p.log.String(), "#token=") {
		t.Fatalf("log does not say where the token is / the dashboard URL:\n%s", p.log.String())
	}

	wantAllResources(t, httpAddr, strings.TrimSpace(string(tok)))

	// A stock NATS client sees the resources on the listen address.
	before := brokerResources(t, natsAddr)
	for _, name := range []string{"INVENTORY", "RESULTS", "EXEC", "EVENTS", "AUDIT", "KV_agent_groups", "KV_agents_state", "KV_agent_config",
		"KV_jobs", "KV_schedules", "KV_script_current", "KV_script_status", "OBJ_agent_releases"} {
		if _, ok := before[name]; !ok {
			t.Fatalf("stock client: no stream %s among %v", name, before)
		}
	}

	p.sigterm(t)
	wantEachLineOnce(t, "first start", p.log.String(), tokenFile)

	// Second start: same data dir, same token, nothing recreated.
	p2 := start(t, nil, args...)
	waitHealth(t, "http://"+httpAddr, 15*time.Second)
	tok2, _ := os.ReadFile(tokenFile)
	if string(tok2) != string(tok) {
		t.Fatal("second start replaced the token")
	}
	// The token was shown once, when generated; later starts say where it
	// is, never what it is.
	if log2 := p2.log.String(); strings.Contains(log2, strings.TrimSpace(string(tok))) || !strings.Contains(log2, tokenFile) {
		t.Fatalf("second start logs the token, or not where it is:\n%s", log2)
	}
	if strings.Contains(p2.log.String(), "database migrated") {
		t.Fatalf("second start migrated again:\n%s", p2.log.String())
	}
	wantAllResources(t, httpAddr, strings.TrimSpace(string(tok)))
	after := brokerResources(t, natsAddr)
	for name, was := range before {
		switch name {
		case "KV_" + lease.DefaultBucket, "KV_" + messages.BucketReplicas, messages.StreamLive:
			continue // the leader lease, the replica registry and the live events: rewritten while running, by design
		}
		if now, ok := after[name]; !ok || now != was {
			t.Fatalf("second start changed stream %s:\nbefore %s\nafter  %s", name, was, now)
		}
	}
	p2.sigterm(t)
	wantEachLineOnce(t, "second start", p2.log.String(), tokenFile)

	// The database opens cleanly afterwards.
	s, err := storage.Open(context.Background(), storage.Options{Path: filepath.Join(dataDir, "backend.db")})
	if err != nil {
		t.Fatalf("reopen database: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "backend.db-wal")); err == nil {
		if fi, _ := os.Stat(filepath.Join(dataDir, "backend.db-wal")); fi.Size() != 0 {
			t.Fatalf("WAL not checkpointed at stop: %d bytes", fi.Size())
		}
	}
}

// wantEachLineOnce fails when two lines of one run's log carry the same
// message, or more than one line speaks of the generated token (issue 16:
// the token message twice on first start, "dashboard ready" twice on a
// restart).
func wantEachLineOnce(t *testing.T, run, log, tokenFile string) {
	t.Helper()
	seen := map[string]int{}
	for _, line := range strings.Split(log, "\n") {
		_, rest, ok := strings.Cut(line, " msg=")
		if !ok {
			continue
		}
		msg := rest
		if strings.HasPrefix(rest, `"`) {
			if q, err := strconv.QuotedPrefix(rest); err == nil {
				msg = q
			}
		} else if i := strings.IndexByte(rest, ' '); i >= 0 {
			msg = rest[:i]
		}
		seen[msg]++
	}
	if len(seen) == 0 {
		t.Fatalf("%s: no log lines:\n%s", run, log)
	}
	for msg, n := range seen {
		if n > 1 {
			t.Errorf("%s logged %s %d times:\n%s", run, msg, n, log)
		}
	}
	if n := strings.Count(log, "#token="); n != 1 {
		t.Errorf("%s logged the dashboard URL %d times:\n%s", run, n, log)
	}
	if n := strings.Count(log, tokenFile); n != 1 {
		t.Errorf("%s named the token file on %d lines, want one:\n%s", run, n, log)
	}
}

func TestBinaryStaticToken(t *testing.T) {
	dataDir := t.TempDir()
	httpAddr := freePort(t)
	p := start(t, []string{"KANADE_AUTH_STATIC_TOKEN=s3cret"},
		"--bind", httpAddr, "--data-dir", dataDir, "--nats-listen", "off")
	base := "http://" + httpAddr
	waitHealth(t, base, 15*time.Second)

	code, body := get(t, base+"/api/jetstream/status", "")
	if code != 401 || strings.TrimSpace(string(body)) != `{"error":"missing bearer token"}` {
		t.Fatalf("no token: %d %s", code, body)
	}
	if code, body = get(t, base+"/api/jetstream/status", "wrong"); code != 401 ||
		strings.TrimSpace(string(body)) != `{"error":"invalid static token"}` {
		t.Fatalf("wrong token: %d %s", code, body)
	}
	if code, body = get(t, base+"/api/jetstream/status", "s3cret"); code != 200 {
		t.Fatalf("right token: %d %s", code, body)
	}
	if code, _ = get(t, base+"/health", ""); code != 200 {
		t.Fatalf("/health must stay public, got %d", code)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "admin.token")); !os.IsNotExist(err) {
		t.Fatalf("static token mode must not generate a token file (stat err %v)", err)
	}
	p.sigterm(t)
}

func TestBinaryRejectsBadConfig(t *testing.T) {
	cmd := exec.Command(binary, "--log-format", "xml", "--data-dir", t.TempDir())
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("exit = %v, want 2; output %s", err, out)
	}
	if !strings.Contains(string(out), `log format "xml"`) {
		t.Fatalf("output does not explain: %s", out)
	}
	out, err = exec.Command(binary, "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "kanade-backend ") {
		t.Fatalf("--version: %v %s", err, out)
	}
}

// A database on a read-only mount: the binary refuses to start, exits
// non-zero, and says in one line which file and why.
func TestBinaryRefusesReadOnlyDatabase(t *testing.T) {
	dbDir := storagetest.SmallDisk(t, 8<<20)
	dbPath := filepath.Join(dbDir, "backend.db")
	s, err := storage.Open(context.Background(), storage.Options{Path: dbPath, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	storagetest.ReadOnly(t, dbDir)
	cmd := exec.Command(binary, "--bind", freePort(t), "--data-dir", t.TempDir(), "--db", dbPath, "--nats-listen", "off")
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() == 0 {
		t.Fatalf("exit = %v, want non-zero; output:\n%s", err, out)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, dbPath) && strings.Contains(l, "not writable") && strings.Contains(l, "read-only file system") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || strings.Contains(string(out), "database ready") {
		t.Fatalf("want one line naming %s and the cause, and no \"database ready\"; output:\n%s", dbPath, out)
	}
	t.Logf("refused: %s", lines[0])
}

// The embedded NATS on a non-loopback address without a token starts, and
// refuses clients that present nothing (they need a credential); with
// --insecure-nats they are let in, as the open bus of old.
func TestBinaryNATSBeyondLoopbackWithoutToken(t *testing.T) {
	for _, insecure := range []bool{false, true} {
		port := freePort(t)
		_, p, _ := net.SplitHostPort(port)
		httpAddr := freePort(t)
		args := []string{"--data-dir", t.TempDir(), "--nats-listen", "0.0.0.0:" + p, "--bind", httpAddr}
		if insecure {
			args = append(args, "--insecure-nats")
		}
		proc := start(t, nil, args...)
		waitHealth(t, "http://"+httpAddr, 15*time.Second)
		nc, err := nats.Connect("nats://127.0.0.1:" + p)
		switch {
		case insecure && err != nil:
			t.Errorf("--insecure-nats: an anonymous client was refused: %v", err)
		case !insecure && !errors.Is(err, nats.ErrAuthorization):
			t.Errorf("without a token beyond loopback: an anonymous client got %v, want an authorization violation", err)
		}
		if nc != nil {
			nc.Close()
		}
		proc.sigterm(t)
	}
}
