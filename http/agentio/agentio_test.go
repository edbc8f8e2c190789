package agentio_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"kanade-backend/http/agentio"
	"kanade-backend/http/internal/fleettest"
	"kanade-backend/internal/apptest"
	"kanade-backend/messages"
)

func TestRunReturnsTheAgentsResult(t *testing.T) {
	b := apptest.Start(t)
	audit := fleettest.RecordAudit(t, b.Conn)
	agent := fleettest.StartAgent(t, b.NATSURL, "PC-1")

	var res messages.ExecResult
	b.JSON(t, http.MethodPost, "/api/run", map[string]any{"pc_id": "PC-1", "shell": "cmd", "script": "echo hi"}, 200, &res)
	if res.PcID != "PC-1" || res.Stdout != "hi\n" || res.ExitCode != 0 || res.ManifestID != nil {
		t.Fatalf("result: %+v", res)
	}
	cmds := agent.Commands()
	if len(cmds) != 1 {
		t.Fatalf("agent got %d commands", len(cmds))
	}
	c := cmds[0]
	if c.ID != messages.AdhocJobID || c.Version != messages.AdhocVersion || c.JobID != nil || c.Shell != messages.ShellCmd ||
		c.TimeoutSecs != 60 || c.JitterSecs != nil || c.RunAs != messages.RunAsSystem || c.RequestID != res.RequestID {
		t.Fatalf("command: %+v", c)
	}

	// job_id becomes the kill handle; shell defaults to powershell.
	b.JSON(t, http.MethodPost, "/api/run", map[string]any{
		"pc_id": "PC-1", "script": "Get-Date", "timeout_secs": 5, "job_id": "kill-me", "jitter_secs": 0,
	}, 200, &res)
	c = agent.Commands()[1]
	if c.JobID == nil || *c.JobID != "kill-me" || c.Shell != messages.ShellPowerShell || c.TimeoutSecs != 5 ||
		c.JitterSecs != nil || c.ID != messages.AdhocJobID {
		t.Fatalf("command with job_id: %+v", c)
	}

	evs := audit.Wait(t, messages.ActionExec, 2)
	ev := evs[0]
	if *ev.Target != messages.AdhocJobID || ev.Payload["pc_id"] != "PC-1" || ev.Payload["script"] != "echo hi" ||
		ev.Payload["exec_id"] != nil || ev.Payload["sub"] != "admin" {
		t.Fatalf("exec audit: %+v", ev)
	}
	if evs[1].Payload["exec_id"] != "kill-me" {
		t.Fatalf("exec audit with job_id: %+v", evs[1])
	}

	b.WantError(t, http.MethodPost, "/api/run", map[string]any{"pc_id": "PC-1", "shell": "bash", "script": "ls"}, 400,
		`unknown shell`)
	b.WantError(t, http.MethodPost, "/api/run", map[string]any{"pc_id": "PC.1", "script": "x"}, 400, "")
	b.WantError(t, http.MethodPost, "/api/run", map[string]any{"pc_id": "", "script": "x"}, 400, "")
	b.WantError(t, http.MethodPost, "/api/run", map[string]any{"pc_id": "PC-1", "script": " "}, 400, "script must not be empty")
	b.WantError(t, http.MethodPost, "/api/run", map[string]any{"pc_id": "PC-1", "script": "x", "timeout_secs": 0}, 400, "")
	b.WantError(t, http.MethodPost, "/api/run", map[string]any{"pc_id": "PC-1", "script": "x", "timeout_secs": -1}, 400, "")
	b.WantError(t, http.MethodPost, "/api/run", map[string]any{"pc_id": "PC-1", "script": "x", "job_id": "a b"}, 400, "")
	b.WantError(t, http.MethodPost, "/api/run", "not json", 400, "")
	b.WantError(t, http.MethodGet, "/api/run", nil, 405, "")

	resp, out := b.Do(t, http.MethodGet, "/metrics", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(out), `kanade_agent_requests_total{op="run",outcome="ok"} 2`) {
		t.Fatalf("metrics: %d\n%s", resp.StatusCode, grep(string(out), "kanade_agent"))
	}
}

// TestSlowAnswers covers the waits that end in a timeout. They take their
// real time (the 408 of /api/run is timeout_secs + 10 s), so they run in
// parallel to keep the suite short.
func TestSlowAnswers(t *testing.T) {
	b := apptest.Start(t)

	t.Run("run at an offline PC", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		b.WantError(t, http.MethodPost, "/api/run", map[string]any{"pc_id": "PC-OFF", "script": "echo hi", "timeout_secs": 1}, 408, "")
		if took := time.Since(start); took < 10500*time.Millisecond || took > 15*time.Second {
			t.Fatalf("408 after %v, want about 11s", took)
		}
	})
	t.Run("logs from an agent that never answers", func(t *testing.T) {
		t.Parallel()
		nc, err := nats.Connect(b.NATSURL)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		if _, err := nc.Subscribe(messages.LogsFetchSubject("PC-MUTE"), func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		b.WantError(t, http.MethodGet, "/api/agents/PC-MUTE/logs", nil, 504, "agent 'PC-MUTE' didn't reply within 10s")
		if took := time.Since(start); took < 9500*time.Millisecond {
			t.Fatalf("504 after %v, want about 10s", took)
		}
	})
	t.Run("ping an offline PC", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		b.WantError(t, http.MethodPost, "/api/agents/PC-OFF/ping?wait_secs=1", nil, 408, "no heartbeat from PC-OFF within 1s")
		if took := time.Since(start); took < 900*time.Millisecond {
			t.Fatalf("408 after %v", took)
		}
	})
}

