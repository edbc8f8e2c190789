package live_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"kanade-backend/actors/actorsys"
	"kanade-backend/actors/clock"
	"kanade-backend/actors/live"
	"kanade-backend/messages"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type env struct {
	t   *testing.T
	sys *actor.ActorSystem
	clk *clock.Fake
	hub *live.Hub
	reg *prometheus.Registry

	stopped bool
}

// start runs a hub on a fake clock; the test fails if a goroutine is left
// behind after the hub stopped.
func start(t *testing.T, opts live.Options) *env {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	e := &env{t: t, sys: actorsys.New(logger), clk: clock.NewFake(t0), reg: prometheus.NewRegistry()}
	opts.Clock, opts.Logger, opts.Metrics = e.clk, logger, e.reg
	hub, err := live.Start(e.sys, opts)
	if err != nil {
		t.Fatal(err)
	}
	e.hub = hub
	t.Cleanup(func() {
		e.stop()
		goleak.VerifyNone(t, ignore)
	})
	return e
}

func (e *env) stop() {
	if e.stopped {
		return
	}
	e.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := actorsys.Stop(ctx, e.sys, e.hub.PID()); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) publish(evt any) { e.sys.EventStream.Publish(evt) }

// settle waits until the hub handled everything published so far.
func (e *env) settle() {
	e.t.Helper()
	if err := e.hub.Barrier(5 * time.Second); err != nil {
		e.t.Fatal(err)
	}
}

// advance moves the fake clock (firing the hub's timers) and settles.
func (e *env) advance(d time.Duration) {
	e.settle()
	e.clk.Advance(d)
	e.settle()
}

type event struct {
	ID, Name string
	Data     struct {
		Count     int               `json:"count"`
		New       *int              `json:"new"`
		Items     []json.RawMessage `json:"items"`
		Truncated bool              `json:"truncated"`
	}
}

// take returns the frames queued for a client, parsed; comments are
// returned as events named ":".
func take(t *testing.T, ch <-chan []byte) []event {
	t.Helper()
	var out []event
	for {
		select {
		case f, ok := <-ch:
			if !ok {
				return append(out, event{Name: "closed"})
			}
			out = append(out, parse(t, string(f)))
		default:
			return out
		}
	}
}

func parse(t *testing.T, f string) event {
	t.Helper()
	if !strings.HasSuffix(f, "\n\n") {
		t.Fatalf("frame does not end with a blank line: %q", f)
	}
	var ev event
	for _, line := range strings.Split(strings.TrimSuffix(f, "\n\n"), "\n") {
		switch {
		case strings.HasPrefix(line, ":"):
			ev.Name = ":"
		case strings.HasPrefix(line, "id: "):
			ev.ID = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			ev.Name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.Data); err != nil {
				t.Fatalf("data of %q: %v", f, err)
			}
		default:
			t.Fatalf("unexpected line %q in frame %q", line, f)
		}
	}
	return ev
}

func names(evs []event) string {
	var s []string
	for _, e := range evs {
		s = append(s, e.Name)
	}
	return strings.Join(s, ",")
}

func TestResultEventShape(t *testing.T) {
	e := start(t, live.Options{})
	ch, _ := e.hub.Join("")
	e.settle()
	e.publish(&messages.ResultsProjected{Results: []messages.ProjectedResult{
		{RequestID: "r1", PcID: "pc-1", ExecID: "x1", JobID: "j1", ExitCode: 3, FinishedAt: t0},
		{RequestID: "r2", PcID: "pc-2", ExitCode: 0, FinishedAt: t0.Add(time.Second)},
	}})
	e.settle()
	evs := take(t, ch)
	if names(evs) != "result" {
		t.Fatalf("events %s", names(evs))
	}
	ev := evs[0]
	if !strings.HasSuffix(ev.ID, "-1") || ev.Data.Count != 2 || ev.Data.Truncated || ev.Data.New != nil {
		t.Fatalf("event %+v", ev)
	}
	want := []string{
		`{"request_id":"r1","pc_id":"pc-1","exec_id":"x1","job_id":"j1","exit_code":3,"status":"failure","finished_at":"2026-03-01T12:00:00Z"}`,
		`{"request_id":"r2","pc_id":"pc-2","exec_id":null,"job_id":null,"exit_code":0,"status":"success","finished_at":"2026-03-01T12:00:01Z"}`,
	}
	for i, w := range want {
		if string(ev.Data.Items[i]) != w {
			t.Errorf("item %d = %s\nwant %s", i, ev.Data.Items[i], w)
		}
	}
}

