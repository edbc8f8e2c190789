package main

import (
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"kanade-backend/internal/apptest"
)

// The README's demo: a backend, then `kanade-fleet --agents 20` with every
// other flag at its default (30 s heartbeat, each agent at a random phase):
// all 20 are online within a minute.
func TestTwentyAgentsComeOnlineWithTheDefaults(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the first 30 s heartbeats")
	}
	t.Parallel()
	b := apptest.Start(t)
	var out lockedBuffer
	cmd := exec.Command(binary, "--nats-url", b.NATSURL, "--agents", "20")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("kanade-fleet exited with %v:\n%s", err, out.String())
			}
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("kanade-fleet did not stop on SIGTERM:\n%s", out.String())
		}
	})

	start := time.Now()
	apptest.Eventually(t, time.Minute, func() error {
		resp, _ := b.Do(t, "GET", "/api/agents?online=true&limit=1", nil)
		if n := resp.Header.Get("X-Total-Count"); n != "20" {
			return fmt.Errorf("%s agents online", n)
		}
		return nil
	})
	t.Logf("20 agents online %v after kanade-fleet started", time.Since(start).Round(100*time.Millisecond))
	if strings.Contains(out.String(), "level=ERROR") {
		t.Fatalf("kanade-fleet logged errors:\n%s", out.String())
	}
}
