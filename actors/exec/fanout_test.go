package exec_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

// One exec at all + a group + a PC: three subjects in the documented order,
// three request_ids sharing the exec_id as job_id, the version pin visible
// to whoever receives the first Command, and the rows, audit event and
// progress event that describe it.
func TestExecPublishesEverySubjectInOrderAfterThePin(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.putJob("job1", "1.0.1", "echo hi")
	pins := e.br.KV(t, messages.BucketScriptCurrent)
	if _, err := pins.Put(ctx, "job1", []byte("0.9.0")); err != nil {
		t.Fatal(err)
	}
	e.agent("a1", "a")
	e.agent("a2")

	// An "agent" on its own connection reads the pin the moment the first
	// Command arrives, as a real agent does before running it.
	nc2, err := nats.Connect("", nats.InProcessServer(e.br.Server))
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	js2, err := jetstream.New(nc2)
	if err != nil {
		t.Fatal(err)
	}
	kv2, err := js2.KeyValue(ctx, messages.BucketScriptCurrent)
	if err != nil {
		t.Fatal(err)
	}
	pinSeen := make(chan string, 1)
	var first atomic.Bool
	sub, err := nc2.Subscribe("commands.>", func(*nats.Msg) {
		if first.Swap(true) {
			return
		}
		entry, err := kv2.Get(context.Background(), "job1")
		if err != nil {
			pinSeen <- "error: " + err.Error()
			return
		}
		pinSeen <- string(entry.Value())
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc2.Flush(); err != nil {
		t.Fatal(err)
	}

	cmds := e.recordCommands()
	audits := e.record("audit.>")
	events := make(chan *messages.ExecProgressed, 4)
	es := e.sys.EventStream.Subscribe(func(ev any) {
		if p, ok := ev.(*messages.ExecProgressed); ok {
			events <- p
		}
	})
	defer e.sys.EventStream.Unsubscribe(es)
	e.start()

	resp := e.mustExec(`{"target":{"all":true,"groups":["a"],"pcs":["p1"]}}`)
	wantSubjects := []string{"commands.all", "commands.group.a", "commands.pc.p1"}
	if resp.TargetCount != 3 || strings.Join(resp.Subjects, " ") != strings.Join(wantSubjects, " ") ||
		resp.JobID != "job1" || resp.Version != "1.0.1" || resp.ExpectedPcs != 3 {
		t.Fatalf("response = %+v", resp)
	}

	cmds.waitN(t, 3)
	if got := cmds.subjects(); strings.Join(got, " ") != strings.Join(wantSubjects, " ") {
		t.Fatalf("published subjects = %v, want %v", got, wantSubjects)
	}
	seenIDs := map[string]bool{}
	for _, c := range cmds.commands(t) {
		if c.JobID == nil || *c.JobID != resp.ExecID {
			t.Errorf("job_id = %v, want exec_id %s", c.JobID, resp.ExecID)
		}
		if seenIDs[c.RequestID] {
			t.Errorf("request_id %s reused", c.RequestID)
		}
		seenIDs[c.RequestID] = true
		if c.ID != "job1" || c.Version != "1.0.1" || c.Script != "echo hi" || c.TimeoutSecs != 30 ||
			c.JitterSecs != nil || c.RunAs != messages.RunAsSystem {
			t.Errorf("command = %+v", c)
		}
	}
	select {
	case pin := <-pinSeen:
		if pin != "1.0.1" {
			t.Fatalf("script_current[job1] seen by the first receiver = %q, want 1.0.1 (pin written before publishing)", pin)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the pin reader never ran")
	}

	ex := e.execution(resp.ExecID)
	if ex.Status != storage.ExecPending || ex.TargetCount != 3 || ex.ExpectedPcs != 3 ||
		ex.InitiatedBy != "operator:alice" || ex.JobID != "job1" || ex.Version != "1.0.1" || ex.TimeoutSecs != 30 {
		t.Fatalf("executions row = %+v", ex)
	}
	if want := t0.Add(30*time.Second + 60*time.Second); !ex.DeadlineAt.Equal(want) {
		t.Errorf("deadline_at = %v, want %v", ex.DeadlineAt, want)
	}
	var rowSubjects []string
	if err := json.Unmarshal(ex.Subjects, &rowSubjects); err != nil || len(rowSubjects) != 3 {
		t.Errorf("row subjects = %s (%v)", ex.Subjects, err)
	}
	if got := strings.Join(e.expected(resp.ExecID), ","); got != "a1,a2,p1" {
		t.Errorf("expected PCs = %s, want a1,a2,p1", got)
	}
	reqs := e.requests(resp.ExecID)
	if len(reqs) != 3 {
		t.Fatalf("exec_requests = %d rows, want 3", len(reqs))
	}
	for _, r := range reqs {
		if !seenIDs[r.RequestID] || r.PublishedAt.IsZero() {
			t.Errorf("exec_requests row %+v: unknown request_id or not stamped published", r)
		}
	}

	audits.waitN(t, 1)
	var ev messages.AuditEvent
	if err := json.Unmarshal(audits.all()[0].Data, &ev); err != nil {
		t.Fatal(err)
	}
	p := ev.Payload
	if ev.Actor != "operator" || ev.Action != "exec" || ev.Target == nil || *ev.Target != "job1" ||
		p["exec_id"] != resp.ExecID || p["version"] != "1.0.1" || fmt.Sprint(p["target_count"]) != "3" ||
		p["wave_mode"] != false || p["sub"] != "alice" || p["source"] != "test" ||
		fmt.Sprint(p["subjects"]) != "[commands.all commands.group.a commands.pc.p1]" {
		t.Fatalf("audit event = %+v", ev)
	}

	select {
	case pe := <-events:
		if pe.ExecID != resp.ExecID || pe.Status != storage.ExecPending || pe.Expected != 3 {
			t.Fatalf("ExecProgressed = %+v", pe)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no ExecProgressed event")
	}
}

// Every refusal carries the api.md text and the error kind that maps to
// its status, and nothing is pinned, recorded or published.
func TestExecRejectsBadRequestsWithTheAPITexts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.putJob("job1", "1.0.0", "echo")
	e.putRaw("badtimeout", []byte(`{"id":"badtimeout","version":"1","description":null,"execute":{"shell":"cmd","script":"x","timeout":"abc"},"require_approval":false,"inventory":null}`))
	e.putRaw("badshell", []byte(`{"id":"badshell","version":"1","execute":{"shell":"bash","script":"x","timeout":"1m"}}`))
	e.putRaw("renamed", []byte(`{"id":"other","version":"1","execute":{"shell":"cmd","script":"x","timeout":"1m"}}`))
	e.putRaw("garbage", []byte(`not json`))
	cmds := e.recordCommands()
	e.start()

	cases := []struct {
		name, job, plan string
		status          int
		text            string // exact, or a prefix when it ends with "…"
	}{
		{"unknown job", "nope", `{"target":{"all":true}}`, http.StatusNotFound, "job 'nope' not found in catalog"},
		{"no target", "job1", `{}`, http.StatusBadRequest, "target must specify at least one of all / groups / pcs (or set rollout.waves)"},
		{"empty lists", "job1", `{"target":{"groups":[],"pcs":[],"all":false}}`, http.StatusBadRequest, "target must specify at least one of all / groups / pcs (or set rollout.waves)"},
		{"bad jitter", "job1", `{"target":{"all":true},"jitter":"soon"}`, http.StatusBadRequest, "invalid jitter: …"},
		{"bad wave delay", "job1", `{"rollout":{"waves":[{"group":"a","delay":"0s"},{"group":"b","delay":"later"}]}}`, http.StatusBadRequest, "invalid rollout.waves[1].delay: …"},
		{"bad timeout", "badtimeout", `{"target":{"all":true}}`, http.StatusBadRequest, "invalid timeout: …"},
		{"bad group", "job1", `{"target":{"groups":["a.b"]}}`, http.StatusBadRequest, `invalid group "a.b": …`},
		{"bad pc", "job1", `{"target":{"pcs":["x y"]}}`, http.StatusBadRequest, `invalid pc_id "x y": …`},
		{"bad wave group", "job1", `{"rollout":{"waves":[{"group":"*","delay":"0s"}]}}`, http.StatusBadRequest, `rollout.waves[0]: invalid group "*": …`},
		{"bad job id", "a.b", `{"target":{"all":true}}`, http.StatusBadRequest, `invalid job id "a.b": …`},
		{"bad shell in catalog", "badshell", `{"target":{"all":true}}`, http.StatusBadRequest, `unknown shell "bash"`},
		{"key and id differ", "renamed", `{"target":{"all":true}}`, http.StatusBadRequest, "job 'renamed' in catalog carries id 'other'; post it again"},
		{"undecodable catalog value", "garbage", `{"target":{"all":true}}`, http.StatusBadRequest, "job 'garbage' in catalog is not a valid manifest: …"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.execJob(c.job, c.plan)
			if err == nil {
				t.Fatal("exec accepted")
			}
			if got := statusOf(err); got != c.status {
				t.Errorf("status = %d, want %d (%v)", got, c.status, err)
			}
			if prefix, ok := strings.CutSuffix(c.text, "…"); ok {
				if !strings.HasPrefix(err.Error(), prefix) {
					t.Errorf("text = %q, want prefix %q", err.Error(), prefix)
				}
			} else if err.Error() != c.text {
				t.Errorf("text = %q, want %q", err.Error(), c.text)
			}
		})
	}
	n, err := e.store.R.NewSelect().Model((*storage.Execution)(nil)).Count(context.Background())
	if err != nil || n != 0 {
		t.Fatalf("executions rows = %d (%v), want 0", n, err)
	}
	if _, err := e.br.KV(t, messages.BucketScriptCurrent).Get(context.Background(), "job1"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("script_current[job1] written by a refused exec: %v", err)
	}
	cmds.quiet(t, 0, 50*time.Millisecond)
}

// The manifest is read at fire time: an edit applies to the next exec.
func TestJobEditAppliesToTheNextExec(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cmds := e.recordCommands()
	e.start()
	e.putJob("job1", "1.0.0", "echo one")
	e.mustExec(`{"target":{"pcs":["p1"]}}`)
	e.putJob("job1", "1.1.0", "echo two")
	r2 := e.mustExec(`{"target":{"pcs":["p1"]},"jitter":"90s"}`)
	cmds.waitN(t, 2)
	got := cmds.commands(t)
	if got[0].Version != "1.0.0" || got[0].Script != "echo one" || got[1].Version != "1.1.0" || got[1].Script != "echo two" {
		t.Fatalf("commands = %+v", got)
	}
	if got[1].JitterSecs == nil || *got[1].JitterSecs != 90 {
		t.Fatalf("jitter_secs = %v, want 90", got[1].JitterSecs)
	}
	entry, err := e.br.KV(t, messages.BucketScriptCurrent).Get(context.Background(), "job1")
	if err != nil || string(entry.Value()) != "1.1.0" {
		t.Fatalf("pin = %v (%v), want 1.1.0", entry, err)
	}
	if ex := e.execution(r2.ExecID); !ex.DeadlineAt.Equal(t0.Add(30*time.Second + 90*time.Second + 60*time.Second)) {
		t.Fatalf("deadline_at = %v: want created + timeout + jitter + 60s", ex.DeadlineAt)
	}
}

// A PC listed twice receives the Command once.
func TestDuplicateTargetsArePublishedOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cmds := e.recordCommands()
	e.start()
	e.putJob("job1", "1", "echo")
	r := e.mustExec(`{"target":{"groups":["g","g"],"pcs":["p1","p1"]}}`)
	if r.TargetCount != 2 {
		t.Fatalf("target_count = %d, want 2", r.TargetCount)
	}
	cmds.waitN(t, 2)
}

// failingPublisher is the real connection with one publish made to fail,
// to observe what the engine records when NATS breaks mid fan-out.
type failingPublisher struct {
	nc     *nats.Conn
	n      atomic.Int32
	failAt atomic.Int32
}

func (f *failingPublisher) Publish(subject string, data []byte) error {
	if f.n.Add(1) == f.failAt.Load() {
		return nats.ErrConnectionClosed
	}
	return f.nc.Publish(subject, data)
}

func (f *failingPublisher) FlushTimeout(d time.Duration) error { return f.nc.FlushTimeout(d) }

func TestPublishFailureRecordsWhatWasPublished(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	fp := &failingPublisher{nc: e.br.Conn}
	e.nats = fp
	cmds := e.recordCommands()
	e.start()
	e.putJob("job1", "1", "echo")
	ctx := context.Background()

	// One Command out of three went out: the answer is what was
	// published, not an error the caller would retry into a second run.
	fp.failAt.Store(2)
	r, err := e.exec(`{"target":{"pcs":["p1","p2","p3"]}}`)
	if err != nil || r.TargetCount != 1 || strings.Join(r.Subjects, ",") != "commands.pc.p1" {
		t.Fatalf("partial publish answered %+v, %v; want 200 with the one subject published", r, err)
	}
	cmds.waitN(t, 1)
	var ex storage.Execution
	if err := e.store.R.NewSelect().Model(&ex).Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if ex.TargetCount != 1 || string(ex.Subjects) != `["commands.pc.p1"]` || ex.Error == nil ||
		ex.Status != storage.ExecPending || ex.ExpectedPcs != 1 {
		t.Fatalf("row after partial failure = %+v (error %v)", ex, ex.Error)
	}
	if got := strings.Join(e.expected(ex.ExecID), ","); got != "p1" {
		t.Fatalf("expected = %s, want p1", got)
	}
	published := 0
	for _, r := range e.requests(ex.ExecID) {
		if !r.PublishedAt.IsZero() {
			published++
			if r.Subject != "commands.pc.p1" {
				t.Errorf("%s marked published", r.Subject)
			}
		}
	}
	if published != 1 {
		t.Fatalf("%d request_ids marked published, want 1", published)
	}

	// Nothing published at all: the exec is failed, and its waves never run.
	fp.n.Store(0)
	fp.failAt.Store(1)
	_, err = e.exec(`{"rollout":{"waves":[{"group":"a","delay":"0s"},{"group":"b","delay":"5s"}]}}`)
	if statusOf(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "nats unavailable") {
		t.Fatalf("err = %v (status %d), want 503 nats unavailable", err, statusOf(err))
	}
	var failed storage.Execution
	if err := e.store.R.NewSelect().Model(&failed).Where("exec_id != ?", ex.ExecID).Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if failed.Status != storage.ExecFailed || failed.TargetCount != 0 || failed.FinishedAt.IsZero() {
		t.Fatalf("row after total failure = %+v", failed)
	}
	ws := e.waves(failed.ExecID)
	if ws[0].State != storage.WaveFailed || ws[1].State != storage.WaveCancelled {
		t.Fatalf("waves after failure = %+v", ws)
	}
	e.clk.Advance(10 * time.Second)
	cmds.quiet(t, 1, 50*time.Millisecond)
}

// A 10 000-PC fan-out publishes every Command and records every
// request_id and expected PC (the timing is the benchmark's job). Under
// -race, where SQLite is instrumented and an order of magnitude slower, it
// runs with 2 500 PCs: still several insert chunks, in seconds.
func TestFanoutToTenThousandListedPCs(t *testing.T) {
	t.Parallel()
	n := 10000
	if raceEnabled {
		n = 2500
	}
	e := newEnv(t)
	var got atomic.Int64
	sub, err := e.br.Conn.Subscribe("commands.pc.>", func(*nats.Msg) { got.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	e.start()
	e.putJob("job1", "1", "echo")
	plan := pcsPlan(n)
	e.client.Timeout = time.Minute // the budget itself is the benchmark's
	t1 := time.Now()
	r, err := e.client.Exec(context.Background(), &messages.ExecRequest{JobID: "job1", Plan: plan, Actor: "operator"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("exec to %d PCs answered in %v", n, time.Since(t1))
	if r.TargetCount != n || r.ExpectedPcs != n {
		t.Fatalf("response: target_count %d expected_pcs %d, want %d", r.TargetCount, r.ExpectedPcs, n)
	}
	testsupport.Eventually(t, 30*time.Second, func() error {
		if got := got.Load(); got != int64(n) {
			return fmt.Errorf("%d of %d commands received", got, n)
		}
		return nil
	})
	published, err := e.store.R.NewSelect().Model((*storage.PublishedRequest)(nil)).Where("exec_id = ?", r.ExecID).
		Where("published_at IS NOT NULL").Count(context.Background())
	if err != nil || published != int64(n) {
		t.Fatalf("published exec_requests = %d (%v), want %d", published, err, n)
	}
	if len(e.expected(r.ExecID)) != n {
		t.Fatal("expected PCs not recorded")
	}
}

func tenThousandPCsPlan() messages.FanoutPlan { return pcsPlan(10000) }

func pcsPlan(n int) messages.FanoutPlan {
	pcs := make([]string, n)
	for i := range pcs {
		pcs[i] = fmt.Sprintf("pc-%05d", i)
	}
	return messages.FanoutPlan{Target: messages.Target{Pcs: pcs}}
}

// requester stands for a schedule actor: it sends the ExecRequest with its
// own context and receives the reply as a message, never waiting.
type requester struct {
	engine  *actor.PID
	req     *messages.ExecRequest
	replies chan<- *messages.ExecReply
}

func (r *requester) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		c.Request(r.engine, r.req)
	case *messages.ExecReply:
		r.replies <- m
	}
}

// The scheduler's contract: an actor's Request gets *messages.ExecReply
// back at its own PID, errors included.
func TestActorsGetTheReplyAsAMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start()
	e.putJob("job1", "1", "echo")
	replies := make(chan *messages.ExecReply, 2)
	for _, job := range []string{"job1", "missing"} {
		req := &messages.ExecRequest{JobID: job, Plan: messages.FanoutPlan{Target: messages.Target{All: true}},
			Actor: messages.ActorScheduler, InitiatedBy: "scheduler:nightly", ScheduleID: "nightly"}
		e.sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
			return &requester{engine: e.pid, req: req, replies: replies}
		}))
		select {
		case rep := <-replies:
			switch job {
			case "job1":
				if rep.Err != nil || rep.Response.TargetCount != 1 {
					t.Fatalf("reply = %+v", rep)
				}
				ex := e.execution(rep.Response.ExecID)
				if ex.InitiatedBy != "scheduler:nightly" || ex.ScheduleID == nil || *ex.ScheduleID != "nightly" {
					t.Fatalf("row = %+v", ex)
				}
			default:
				if statusOf(rep.Err) != http.StatusNotFound {
					t.Fatalf("reply for a missing job = %+v", rep)
				}
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no reply")
		}
	}
}