func TestEveryKind(t *testing.T) {
	e := start(t, live.Options{})
	ch, _ := e.hub.Join("")
	e.settle()
	target := "job-a"
	for _, evt := range []any{
		&messages.AgentsSeen{Agents: []messages.AgentSeen{{PcID: "pc-1", At: t0, AgentVersion: "0.21.2", New: true}}},
		&messages.ExecProgressed{ExecID: "x1", JobID: "j1", Status: "running", Expected: 3, Success: 1, At: t0},
		&messages.ScheduleTicked{ScheduleID: "s1", JobID: "j1", Outcome: messages.TickSkipped, Reason: "no eligible PCs", Instant: t0, At: t0},
		&messages.AuditProjected{ID: 7, Event: messages.AuditEvent{Actor: "operator", Action: "exec", Target: &target, OccurredAt: t0}},
		// Not a live event: ignored.
		"something else",
	} {
		e.publish(evt)
	}
	e.settle()
	evs := take(t, ch)
	if names(evs) != "agent,exec,schedule,audit" {
		t.Fatalf("events %s", names(evs))
	}
	for i, want := range []string{
		`{"pc_id":"pc-1","last_heartbeat":"2026-03-01T12:00:00Z","agent_version":"0.21.2","new":true}`,
		`{"exec_id":"x1","job_id":"j1","status":"running","expected_pcs":3,"success_count":1,"failure_count":0,"at":"2026-03-01T12:00:00Z"}`,
		`{"schedule_id":"s1","job_id":"j1","outcome":"skipped","reason":"no eligible PCs","exec_id":null,"pcs":0,"instant":"2026-03-01T12:00:00Z","at":"2026-03-01T12:00:00Z"}`,
		`{"id":7,"actor":"operator","action":"exec","target":"job-a","payload":{},"occurred_at":"2026-03-01T12:00:00Z"}`,
	} {
		if got := string(evs[i].Data.Items[0]); got != want {
			t.Errorf("%s item = %s\nwant %s", evs[i].Name, got, want)
		}
	}
	if evs[0].Data.New == nil || *evs[0].Data.New != 1 {
		t.Errorf("agent event new = %v", evs[0].Data.New)
	}
}

// 10 000 agents heartbeating in many flushes make one agent event at once
// and one per second after, each listing at most MaxItems PCs.
func TestAgentsAreThrottledAndCapped(t *testing.T) {
	e := start(t, live.Options{MaxItems: 100})
	ch, _ := e.hub.Join("")
	e.settle()
	flush := func(from, n int, isNew bool) {
		seen := &messages.AgentsSeen{}
		for i := from; i < from+n; i++ {
			seen.Agents = append(seen.Agents, messages.AgentSeen{PcID: fmt.Sprintf("pc-%05d", i), At: t0, New: isNew})
		}
		e.publish(seen)
	}
	flush(0, 1, true) // leading edge: sent at once
	e.settle()
	if evs := take(t, ch); names(evs) != "agent" || evs[0].Data.Count != 1 {
		t.Fatalf("leading event: %+v", evs)
	}
	for i := 0; i < 100; i++ {
		flush(i*100, 100, i == 0)
	}
	e.advance(999 * time.Millisecond)
	if evs := take(t, ch); len(evs) != 0 {
		t.Fatalf("events inside the window: %s", names(evs))
	}
	e.advance(time.Millisecond)
	evs := take(t, ch)
	if names(evs) != "agent" {
		t.Fatalf("window end: %s", names(evs))
	}
	d := evs[0].Data
	if d.Count != 10_000 || *d.New != 100 || len(d.Items) != 100 || !d.Truncated {
		t.Fatalf("coalesced agent event: count %d new %d items %d truncated %v", d.Count, *d.New, len(d.Items), d.Truncated)
	}
	// A quiet window closes the throttle; the next event is immediate again.
	e.advance(time.Second)
	if evs := take(t, ch); len(evs) != 0 {
		t.Fatalf("quiet window produced %s", names(evs))
	}
	flush(0, 1, false)
	e.settle()
	if evs := take(t, ch); names(evs) != "agent" {
		t.Fatalf("after a quiet window: %s", names(evs))
	}
}

