package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/messages"
)

// tickAt moves the fake clock to the schedule's armed instant and returns
// that tick's outcome.
func (h *harness) tickNow(id string) *messages.ScheduleTicked {
	h.t.Helper()
	var nt *time.Time
	h.eventually(5*time.Second, func() error {
		st, err := h.client.Status(context.Background(), id)
		if err != nil {
			return err
		}
		if nt = st.NextTick; nt == nil {
			return errors.New("no timer armed")
		}
		return nil
	})
	h.fake.Set(*nt)
	tk := h.nextTick(id, 5*time.Second)
	// Let the actor re-arm before the caller moves the clock again.
	h.eventually(5*time.Second, func() error {
		if n := h.status(id).NextTick; n != nil && n.After(tk.Instant) {
			return nil
		}
		if !h.status(id).Schedule.Enabled {
			return nil
		}
		return errors.New("not re-armed yet")
	})
	return tk
}

// once_per_pc fires each PC once; a PC whose run is still in flight is not
// fired again (upstream defect 10); a failed run re-arms the PC; a PC that
// comes online later is fired too.
func TestOncePerPCInFlightSuppression(t *testing.T) {
	onBothDialects(t, testOncePerPCInFlightSuppression)
}

func testOncePerPCInFlightSuppression(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.putJob("job", "30s")
	h.agents("a", "b", "c")
	h.putSchedule(`{"id":"p","cron":"*/2 * * * * *","job_id":"job","target":{"all":true},"mode":"once_per_pc","jitter":"5s"}`)

	tk := h.tickNow("p")
	req := h.exec.nextRequest(t, time.Second)
	if tk.Outcome != messages.TickFired || pcsOf(req) != "a,b,c" || tk.Pcs != 3 || tk.ExecID == "" {
		t.Fatalf("first tick %+v, request pcs %s", tk, pcsOf(req))
	}
	// FirePcs: target {pcs}, rollout dropped, jitter kept.
	if req.Plan.Target.All || req.Plan.Rollout != nil || req.Plan.Jitter == nil || *req.Plan.Jitter != "5s" {
		t.Fatalf("plan %+v", req.Plan)
	}
	exec1 := tk.ExecID

	// Nothing has answered: every PC is in flight.
	tk = h.tickNow("p")
	if tk.Outcome != messages.TickSkipped || !strings.Contains(tk.Reason, "still running") {
		t.Fatalf("second tick %+v", tk)
	}
	h.exec.noRequest(t, 20*time.Millisecond)

	// a succeeds, b fails, c still runs; d comes online.
	now := h.fake.Now()
	h.result("a", "job", exec1, 0, now)
	h.result("b", "job", exec1, 1, now)
	h.agents("a", "b", "c", "d")
	h.eventually(5*time.Second, func() error {
		if st := h.status("p"); st.InFlight != 1 || st.Completions != 1 {
			return errors.New("results not applied yet")
		}
		return nil
	})
	tk = h.tickNow("p")
	req = h.exec.nextRequest(t, time.Second)
	if tk.Outcome != messages.TickFired || pcsOf(req) != "b,d" {
		t.Fatalf("third tick %+v, pcs %s", tk, pcsOf(req))
	}

	// c never answers. It was fired at t0+2s, so its window (timeout 30s +
	// jitter 5s + 60s) ends at t0+97s: the tick of t0+98s fires it again,
	// and none before.
	for {
		tk = h.tickNow("p")
		if tk.Outcome == messages.TickFired {
			break
		}
	}
	if req := h.exec.nextRequest(t, time.Second); !tk.Instant.Equal(t0.Add(98*time.Second)) || pcsOf(req) != "c" {
		t.Fatalf("re-fire at %v (want %v) at pcs %s (want c)", tk.Instant, t0.Add(98*time.Second), pcsOf(req))
	}
}

// With no cooldown and auto_disable_when_done, once every expected PC has
// succeeded the schedule writes enabled=false back (compare-and-set) and
// audits schedule_completed {mode, job_id}.
func TestOncePerPCAutoDisable(t *testing.T) { onBothDialects(t, testOncePerPCAutoDisable) }