func TestPing(t *testing.T) {
	b := apptest.Start(t)
	agent := fleettest.StartAgent(t, b.NATSURL, "PC-1")

	// The agent beats every 50 ms until the ping has answered; the ping
	// must return the first heartbeat after its subscription.
	stop := make(chan struct{})
	go func() {
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				_ = agent.Beat()
			}
		}
	}()
	var pr agentio.PingResponse
	out := b.JSON(t, http.MethodPost, "/api/agents/PC-1/ping?wait_secs=5", nil, 200, &pr)
	close(stop)
	if pr.Heartbeat.PcID != "PC-1" || pr.Heartbeat.AgentVersion != "0.21.2" || pr.Heartbeat.Hostname == nil {
		t.Fatalf("ping: %s", out)
	}
	if !strings.HasPrefix(string(out), `{"heartbeat":{"pc_id":"PC-1","at":"`) {
		t.Fatalf("wire form: %s", out)
	}

	b.WantError(t, http.MethodPost, "/api/agents/PC-1/ping?wait_secs=abc", nil, 400,
		`invalid wait_secs "abc": must be an integer between 1 and 600`)
	b.WantError(t, http.MethodPost, "/api/agents/PC-1/ping?wait_secs=0", nil, 400, "")
	b.WantError(t, http.MethodPost, "/api/agents/PC-1/ping?wait_secs=601", nil, 400, "")
	b.WantError(t, http.MethodPost, "/api/agents/a.b/ping", nil, 400, "")
	b.WantError(t, http.MethodGet, "/api/agents/PC-1/ping", nil, 405, "")
}

func TestLogs(t *testing.T) {
	b := apptest.Start(t)
	agent := fleettest.StartAgent(t, b.NATSURL, "PC-1")
	agent.Logs = "2026-05-20 agent started\nall good\n"

	req, _ := http.NewRequest(http.MethodGet, b.URL+"/api/agents/PC-1/logs?tail=7", nil)
	req.Header.Set("Authorization", "Bearer "+apptest.Token)
	resp, err := b.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" || string(body) != agent.Logs {
		t.Fatalf("logs: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	b.Do(t, http.MethodGet, "/api/agents/PC-1/logs", nil)
	reqs := agent.LogRequests()
	if len(reqs) != 2 || reqs[0].TailLines != 7 || reqs[1].TailLines != agentio.DefaultLogTail {
		t.Fatalf("logs.fetch requests: %+v", reqs)
	}

	b.WantError(t, http.MethodGet, "/api/agents/PC-GONE/logs", nil, 502, "no agent answers on logs.fetch.PC-GONE: is PC-GONE online?")
	b.WantError(t, http.MethodGet, "/api/agents/PC-1/logs?tail=x", nil, 400, `invalid tail "x": must be an integer between 1 and 100000`)
	b.WantError(t, http.MethodGet, "/api/agents/PC-1/logs?tail=0", nil, 400, "")
	b.WantError(t, http.MethodGet, "/api/agents/P*/logs", nil, 400, "")
	b.WantError(t, http.MethodPost, "/api/agents/PC-1/logs", nil, 405, "")
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestStopEndsWaits starts a run and a ping that would wait a minute, then
// stops the backend: both answer 503 at once and the graceful stop stays
// within its bound.
func TestStopEndsWaits(t *testing.T) {
	b, stop := apptest.StartManual(t)
	type answer struct {
		status int
		body   string
	}
	answers := make(chan answer, 2)
	for _, req := range []struct{ path, body string }{
		{"/api/run", `{"pc_id":"PC-OFF","script":"echo hi","timeout_secs":60}`},
		{"/api/agents/PC-OFF/ping?wait_secs=60", ""},
	} {
		go func() {
			hreq, _ := http.NewRequest(http.MethodPost, b.URL+req.path, strings.NewReader(req.body))
			hreq.Header.Set("Authorization", "Bearer "+apptest.Token)
			resp, err := b.Client.Do(hreq)
			if err != nil {
				answers <- answer{0, err.Error()}
				return
			}
			out, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			answers <- answer{resp.StatusCode, string(out)}
		}()
	}
	// Both are waiting once the server holds their subscriptions: the
	// run's on its results subject, the ping's on the PC's heartbeats.
	srv := b.App.NATSServer.Server()
	apptest.Eventually(t, 10*time.Second, func() error {
		sz, err := srv.Subsz(&server.SubszOptions{Subscriptions: true, Limit: 100_000})
		if err != nil {
			return err
		}
		run, ping := false, false
		for _, sub := range sz.Subs {
			run = run || strings.HasPrefix(sub.Subject, "results.") && sub.Subject != messages.SubjectResultsAll
			ping = ping || sub.Subject == messages.HeartbeatSubject("PC-OFF")
		}
		if !run || !ping {
			return fmt.Errorf("waiting: run %v, ping %v", run, ping)
		}
		return nil
	})
	start := time.Now()
	stop()
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("stop took %v", took)
	}
	for range 2 {
		a := <-answers
		if a.status != http.StatusServiceUnavailable || !strings.Contains(a.body, "backend is shutting down") {
			t.Fatalf("answer during stop: %d %s", a.status, a.body)
		}
	}
}