// Exec progress keeps the latest state per exec within a window.
func TestExecLatestPerExec(t *testing.T) {
	e := start(t, live.Options{})
	ch, _ := e.hub.Join("")
	e.settle()
	e.publish(&messages.ExecProgressed{ExecID: "x0", Status: "pending"})
	for i := 1; i <= 5; i++ {
		e.publish(&messages.ExecProgressed{ExecID: "x1", Status: "running", Success: i})
		e.publish(&messages.ExecProgressed{ExecID: "x2", Status: "running", Failure: i})
	}
	e.advance(250 * time.Millisecond)
	evs := take(t, ch)
	if names(evs) != "exec,exec" || evs[1].Data.Count != 10 || len(evs[1].Data.Items) != 2 {
		t.Fatalf("events %+v", evs)
	}
	if !strings.Contains(string(evs[1].Data.Items[0]), `"success_count":5`) || !strings.Contains(string(evs[1].Data.Items[1]), `"failure_count":5`) {
		t.Fatalf("items %s", evs[1].Data.Items)
	}
}

// A client that does not read is disconnected when its buffer is full; the
// hub and the other clients carry on.
func TestSlowClientIsDropped(t *testing.T) {
	e := start(t, live.Options{ClientBuffer: 2})
	slow, _ := e.hub.Join("")
	fast, _ := e.hub.Join("")
	e.settle()
	for i := 0; i < 4; i++ {
		e.publish(&messages.AuditProjected{ID: int64(i)})
		e.advance(250 * time.Millisecond)
		if evs := take(t, fast); names(evs) != "audit" {
			t.Fatalf("fast client, round %d: %s", i, names(evs))
		}
	}
	if evs := take(t, slow); names(evs) != "audit,audit,closed" {
		t.Fatalf("slow client got %s", names(evs))
	}
	if got := value(t, e.reg, "kanade_live_events_dropped_total", "audit"); got != 1 {
		t.Errorf("dropped = %v", got)
	}
	if got := value(t, e.reg, "kanade_live_clients", ""); got != 1 {
		t.Errorf("clients = %v", got)
	}
	if got := value(t, e.reg, "kanade_live_events_sent_total", "audit"); got != 6 {
		t.Errorf("sent = %v, want 4 to the fast client and 2 to the slow one", got)
	}
}

func TestKeepaliveAndLeave(t *testing.T) {
	e := start(t, live.Options{Keepalive: 15 * time.Second})
	ch, leave := e.hub.Join("")
	e.advance(15 * time.Second)
	e.advance(15 * time.Second)
	if evs := take(t, ch); names(evs) != ":,:" {
		t.Fatalf("keepalives: %s", names(evs))
	}
	leave()
	e.settle()
	if evs := take(t, ch); names(evs) != "closed" {
		t.Fatalf("after leave: %s", names(evs))
	}
	if got := value(t, e.reg, "kanade_live_clients", ""); got != 0 {
		t.Errorf("clients = %v", got)
	}
}

