package app_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/cmd/kanade-backend/app"
	"kanade-backend/internal/apptest"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker"
)

// externalNATS is a nats-server the backend reaches over TCP, which a test
// stops and starts again on the same port and store, as an operator's
// NATS would go away and come back.
type externalNATS struct {
	t     *testing.T
	addr  string
	store string
	srv   *broker.Embedded
}

func startExternalNATS(t *testing.T) *externalNATS {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	n := &externalNATS{t: t, addr: addr, store: t.TempDir()}
	n.up()
	t.Cleanup(n.down)
	return n
}

func (n *externalNATS) url() string { return "nats://" + n.addr }

// up starts the server (again).
func (n *externalNATS) up() {
	n.t.Helper()
	srv, err := broker.StartEmbedded(broker.EmbeddedOptions{StoreDir: n.store, Listen: n.addr,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		n.t.Fatalf("start external nats: %v", err)
	}
	n.srv = srv
}

// down stops it; its streams stay on disk.
func (n *externalNATS) down() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv = nil
	}
}

func onExternal(n *externalNATS) apptest.Options {
	return apptest.Options{Configure: func(c *app.Config) { c.NATS.URL = n.url() }}
}

// timed sends a request and returns its status, body and duration.
func timed(t *testing.T, b *apptest.Backend, method, path string, body any) (int, string, time.Duration) {
	t.Helper()
	t0 := time.Now()
	resp, out := b.Do(t, method, path, body)
	return resp.StatusCode, string(out), time.Since(t0)
}

var helloJob = map[string]any{"id": "hello", "version": "1",
	"execute": map[string]any{"shell": "powershell", "script": "echo hi", "timeout": "1m"}}

