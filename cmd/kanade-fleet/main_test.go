package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"kanade-backend/messages"
	"kanade-backend/storage/broker"
	"kanade-backend/storage/broker/brokertest"
)

// The binary as an operator runs it: it answers Commands, and SIGINT or
// SIGTERM stop it cleanly with a summary line and exit code 0.

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kanade-fleet-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "kanade-fleet")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// lockedBuffer collects the child's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestSignalsStopCleanly(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			b := brokertest.Start(t, brokertest.Options{Listen: "127.0.0.1:-1"})
			results := make(chan messages.ExecResult, 10)
			sub, err := b.Conn.Subscribe(messages.SubjectResultsAll, func(m *nats.Msg) {
				var r messages.ExecResult
				if json.Unmarshal(m.Data, &r) == nil {
					results <- r
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()

			var stdout, stderr lockedBuffer
			cmd := exec.Command(binary, "--nats-url", b.ClientURL(), "--agents", "5", "--heartbeat", "1s")
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			t.Cleanup(func() {
				if cmd.ProcessState == nil {
					_ = cmd.Process.Kill()
					<-done
				}
			})
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(stderr.String(), "simulated fleet started") {
				if time.Now().After(deadline) {
					t.Fatalf("fleet did not start:\n%s", stderr.String())
				}
				time.Sleep(20 * time.Millisecond)
			}

			job := "exec-1"
			c, _ := json.Marshal(messages.Command{ID: "hello", Version: "1", RequestID: "r-1", JobID: &job,
				Shell: messages.ShellCmd, Script: "echo hi", TimeoutSecs: 10})
			if err := b.Conn.Publish(messages.CommandsPCSubject("SIM-0003"), c); err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-results:
				if r.PcID != "SIM-0003" || r.Stdout != "hi\n" {
					t.Fatalf("result %+v", r)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("no result; log:\n%s", stderr.String())
			}

			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("exit: %v\n%s", err, stderr.String())
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("still running 10s after %v", sig)
			}
			// A stop the operator asked for is not a problem: no warning.
			if log := stderr.String(); strings.Contains(log, "level=WARN") || strings.Contains(log, "level=ERROR") {
				t.Fatalf("a normal stop logged a warning:\n%s", log)
			}
			if out := stdout.String(); !strings.HasPrefix(out, "kanade-fleet: agents=5 ") ||
				!strings.Contains(out, "commands_received=1 results_sent=1 dropped_pin_revoke=0") {
				t.Fatalf("summary = %q", out)
			}
		})
	}
}

// run starts the binary and returns its exit code, its log (stderr) and
// how long it ran; it fails the test when the binary outlives within.
func run(t *testing.T, within time.Duration, env []string, args ...string) (code int, log string, took time.Duration) {
	t.Helper()
	var out lockedBuffer
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(os.Environ(), env...)
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(within):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("kanade-fleet %v still running after %v:\n%s", args, within, out.String())
	}
	return cmd.ProcessState.ExitCode(), out.String(), time.Since(t0)
}

// Issue 16's acceptance: with nothing listening on the NATS URL the
// simulator does not wait silently; it logs each refused attempt and
// exits 1 after --connect-timeout (default 10 s), with the reason.
func TestUnreachableNATSExitsWithTheReason(t *testing.T) {
	t.Parallel()
	code, log, took := run(t, 15*time.Second, nil, "--nats-url", "nats://127.0.0.1:1")
	t.Logf("exit %d after %v", code, took.Round(10*time.Millisecond))
	if code == 0 || took > 11*time.Second || took < 9*time.Second {
		t.Fatalf("exit %d after %v, want non-zero after the 10 s default:\n%s", code, took, log)
	}
	if n := strings.Count(log, `msg="NATS connection attempt failed"`); n < 5 ||
		!strings.Contains(log, `reason="connection refused (nothing listens there`) || !strings.Contains(log, `msg="gave up connecting to NATS"`) {
		t.Fatalf("log does not say why (%d attempts logged):\n%s", n, log)
	}
}

// --assign-groups gives up the same way, and a wrong token is named as
// such rather than retried in silence.
func TestAssignGroupsAndAWrongTokenGiveUp(t *testing.T) {
	t.Parallel()
	code, log, _ := run(t, 10*time.Second, nil, "--nats-url", "nats://127.0.0.1:1", "--connect-timeout", "1s", "--assign-groups", "canary=5%")
	if code != 1 || !strings.Contains(log, "connection refused") {
		t.Fatalf("--assign-groups: exit %d:\n%s", code, log)
	}

	ns, err := broker.StartEmbedded(broker.EmbeddedOptions{StoreDir: t.TempDir(), Listen: "127.0.0.1:-1", Token: "right",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	code, log, took := run(t, 10*time.Second, []string{"KANADE_NATS_TOKEN=wrong"}, "--nats-url", ns.ClientURL(), "--connect-timeout", "1500ms")
	if code != 1 || took > 5*time.Second || !strings.Contains(log, `reason="authorization violation`) || !strings.Contains(log, "Authorization Violation") {
		t.Fatalf("wrong token: exit %d after %v:\n%s", code, took, log)
	}
}
