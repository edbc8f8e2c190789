package live_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"kanade-backend/actors/actorsys"
	"kanade-backend/actors/clock"
	"kanade-backend/actors/live"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage/broker/brokertest"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type env struct {
	t   *testing.T
	br  *brokertest.Broker
	sys *actor.ActorSystem
	clk *clock.Fake
	hub *live.Hub
	reg *prometheus.Registry

	stopped bool
}

// start runs a hub on a fake clock and a real NATS (with the live
// stream); the test fails if a goroutine is left behind after the hub
// stopped.
func start(t *testing.T, opts live.Options) *env {
	t.Helper()
	checkLeaks(t)
	return startOn(t, brokertest.Start(t), opts)
}

// checkLeaks fails the test if a goroutine started after it is still
// running once the test's cleanups (registered later, so run earlier: the
// hubs' stops and the broker's shutdown) are done.
func checkLeaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		goleak.VerifyNone(t, ignore,
			// The server's process-statistics timer outlives it briefly.
			goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server/pse.periodic"),
			// protoactor's dead-letter throttle ends by itself.
			goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
	})
}

// startOn runs a hub on br: several hubs on one broker are replicas.
func startOn(t *testing.T, br *brokertest.Broker, opts live.Options) *env {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	e := &env{t: t, br: br, sys: actorsys.New(logger), clk: clock.NewFake(t0), reg: prometheus.NewRegistry()}
	opts.JS, opts.Clock, opts.Logger, opts.Metrics = br.JS, e.clk, logger, e.reg
	hub, err := live.Start(e.sys, opts)
	if err != nil {
		t.Fatal(err)
	}
	e.hub = hub
	t.Cleanup(e.stop)
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
	if ev.ID != "1" || ev.Data.Count != 2 || ev.Data.Truncated || ev.Data.New != nil {
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

// A client reconnecting with Last-Event-ID gets the events it missed, from
// the hub's memory.
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
	if evs := waitFrames(t, again, 2); names(evs) != "audit,result" || evs[0].ID != "2" || evs[1].ID != "3" {
		t.Fatalf("replayed %+v", evs)
	}
	// Ids that are not sequences, or ahead of the stream, replay nothing.
	for _, id := range []string{"", "garbage", "1700000000-3", "99"} {
		c, _ := e.hub.Join(id)
		e.settle()
		if evs := take(t, c); len(evs) != 0 {
			t.Fatalf("Last-Event-ID %q replayed %s", id, names(evs))
		}
	}
}

// A client that missed more than the hub keeps in memory gets the rest
// from the stream, in order, then the live events, none twice; frames the
// stream no longer holds are announced with a reset.
func TestResumeReadsTheStream(t *testing.T) {
	e := start(t, live.Options{Replay: 3})
	e.settle()
	for i := 1; i <= 10; i++ {
		e.publish(&messages.AuditProjected{ID: int64(i)})
		e.advance(250 * time.Millisecond)
	}
	c, _ := e.hub.Join("2")
	// Events keep coming while it catches up.
	e.publish(&messages.AuditProjected{ID: 11})
	e.advance(250 * time.Millisecond)
	evs := waitFrames(t, c, 9)
	var ids []string
	for _, ev := range evs {
		ids = append(ids, ev.ID)
		if ev.Name != "audit" {
			t.Fatalf("event %+v", ev)
		}
	}
	if got := strings.Join(ids, ","); got != "3,4,5,6,7,8,9,10,11" {
		t.Fatalf("ids %s", got)
	}

	// Gone from the stream (as after its max age): reset, then what is left.
	st, err := e.br.JS.Stream(context.Background(), messages.StreamLive)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(context.Background(), jetstream.WithPurgeSequence(5)); err != nil {
		t.Fatal(err)
	}
	old, _ := e.hub.Join("1")
	evs = waitFrames(t, old, 8)
	if evs[0].Name != "reset" || evs[0].ID != "4" || evs[1].ID != "5" || evs[7].ID != "11" {
		t.Fatalf("after a purge: %+v", evs)
	}
}

// Two hubs on one NATS are two replicas: an event committed on one reaches
// the clients of both, with the same id, and a client of one resumes on
// the other.
func TestHubsShareTheStream(t *testing.T) {
	checkLeaks(t)
	br := brokertest.Start(t)
	a := startOn(t, br, live.Options{})
	b := startOn(t, br, live.Options{})
	onA, _ := a.hub.Join("")
	onB, leaveB := b.hub.Join("")
	a.settle()
	b.settle()
	a.publish(&messages.ResultsProjected{Results: []messages.ProjectedResult{{RequestID: "r1", PcID: "p"}}})
	a.settle()
	evA, evB := waitFrames(t, onA, 1), waitFrames(t, onB, 1)
	if evA[0].ID != evB[0].ID || evB[0].Name != "result" || !strings.Contains(string(evB[0].Data.Items[0]), `"r1"`) {
		t.Fatalf("A %+v, B %+v", evA, evB)
	}
	leaveB()
	b.publish(&messages.AuditProjected{ID: 9})
	b.settle()
	a.settle()
	resumed, _ := a.hub.Join(evB[0].ID)
	if evs := waitFrames(t, resumed, 1); evs[0].Name != "audit" {
		t.Fatalf("resumed on A: %+v", evs)
	}
}

// A heartbeat flush of 10 000 agents (one event, as the heartbeat
// projector sends it) is published as one coalesced event far below the
// NATS payload limit, and audit items too big together are left out until
// the event fits MaxBytes.
func TestEventsFitThePayloadLimit(t *testing.T) {
	e := start(t, live.Options{})
	e.settle()
	seen := &messages.AgentsSeen{}
	for i := 0; i < 10_000; i++ {
		seen.Agents = append(seen.Agents, messages.AgentSeen{PcID: fmt.Sprintf("PC-%05d", i), At: t0, AgentVersion: "0.30.1", New: true})
	}
	e.publish(seen)
	e.settle()
	raw, _ := json.Marshal(seen)
	msg := lastMessage(t, e)
	// NATS's default max_payload (1 MiB), which an external cluster may
	// keep; the embedded server allows more.
	const limit = 1 << 20
	t.Logf("10 000 agents: %d bytes as one AgentsSeen, %d bytes published (default payload limit %d)", len(raw), len(msg.Data), limit)
	if len(msg.Data) >= limit/4 || msg.Subject != "kanade.live.agent" {
		t.Fatalf("published %d bytes on %s", len(msg.Data), msg.Subject)
	}
	var p struct {
		Count, New int
		Items      []json.RawMessage
		Truncated  bool
	}
	if err := json.Unmarshal(msg.Data, &p); err != nil || p.Count != 10_000 || p.New != 10_000 || len(p.Items) != 100 || !p.Truncated {
		t.Fatalf("agent event: count %d new %d items %d truncated %v (%v)", p.Count, p.New, len(p.Items), p.Truncated, err)
	}

	e2 := start(t, live.Options{MaxBytes: 64 << 10})
	e2.settle()
	big := strings.Repeat("x", 10<<10)
	for i := 0; i < 20; i++ {
		e2.publish(&messages.AuditProjected{ID: int64(i), Event: messages.AuditEvent{Action: "job.put", Payload: map[string]any{"script": big}}})
	}
	e2.advance(250 * time.Millisecond)
	msg = lastMessage(t, e2)
	if err := json.Unmarshal(msg.Data, &p); err != nil || len(msg.Data) > 64<<10 || p.Count != 19 || len(p.Items) == 0 || len(p.Items) >= 19 || !p.Truncated {
		t.Fatalf("audit event of %d bytes: count %d items %d truncated %v (%v)", len(msg.Data), p.Count, len(p.Items), p.Truncated, err)
	}
}

// While NATS is away the hub keeps the events it produces and publishes
// them once it is back; its clients get them then, without a restart.
func TestEventsSurviveANATSRestart(t *testing.T) {
	e := start(t, live.Options{RetryEvery: 20 * time.Millisecond})
	ch, _ := e.hub.Join("")
	e.settle()
	e.br.Embedded.Server().Shutdown()
	eventually(t, func() bool { return !e.br.Conn.IsConnected() })
	e.publish(&messages.AuditProjected{ID: 42})
	if err := e.br.Embedded.Restart(); err != nil {
		t.Fatal(err)
	}
	evs := waitFrames(t, ch, 1)
	if evs[0].Name != "audit" || !strings.Contains(string(evs[0].Data.Items[0]), `"id":42`) {
		t.Fatalf("after the restart: %+v", evs)
	}
}

// Beyond its backlog the hub drops the oldest events it could not
// publish, and says so with a reset event once NATS is back, so that
// dashboards reload instead of missing them.
func TestBacklogOverflowEndsInAReset(t *testing.T) {
	e := start(t, live.Options{RetryEvery: 20 * time.Millisecond, Backlog: 2})
	ch, _ := e.hub.Join("")
	e.settle()
	e.br.Embedded.Server().Shutdown()
	eventually(t, func() bool { return !e.br.Conn.IsConnected() })
	// Four kinds: each is emitted at once (no throttle window to wait for).
	e.publish(&messages.AuditProjected{ID: 1})
	e.publish(&messages.ResultsProjected{Results: []messages.ProjectedResult{{RequestID: "r", PcID: "p"}}})
	e.publish(&messages.ExecProgressed{ExecID: "x", Status: "running"})
	e.publish(&messages.ScheduleTicked{ScheduleID: "s", Outcome: messages.TickSkipped})
	eventually(t, func() bool { return value(t, e.reg, "kanade_live_publish_dropped_total", "") == 2 })
	if err := e.br.Embedded.Restart(); err != nil {
		t.Fatal(err)
	}
	evs := waitFrames(t, ch, 3)
	if evs[2].Name != "reset" || evs[0].Name == "reset" || evs[1].Name == "reset" {
		t.Fatalf("after the outage: %s", names(evs))
	}
}

func eventually(t *testing.T, ok func() bool) {
	t.Helper()
	testsupport.Eventually(t, 10*time.Second, func() error {
		if !ok() {
			return errors.New("not yet")
		}
		return nil
	})
}

// lastMessage is the newest event of the live stream.
func lastMessage(t *testing.T, e *env) *jetstream.RawStreamMsg {
	t.Helper()
	st, err := e.br.JS.Stream(context.Background(), messages.StreamLive)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	msg, err := st.GetMsg(context.Background(), info.State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// waitFrames reads n event frames (keepalives skipped) within 10 s.
func waitFrames(t *testing.T, ch <-chan []byte, n int) []event {
	t.Helper()
	var out []event
	deadline := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case f, ok := <-ch:
			if !ok {
				t.Fatalf("closed after %d frames: %+v", len(out), out)
			}
			if ev := parse(t, string(f)); ev.Name != ":" {
				out = append(out, ev)
			}
		case <-deadline:
			t.Fatalf("%d of %d frames within 10 s: %+v", len(out), n, out)
		}
	}
	return out
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
	return testsupport.RequireMetric(t, reg, name, "event", event).Value
}

// Subscribing while others publish is race-free (the library's
// SubscribeWithPredicate is not; run with -race).
func TestSubscribeWhilePublishing(t *testing.T) {
	br := brokertest.Start(t)
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
	hub, err := live.Start(sys, live.Options{JS: br.JS, Logger: logger})
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