// While NATS is away the operations that need it answer 503 "nats
// unavailable" at once, and what the database serves keeps answering.
func TestNATSOutageFailsFastAndServesReadsFromTheDatabase(t *testing.T) {
	n := startExternalNATS(t)
	b := apptest.Start(t, onExternal(n))
	seedAgent(t, b, "pc-1")
	b.JSON(t, http.MethodPost, "/api/jobs", helloJob, 200, nil)
	b.JSON(t, http.MethodPost, "/api/schedules", map[string]any{"id": "yearly", "cron": "0 0 0 1 1 *", "job_id": "hello",
		"target": map[string]any{"all": true}}, 200, nil)
	b.JSON(t, http.MethodPost, "/api/exec/hello", map[string]any{"target": map[string]any{"all": true}}, 200, nil)

	n.down()
	apptest.Eventually(t, 10*time.Second, func() error {
		if b.Conn.IsConnected() {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{http.MethodPost, "/api/exec/hello", map[string]any{"target": map[string]any{"all": true}}},
		{http.MethodPost, "/api/schedules", map[string]any{"id": "other", "cron": "0 0 0 1 1 *", "job_id": "hello", "target": map[string]any{"all": true}}},
		{http.MethodPost, "/api/jobs", helloJob},
		{http.MethodPost, "/api/schedules/yearly/run", nil},
	} {
		code, body, took := timed(t, b, c.method, c.path, c.body)
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "nats unavailable") {
			t.Errorf("%s %s during the outage: %d %s, want 503 nats unavailable", c.method, c.path, code, body)
		}
		if took > 3*time.Second {
			t.Errorf("%s %s took %v during the outage, want ≤ 3s", c.method, c.path, took)
		}
	}
	for _, path := range []string{"/api/schedules", "/api/jobs", "/api/executions", "/api/agents"} {
		code, body, took := timed(t, b, http.MethodGet, path, nil)
		if code != 200 || took > time.Second {
			t.Errorf("GET %s during the outage: %d in %v (%s), want 200 from the database", path, code, took, body)
		}
	}
	// Fleet health says degraded, at once, naming the missing resources.
	if code, body, took := timed(t, b, http.MethodGet, "/api/health/fleet", nil); code != 503 || took > 2*time.Second ||
		!strings.Contains(body, `"status":"degraded"`) {
		t.Errorf("fleet health during the outage: %d in %v %s", code, took, body)
	}
	var scheds []map[string]any
	b.JSON(t, http.MethodGet, "/api/schedules", nil, 200, &scheds)
	var jobs []map[string]any
	b.JSON(t, http.MethodGet, "/api/jobs", nil, 200, &jobs)
	if len(scheds) != 1 || scheds[0]["id"] != "yearly" || len(jobs) != 1 || jobs[0]["id"] != "hello" {
		t.Fatalf("during the outage: schedules %v, jobs %v", scheds, jobs)
	}

	// Back: the same calls work again without a restart.
	n.up()
	apptest.Eventually(t, 15*time.Second, func() error {
		code, body, _ := timed(t, b, http.MethodPost, "/api/exec/hello", map[string]any{"target": map[string]any{"all": true}})
		if code != 200 {
			return fmt.Errorf("exec after NATS came back: %d %s", code, body)
		}
		return nil
	})
	b.JSON(t, http.MethodDelete, "/api/schedules/yearly", nil, 204, nil)
	b.JSON(t, http.MethodGet, "/api/schedules", nil, 200, &scheds)
	if len(scheds) != 0 {
		t.Fatalf("schedules after delete: %v (the list reads its own writes)", scheds)
	}
}

// seedAgent records a PC that has just sent a heartbeat, so that a target
// reaches someone.
func seedAgent(t *testing.T, b *apptest.Backend, pc string) {
	t.Helper()
	now := storage.T(time.Now())
	if _, err := b.Store.W.NewInsert().Model(&storage.Agent{PcID: pc, AgentVersion: "0.21.2",
		LastHeartbeat: now, UpdatedAt: now}).Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// An EXEC stream that refuses writes fails the exec before any Command:
// 503 with the cause, nothing reaches an agent, and once the stream takes
// writes again the next exec works without a restart.
func TestExecStreamRefusingWritesPublishesNothing(t *testing.T) {
	b := apptest.Start(t)
	seedAgent(t, b, "pc-1")
	b.JSON(t, http.MethodPost, "/api/jobs", helloJob, 200, nil)
	cmds := make(chan string, 100)
	sub, err := b.Conn.Subscribe("commands.>", func(m *nats.Msg) {
		if !strings.HasPrefix(m.Subject, "commands.exec.") {
			cmds <- m.Subject
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	exec := map[string]any{"target": map[string]any{"pcs": []string{"pc-1"}}}
	b.JSON(t, http.MethodPost, "/api/exec/hello", exec, 200, nil)
	if s := <-cmds; s != "commands.pc.pc-1" {
		t.Fatalf("command on %s", s)
	}

	ctx := context.Background()
	limit := func(max int64, discard jetstream.DiscardPolicy) {
		t.Helper()
		st, err := b.JS.Stream(ctx, messages.StreamExec)
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.CachedInfo().Config
		cfg.MaxMsgs, cfg.Discard = max, discard
		if _, err := b.JS.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	st, err := b.JS.Stream(ctx, messages.StreamExec)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	limit(int64(info.State.Msgs), jetstream.DiscardNew) // full: every new record is refused

	for i := range 3 { // never wedged: each answers at once
		code, body, took := timed(t, b, http.MethodPost, "/api/exec/hello", exec)
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "exec record not stored") || took > 3*time.Second {
			t.Fatalf("exec %d on a full EXEC stream: %d in %v: %s; want 503 with the cause at once", i, code, took, body)
		}
	}
	select {
	case s := <-cmds:
		t.Fatalf("a command went out on %s although its exec was refused", s)
	case <-time.After(300 * time.Millisecond):
	}
	var failed int64
	failed, err = b.Store.R.NewSelect().Model((*storage.Execution)(nil)).Where("status = ?", storage.ExecFailed).Count(ctx)
	if err != nil || failed != 3 {
		t.Fatalf("%d failed executions (%v), want the 3 refused ones", failed, err)
	}

	limit(-1, jetstream.DiscardOld)
	b.JSON(t, http.MethodPost, "/api/exec/hello", exec, 200, nil)
	select {
	case s := <-cmds:
		if s != "commands.pc.pc-1" {
			t.Fatalf("command on %s", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no command after the stream was fixed")
	}
}

// Every instant of a */2 s schedule that falls in a NATS outage of 20 s is
// recorded once: fired, or skipped / failed / missed with its reason.
func TestEveryInstantOfAnOutageIsRecorded(t *testing.T) {
	n := startExternalNATS(t)
	b := apptest.Start(t, onExternal(n))
	seedAgent(t, b, "pc-1")
	b.JSON(t, http.MethodPost, "/api/jobs", helloJob, 200, nil)
	b.JSON(t, http.MethodPost, "/api/schedules", map[string]any{"id": "every2", "cron": "*/2 * * * * *", "job_id": "hello",
		"mode": "every_tick", "target": map[string]any{"pcs": []string{"pc-1"}}}, 200, nil)
	type tick struct {
		Outcome string    `json:"outcome"`
		Reason  string    `json:"reason"`
		Instant time.Time `json:"instant"`
	}
	ticks := func() []tick {
		var st struct {
			Status struct {
				LastTicks []tick `json:"last_ticks"`
			} `json:"status"`
		}
		b.JSON(t, http.MethodGet, "/api/schedules/every2", nil, 200, &st)
		return st.Status.LastTicks
	}
	apptest.Eventually(t, 10*time.Second, func() error {
		for _, tk := range ticks() {
			if tk.Outcome == messages.TickFired {
				return nil
			}
		}
		return fmt.Errorf("no fire yet")
	})

	down := time.Now()
	n.down()
	time.Sleep(20 * time.Second)
	n.up()
	up := time.Now()
	// Two more instants after NATS is back.
	time.Sleep(4500 * time.Millisecond)
	last := up.Add(4 * time.Second)

	byInstant := map[time.Time][]tick{}
	for _, tk := range ticks() {
		byInstant[tk.Instant.Truncate(time.Second)] = append(byInstant[tk.Instant.Truncate(time.Second)], tk)
	}
	first := down.Truncate(2 * time.Second).Add(2 * time.Second)
	outage, fired := 0, 0
	for i := first; !i.After(last); i = i.Add(2 * time.Second) {
		got := byInstant[i.UTC()]
		if len(got) != 1 {
			t.Errorf("instant %s: %d records, want exactly one (%+v)", i.Format("15:04:05"), len(got), got)
			continue
		}
		tk := got[0]
		switch tk.Outcome {
		case messages.TickFired:
			fired++
		case messages.TickSkipped, messages.TickFailed, messages.TickMissed:
			if tk.Reason == "" {
				t.Errorf("instant %s: %s without a reason", i.Format("15:04:05"), tk.Outcome)
			}
		default:
			t.Errorf("instant %s: outcome %q", i.Format("15:04:05"), tk.Outcome)
		}
		if i.Before(up) {
			if i.After(down.Add(time.Second)) && (tk.Outcome != messages.TickSkipped || !strings.HasPrefix(tk.Reason, "nats unavailable")) {
				t.Errorf("instant %s in the outage: %s %q, want skipped: nats unavailable", i.Format("15:04:05"), tk.Outcome, tk.Reason)
			}
			outage++
			t.Logf("%s %s %s", i.Format("15:04:05"), tk.Outcome, tk.Reason)
		}
	}
	if outage < 10 {
		t.Fatalf("%d instants during the outage, want at least 10", outage)
	}
	if fired == 0 {
		t.Fatal("no instant fired after NATS came back")
	}
}