func testOncePerPCAutoDisable(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.putJob("job", "30s")
	h.agents("a", "b")
	auditSub, err := h.b.Conn.SubscribeSync("audit.scheduler.schedule_completed.>")
	if err != nil {
		t.Fatal(err)
	}
	h.putSchedule(`{"id":"ad","cron":"*/2 * * * * *","job_id":"job","target":{"all":true},"mode":"once_per_pc","auto_disable_when_done":true}`)
	tk := h.tickNow("ad")
	if tk.Outcome != messages.TickFired {
		t.Fatalf("tick %+v", tk)
	}
	h.exec.nextRequest(t, time.Second)
	h.result("a", "job", tk.ExecID, 0, h.fake.Now())
	h.result("b", "job", tk.ExecID, 0, h.fake.Now())
	h.eventually(5*time.Second, func() error {
		if h.status("ad").Completions != 2 {
			return errors.New("not yet")
		}
		return nil
	})
	h.agents("a", "b")
	tk = h.tickNow("ad")
	if tk.Outcome != messages.TickSkipped || !strings.Contains(tk.Reason, "auto-disabled") {
		t.Fatalf("tick %+v", tk)
	}
	s, _ := h.getSchedule("ad")
	if s.Enabled {
		t.Fatal("schedule still enabled in KV")
	}
	msg, err := auditSub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ev messages.AuditEvent
	if err := json.Unmarshal(msg.Data, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Actor != "scheduler" || ev.Action != "schedule_completed" || ev.Target == nil || *ev.Target != "ad" ||
		ev.Payload["mode"] != "once_per_pc" || ev.Payload["job_id"] != "job" {
		t.Fatalf("audit %+v", ev)
	}
	h.eventually(5*time.Second, func() error {
		if st := h.status("ad"); st.State != StateDisabled || st.NextTick != nil {
			return errors.New("not disabled yet")
		}
		return nil
	})
	h.fake.Advance(10 * time.Second)
	h.noTick("ad", 50*time.Millisecond)
}

// racingWriter makes an operator's edit land between the actor's decision
// and its compare-and-set, once.
type racingWriter struct {
	*Backend
	h    *harness
	edit string
	done bool
}

func (w *racingWriter) Disable(ctx context.Context, s messages.Schedule, rev uint64) (uint64, *Versioned, error) {
	if !w.done {
		w.done = true
		if _, err := w.h.kv(messages.BucketSchedules).Put(ctx, s.ID, []byte(w.edit)); err != nil {
			return 0, nil, err
		}
	}
	return w.Backend.Disable(ctx, s, rev)
}

// Auto-disable never erases a concurrent edit (upstream defect 14): the
// compare-and-set fails, the actor takes the edited version and decides
// again; here the edit added a PC, so it fires at it instead.
func TestAutoDisableLosesToConcurrentEdit(t *testing.T) {
	edit := `{"id":"cas","cron":"*/2 * * * * *","job_id":"job","target":{"all":true,"pcs":["z"]},"mode":"once_per_pc","auto_disable_when_done":true}`
	var rw *racingWriter
	h := newHarness(t, harnessOpts{writer: func(b *Backend) Writer {
		rw = &racingWriter{Backend: b, edit: edit}
		return rw
	}})
	rw.h = h
	h.putJob("job", "30s")
	h.agents("a")
	h.result("a", "job", "", 0, h.fake.Now().Add(-time.Minute))
	h.putSchedule(`{"id":"cas","cron":"*/2 * * * * *","job_id":"job","target":{"all":true},"mode":"once_per_pc","auto_disable_when_done":true}`)
	tk := h.tickNow("cas")
	req := h.exec.nextRequest(t, time.Second)
	if tk.Outcome != messages.TickFired || pcsOf(req) != "z" {
		t.Fatalf("tick %+v pcs %s", tk, pcsOf(req))
	}
	s, _ := h.getSchedule("cas")
	if !s.Enabled || len(s.Target.Pcs) != 1 || s.Target.Pcs[0] != "z" {
		t.Fatalf("the concurrent edit was overwritten: %+v", s)
	}
}

// Backend.Disable is a real compare-and-set on the KV revision.
func TestBackendDisableCompareAndSet(t *testing.T) {
	h := newHarness(t, harnessOpts{noStart: true})
	rev := h.putSchedule(`{"id":"x","cron":"* * * * * *","job_id":"j","target":{"all":true}}`)
	def, _ := h.getSchedule("x")
	rev2 := h.putSchedule(`{"id":"x","cron":"*/5 * * * * *","job_id":"j","target":{"all":true}}`)
	_, cur, err := h.backend.Disable(context.Background(), def, rev)
	if !errors.Is(err, messages.ErrConflict) || cur == nil || cur.Rev != rev2 || cur.Def.Cron != "*/5 * * * * *" {
		t.Fatalf("stale disable: cur %+v err %v", cur, err)
	}
	newRev, _, err := h.backend.Disable(context.Background(), cur.Def, cur.Rev)
	if err != nil || newRev <= rev2 {
		t.Fatalf("disable at current revision: %d %v", newRev, err)
	}
	s, r := h.getSchedule("x")
	if s.Enabled || r != newRev || s.Cron != "*/5 * * * * *" {
		t.Fatalf("after disable: %+v rev %d", s, r)
	}
	if err := h.kv(messages.BucketSchedules).Delete(context.Background(), "x"); err != nil {
		t.Fatal(err)
	}
	if _, cur, err := h.backend.Disable(context.Background(), s, r); !errors.Is(err, messages.ErrConflict) || cur != nil {
		t.Fatalf("disable of a deleted schedule: %v %v", cur, err)
	}
	if _, err := newFleetView(nil).job("nope"); !errors.Is(err, messages.ErrNotFound) {
		t.Fatalf("missing job: %v", err)
	}
	_ = jetstream.ErrKeyNotFound
}

// With a cooldown, a PC re-runs once the cooldown has passed since its
// last success (boundary inclusive), and the schedule never auto-disables.
func TestOncePerPCCooldown(t *testing.T) { onBothDialects(t, testOncePerPCCooldown) }

func testOncePerPCCooldown(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.putJob("job", "30s")
	h.agents("a")
	h.putSchedule(`{"id":"cd","cron":"*/2 * * * * *","job_id":"job","target":{"all":true},"mode":"once_per_pc","cooldown":"6s","auto_disable_when_done":true}`)
	tk := h.tickNow("cd")
	h.exec.nextRequest(t, time.Second)
	done := h.fake.Now()
	h.result("a", "job", tk.ExecID, 0, done)
	h.eventually(5*time.Second, func() error {
		if h.status("cd").Completions != 1 {
			return errors.New("not yet")
		}
		return nil
	})
	var fired time.Time
	for fired.IsZero() {
		h.agents("a")
		tk = h.tickNow("cd")
		switch tk.Outcome {
		case messages.TickFired:
			fired = tk.Instant
		case messages.TickSkipped:
			if strings.Contains(tk.Reason, "auto-disabled") {
				t.Fatalf("auto-disabled despite the cooldown: %+v", tk)
			}
		default:
			t.Fatalf("tick %+v", tk)
		}
	}
	if d := fired.Sub(done); d != 6*time.Second {
		t.Fatalf("re-fired %v after the success, want exactly the 6s cooldown", d)
	}
	h.exec.nextRequest(t, time.Second)
}

// once_per_target fires the whole target (original plan) until one PC in
// scope succeeds, then stops; completions of PCs out of scope do not count.
func TestOncePerTarget(t *testing.T) { onBothDialects(t, testOncePerTarget) }

func testOncePerTarget(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.putJob("job", "30s")
	h.agents("a", "b")
	h.groupMembers("office", "a", "b")
	h.result("ghost", "job", "", 0, h.fake.Now().Add(-time.Hour))
	h.putSchedule(`{"id":"t","cron":"*/2 * * * * *","job_id":"job","target":{"groups":["office"]},"mode":"once_per_target","auto_disable_when_done":true,"rollout":{"waves":[{"group":"office","delay":"0s"}]}}`)
	first := h.tickNow("t")
	tk := first
	req := h.exec.nextRequest(t, time.Second)
	if tk.Outcome != messages.TickFired || req.Plan.Rollout == nil || len(req.Plan.Target.Groups) != 1 || tk.Pcs != 2 {
		t.Fatalf("whole-target fire %+v plan %+v", tk, req.Plan)
	}
	// The fire is in flight on both PCs: no second fire meanwhile.
	tk = h.tickNow("t")
	if tk.Outcome != messages.TickSkipped {
		t.Fatalf("tick %+v", tk)
	}
	// b fails, a succeeds: the target is done.
	h.result("b", "job", first.ExecID, 1, h.fake.Now())
	h.result("a", "job", "", 0, h.fake.Now())
	h.eventually(5*time.Second, func() error {
		if st := h.status("t"); st.InFlight != 0 || st.Completions != 2 {
			return errors.New("not yet")
		}
		return nil
	})
	h.agents("a", "b")
	tk = h.tickNow("t")
	if tk.Outcome != messages.TickSkipped || !strings.Contains(tk.Reason, "auto-disabled") {
		t.Fatalf("after success %+v", tk)
	}
	h.exec.noRequest(t, 20*time.Millisecond)
}

// A group target resolves to the group's alive members through the
// agent_group_members mirror (upstream decoded agent_groups as a bare
// array and never resolved groups).
func TestOncePerPCGroupTarget(t *testing.T) { onBothDialects(t, testOncePerPCGroupTarget) }

func testOncePerPCGroupTarget(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.putJob("job", "30s")
	h.agents("a", "b", "c")
	h.groupMembers("canary", "a", "c", "offline")
	h.groupMembers("other", "b")
	h.putSchedule(`{"id":"g","cron":"*/2 * * * * *","job_id":"job","target":{"groups":["canary"]},"mode":"once_per_pc"}`)
	h.tickNow("g")
	if req := h.exec.nextRequest(t, time.Second); pcsOf(req) != "a,c" {
		t.Fatalf("group fire at %s, want a,c", pcsOf(req))
	}
}

// A job missing at fire time is a skipped tick with the reason, for the
// dedup modes and for every_tick alike (both read the catalog as the jobs
// mirror holds it).
func TestMissingJobSkips(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.agents("a")
	h.putSchedule(`{"id":"e","cron":"*/2 * * * * *","job_id":"gone","target":{"all":true}}`)
	h.putSchedule(`{"id":"o","cron":"*/2 * * * * *","job_id":"gone","target":{"all":true},"mode":"once_per_pc"}`)
	h.armedFor("e", t0.Add(2*time.Second))
	h.armedFor("o", t0.Add(2*time.Second))
	h.fake.Set(t0.Add(2 * time.Second))
	got := map[string]*messages.ScheduleTicked{}
	for len(got) < 2 {
		select {
		case tk := <-h.ticks:
			got[tk.ScheduleID] = tk
		case <-time.After(5 * time.Second):
			t.Fatalf("ticks %v", got)
		}
	}
	for id, tk := range got {
		if tk.Outcome != messages.TickSkipped || tk.Reason != "job 'gone' not found in catalog" {
			t.Fatalf("%s: %+v", id, tk)
		}
	}
	// The catalog (the jobs mirror the scheduler follows) has no such job:
	// no request reaches the engine.
	h.exec.noRequest(t, 20*time.Millisecond)
}

// The dedup state is seeded from the store: a PC that succeeded before the
// scheduler started is not fired.
func TestSeedFromStore(t *testing.T) { onBothDialects(t, testSeedFromStore) }

func testSeedFromStore(t *testing.T) {
	h := newHarness(t, harnessOpts{noStart: true})
	h.putJob("job", "30s")
	h.agents("a", "b")
	h.result("a", "job", "", 0, t0.Add(-time.Hour))
	h.result("b", "job", "", 3, t0.Add(-time.Hour))   // a failure is no completion
	h.result("b", "other", "", 0, t0.Add(-time.Hour)) // another job's success neither
	h.putSchedule(`{"id":"seed","cron":"*/2 * * * * *","job_id":"job","target":{"all":true},"mode":"once_per_pc"}`)
	h.start(0)
	h.tickNow("seed")
	if r := h.exec.nextRequest(t, time.Second); pcsOf(r) != "b" {
		t.Fatalf("fired at %s, want b", pcsOf(r))
	}
}

// Results reach only the actors of their job.
func TestResultsRoutedByJob(t *testing.T) { onBothDialects(t, testResultsRoutedByJob) }

func testResultsRoutedByJob(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.putJob("j1", "30s")
	h.putJob("j2", "30s")
	h.putSchedule(`{"id":"r1","cron":"0 0 * * * *","job_id":"j1","target":{"pcs":["a"]},"mode":"once_per_pc"}`)
	h.putSchedule(`{"id":"r2","cron":"0 0 * * * *","job_id":"j2","target":{"pcs":["a"]},"mode":"once_per_pc"}`)
	h.putSchedule(`{"id":"r3","cron":"0 0 * * * *","job_id":"j1","target":{"pcs":["a"]},"mode":"once_per_target"}`)
	h.eventually(5*time.Second, func() error {
		s, err := h.client.Summary(context.Background())
		if err != nil || s.Running != 3 {
			return errors.New("not loaded")
		}
		return nil
	})
	h.result("a", "j1", "", 0, t0)
	h.eventually(5*time.Second, func() error {
		if h.status("r1").Completions != 1 || h.status("r3").Completions != 1 {
			return errors.New("j1 schedules did not see the result")
		}
		return nil
	})
	if c := h.status("r2").Completions; c != 0 {
		t.Fatalf("a j2 schedule received a j1 result (%d completions)", c)
	}
}
