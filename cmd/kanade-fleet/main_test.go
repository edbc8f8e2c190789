package main

import (
	"bytes"
	"encoding/json"
	"fmt"
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
			if out := stdout.String(); !strings.HasPrefix(out, "kanade-fleet: agents=5 ") ||
				!strings.Contains(out, "commands_received=1 results_sent=1 dropped_pin_revoke=0") {
				t.Fatalf("summary = %q", out)
			}
		})
	}
}
