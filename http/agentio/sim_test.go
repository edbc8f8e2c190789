package agentio_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"kanade-backend/http/agentio"
	"kanade-backend/internal/apptest"
	"kanade-backend/internal/sim"
	"kanade-backend/messages"
)

// TestWithSimulatedFleet drives run, ping and logs end to end against the
// fleet simulator, which speaks the agent side of the wire contract
// (version pins, kill.<job_id>, heartbeats, logs.fetch).
func TestWithSimulatedFleet(t *testing.T) {
	b := apptest.Start(t)
	fleet := b.StartFleet(t, sim.Config{Agents: 3, Heartbeat: 200 * time.Millisecond, Seed: 42})
	pcs := fleet.PCIDs()

	t.Run("run", func(t *testing.T) {
		var res messages.ExecResult
		b.JSON(t, http.MethodPost, "/api/run", map[string]any{"pc_id": pcs[0], "shell": "cmd", "script": "echo hi"}, 200, &res)
		if res.PcID != pcs[0] || res.ExitCode != 0 || strings.TrimSpace(res.Stdout) != "hi" || res.FinishedAt.Before(res.StartedAt) {
			t.Fatalf("echo hi: %+v", res)
		}
		b.JSON(t, http.MethodPost, "/api/run", map[string]any{"pc_id": pcs[1], "script": "echo before\nexit 3"}, 200, &res)
		if res.PcID != pcs[1] || res.ExitCode != 3 {
			t.Fatalf("exit 3: %+v", res)
		}
	})

	t.Run("job_id is the kill handle", func(t *testing.T) {
		done := make(chan messages.ExecResult, 1)
		go func() {
			var res messages.ExecResult
			b.JSON(t, http.MethodPost, "/api/run", map[string]any{
				"pc_id": pcs[2], "script": "sleep 30s", "timeout_secs": 60, "job_id": "adhoc-kill-test",
			}, 200, &res)
			done <- res
		}()
		// Kill until the run ends: the first kill may beat the Command.
		deadline := time.After(10 * time.Second)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case res := <-done:
				if res.ExitCode != -1 {
					t.Fatalf("killed run: %+v", res)
				}
				return
			case <-tick.C:
				if err := b.Conn.Publish(messages.KillSubject("adhoc-kill-test"), nil); err != nil {
					t.Fatal(err)
				}
			case <-deadline:
				t.Fatal("run not killed within 10s")
			}
		}
	})

	t.Run("ping", func(t *testing.T) {
		var pr agentio.PingResponse
		b.JSON(t, http.MethodPost, "/api/agents/"+pcs[1]+"/ping?wait_secs=5", nil, 200, &pr)
		if pr.Heartbeat.PcID != pcs[1] || pr.Heartbeat.AgentVersion != sim.DefaultAgentVersion || pr.Heartbeat.At.IsZero() {
			t.Fatalf("ping: %+v", pr)
		}
	})

	t.Run("logs", func(t *testing.T) {
		resp, out := b.Do(t, http.MethodGet, "/api/agents/"+pcs[0]+"/logs?tail=2", nil)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Fatalf("logs: %d %s", resp.StatusCode, out)
		}
		lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
		if len(lines) == 0 || len(lines) > 2 || !strings.Contains(string(out), "kanade_agent") {
			t.Fatalf("logs tail=2: %q", out)
		}
		// (No 502 case here: the simulator answers logs.fetch.* for its
		// whole fleet with one wildcard subscription, so it is a
		// responder even for PCs it does not have; TestLogs covers 502.)
	})
}