// A client reconnecting with Last-Event-ID gets the events it missed.
func TestReplayOnReconnect(t *testing.T) {
	e := start(t, live.Options{})
	first, leave := e.hub.Join("")
	e.settle()
	e.publish(&messages.AuditProjected{ID: 1})
	e.settle()
	evs := take(t, first)
	leave()
	lastID := evs[0].ID
	// Missed while disconnected.
	e.advance(250 * time.Millisecond)
	e.publish(&messages.AuditProjected{ID: 2})
	e.publish(&messages.ResultsProjected{Results: []messages.ProjectedResult{{RequestID: "r", PcID: "p"}}})
	e.settle()

	again, _ := e.hub.Join(lastID)
	e.settle()
	if evs := take(t, again); names(evs) != "audit,result" {
		t.Fatalf("replayed %s", names(evs))
	}
	// Unknown or foreign ids replay nothing.
	for _, id := range []string{"", "garbage", "otherboot-0"} {
		c, _ := e.hub.Join(id)
		e.settle()
		if evs := take(t, c); len(evs) != 0 {
			t.Fatalf("Last-Event-ID %q replayed %s", id, names(evs))
		}
	}
}

// Stopping the hub ends every stream.
func TestStopClosesClients(t *testing.T) {
	e := start(t, live.Options{})
	ch, _ := e.hub.Join("")
	e.settle()
	e.stop()
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("frame after stop")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("client channel not closed by stop")
	}
}

// value reads one series of the hub's metrics; event "" means no label.
func value(t *testing.T, reg *prometheus.Registry, name, event string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "event" {
					got = l.GetValue()
				}
			}
			if got != event {
				continue
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no series %s{event=%q}", name, event)
	return 0
}

// Subscribing while others publish is race-free (the library's
// SubscribeWithPredicate is not; run with -race).
func TestSubscribeWhilePublishing(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	sys := actorsys.New(logger)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				sys.EventStream.Publish(&messages.AuditProjected{ID: 1})
			}
		}
	}()
	hub, err := live.Start(sys, live.Options{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if err := hub.Barrier(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := actorsys.Stop(ctx, sys, hub.PID()); err != nil {
		t.Fatal(err)
	}
}

// The engine's event carries the exec's waves; a result's event for the
// same exec in the same window keeps them, with its newer counters.
func TestExecWavesSurviveALaterResultInTheWindow(t *testing.T) {
	e := start(t, live.Options{})
	ch, _ := e.hub.Join("")
	e.settle()
	e.publish(&messages.ExecProgressed{ExecID: "x0", Status: "pending"}) // opens a window
	reason := "wave canary: 1 of 2 failed, max_failed 0"
	e.publish(&messages.ExecProgressed{ExecID: "x1", Status: "held", Expected: 2, Failure: 1, Waves: []messages.WaveProgress{
		{Index: 0, Group: "canary", State: "published", DueAt: t0},
		{Index: 1, Group: "wave1", State: "held", DueAt: t0.Add(time.Minute), Gated: true, Reason: &reason},
	}})
	e.publish(&messages.ExecProgressed{ExecID: "x1", Status: "held", Expected: 2, Success: 1, Failure: 1})
	e.advance(250 * time.Millisecond)
	evs := take(t, ch)
	if names(evs) != "exec,exec" || len(evs[1].Data.Items) != 1 {
		t.Fatalf("events %+v", evs)
	}
	want := `{"exec_id":"x1","job_id":"","status":"held","expected_pcs":2,"success_count":1,"failure_count":1,"at":"0001-01-01T00:00:00Z",` +
		`"waves":[{"wave_index":0,"group":"canary","state":"published","due_at":"2026-03-01T12:00:00Z","gated":false,"judge_at":null,"reason":null,"resumed_by":null,"expected_pcs":null,"success":0,"failure":0},` +
		`{"wave_index":1,"group":"wave1","state":"held","due_at":"2026-03-01T12:01:00Z","gated":true,"judge_at":null,"reason":"wave canary: 1 of 2 failed, max_failed 0","resumed_by":null,"expected_pcs":null,"success":0,"failure":0}]}`
	if got := string(evs[1].Data.Items[0]); got != want {
		t.Fatalf("item\n got %s\nwant %s", got, want)
	}
}
