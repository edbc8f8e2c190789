package exec_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/uptrace/bun"

	"kanade-backend/actors/exec"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

// sender stands for one schedule actor: it sends its requests with its own
// context and hands every reply it gets to replies.
type sender struct {
	engine  *actor.PID
	reqs    []*messages.ExecRequest
	replies chan<- *messages.ExecReply
	// sent, if set, is called once the requests are posted.
	sent func()
}

func (s *sender) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		for _, r := range s.reqs {
			c.Request(s.engine, r)
		}
		if s.sent != nil {
			s.sent()
		}
	case *messages.ExecReply:
		s.replies <- m
	}
}

// send spawns one sender per request list and returns the replies channel.
func (e *env) send(lists ...[]*messages.ExecRequest) <-chan *messages.ExecReply {
	n := 0
	for _, l := range lists {
		n += len(l)
	}
	replies := make(chan *messages.ExecReply, n)
	for _, l := range lists {
		e.sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
			return &sender{engine: e.pid, reqs: l, replies: replies}
		}))
	}
	return replies
}

func collect(t *testing.T, replies <-chan *messages.ExecReply, n int) []*messages.ExecReply {
	t.Helper()
	var out []*messages.ExecReply
	for len(out) < n {
		select {
		case r := <-replies:
			out = append(out, r)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d replies", len(out), n)
		}
	}
	return out
}

func scheduled(id string, corr uint64, execID string, pcs ...string) *messages.ExecRequest {
	return &messages.ExecRequest{CorrelationID: corr, ExecID: execID, JobID: "job1",
		Plan: messages.FanoutPlan{Target: messages.Target{Pcs: pcs}}, Resolved: true, Expected: pcs,
		Actor: messages.ActorScheduler, InitiatedBy: "scheduler:" + id, ScheduleID: id}
}

// histogram reads a histogram's sample count and sum.
func histogram(t *testing.T, reg *prometheus.Registry, name string) (count uint64, sum float64) {
	t.Helper()
	s := testsupport.RequireMetric(t, reg, name)
	return s.Count, s.Sum
}

// Many senders' requests at once are handled in batches (fewer batches
// than requests), and each request still gets its own exec, rows,
// Commands, record, audit event and reply, matched by its correlation id.
func TestConcurrentRequestsShareBatchesEachWithItsOwnReply(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	e.metrics = exec.NewMetrics(reg)
	cmds := e.recordCommands()
	audits := e.record("audit.scheduler.>")
	e.putJob("job1", "1", "echo")
	m := e.putJob("job1", "1", "echo")
	e.start()

	const senders, each = 20, 15
	var lists [][]*messages.ExecRequest
	for s := range senders {
		var l []*messages.ExecRequest
		for i := range each {
			pc := fmt.Sprintf("pc-%02d-%02d", s, i)
			r := scheduled(fmt.Sprintf("s%02d", s), uint64(i+1), messages.ScheduledExecID(fmt.Sprintf("s%02d", s), t0.Add(time.Duration(i)*time.Second)), pc)
			if i%2 == 0 {
				r.Manifest = &m // half carry the job, half leave it to the catalog
			}
			l = append(l, r)
		}
		lists = append(lists, l)
	}
	replies := collect(t, e.send(lists...), senders*each)
	seen := map[string]bool{}
	for _, r := range replies {
		if r.Err != nil || r.Existing || r.Response.ExpectedPcs != 1 || r.Response.TargetCount != 1 {
			t.Fatalf("reply %+v", r)
		}
		sched := strings.TrimPrefix(strings.Split(r.Response.Subjects[0], ".")[2], "pc-")
		s, i := 0, 0
		if _, err := fmt.Sscanf(sched, "%02d-%02d", &s, &i); err != nil {
			t.Fatal(err)
		}
		if r.CorrelationID != uint64(i+1) || r.Response.ExecID != messages.ScheduledExecID(fmt.Sprintf("s%02d", s), t0.Add(time.Duration(i)*time.Second)) {
			t.Fatalf("reply for %s carries correlation %d and exec %s", sched, r.CorrelationID, r.Response.ExecID)
		}
		seen[r.Response.ExecID] = true
	}
	if len(seen) != senders*each {
		t.Fatalf("%d distinct execs for %d requests", len(seen), senders*each)
	}
	cmds.waitN(t, senders*each)
	audits.waitN(t, senders*each)
	var rows, reqs, expected int
	ctx := context.Background()
	for _, q := range []struct {
		table string
		n     *int
	}{{"executions", &rows}, {"exec_requests", &reqs}, {"exec_expected", &expected}} {
		if err := e.store.R.NewSelect().TableExpr(q.table).ColumnExpr("count(*)").Scan(ctx, q.n); err != nil {
			t.Fatal(err)
		}
	}
	if rows != senders*each || reqs != senders*each || expected != senders*each {
		t.Fatalf("rows: %d executions, %d exec_requests, %d exec_expected", rows, reqs, expected)
	}
	if fresh := e.restored(); count(t, fresh, replies[0].Response.ExecID) != 1 {
		t.Fatal("a batched exec's record is not on the EXEC stream")
	}
	batches, total := histogram(t, reg, "kanade_exec_batch_requests")
	if total != senders*each || batches >= senders*each {
		t.Fatalf("%d requests in %d batches, want fewer batches than requests", int(total), batches)
	}
	t.Logf("%d requests in %d batches", int(total), batches)
}

// An exec id is recorded once: the same (schedule, instant) fired twice,
// in one batch or one after the other, or after an engine restart, gives
// one exec and one set of Commands; every later request is answered with
// that exec (Existing) and publishes nothing.
func TestSameExecIDFiresOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cmds := e.recordCommands()
	e.putJob("job1", "1", "echo")
	e.start()
	id := messages.ScheduledExecID("nightly", t0)

	replies := collect(t, e.send(
		[]*messages.ExecRequest{scheduled("nightly", 1, id, "a", "b")},
		[]*messages.ExecRequest{scheduled("nightly", 2, id, "a", "b")},
	), 2)
	var first, again *messages.ExecReply
	for _, r := range replies {
		if r.Existing {
			again = r
		} else {
			first = r
		}
	}
	if first == nil || again == nil || first.Err != nil || again.Err != nil ||
		first.Response.ExecID != id || again.Response.ExecID != id || again.Response.ExpectedPcs != 2 || again.Response.TargetCount != 2 {
		t.Fatalf("replies: %+v / %+v", first, again)
	}
	cmds.waitN(t, 2)

	later := collect(t, e.send([]*messages.ExecRequest{scheduled("nightly", 3, id, "a", "b", "c")}), 1)[0]
	if !later.Existing || later.CorrelationID != 3 {
		t.Fatalf("a later request for the same id: %+v", later)
	}
	e.stop()
	e.start()
	afterRestart := collect(t, e.send([]*messages.ExecRequest{scheduled("nightly", 4, id, "a")}), 1)[0]
	if !afterRestart.Existing || afterRestart.Response.ExpectedPcs != 2 {
		t.Fatalf("after a restart: %+v", afterRestart)
	}
	cmds.quiet(t, 2, 100*time.Millisecond)
	if n := count(t, e.store, id); n != 1 {
		t.Fatalf("%d executions rows for one id", n)
	}
	if got := strings.Join(e.expected(id), ","); got != "a,b" {
		t.Fatalf("expected PCs %s: a later request changed the exec", got)
	}
	if _, err := e.client.Exec(context.Background(), scheduled("x", 0, "not-a-uuid", "a")); statusOf(err) != http.StatusBadRequest {
		t.Fatalf("an exec id that is no UUID: %v", err)
	}
}

// Settle resolves a request nobody answered: an id no exec holds is
// claimed with a failed row (and a request arriving later then publishes
// nothing); a recorded exec is reported published, or failed when not a
// Command of it went out.
func TestSettleClaimsOrReports(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cmds := e.recordCommands()
	m := e.putJob("job1", "1", "echo")
	e.start()
	ctx := context.Background()

	late := scheduled("late", 1, messages.ScheduledExecID("late", t0), "a")
	late.Manifest = &m
	s, err := exec.Settle(ctx, e.store, late, "the exec engine did not answer within 30s; nothing was published", t0)
	if err != nil || s.State != exec.FireClaimed || s.Exec.Status != storage.ExecFailed {
		t.Fatalf("settle an unknown id: %+v %v", s, err)
	}
	if ex := e.execution(late.ExecID); ex.Status != storage.ExecFailed || ex.TargetCount != 0 || ex.Error == nil ||
		!strings.Contains(*ex.Error, "did not answer") || ex.ScheduleID == nil || *ex.ScheduleID != "late" || ex.Version != "1" {
		t.Fatalf("claimed row %+v", ex)
	}
	if r := collect(t, e.send([]*messages.ExecRequest{late}), 1)[0]; !r.Existing {
		t.Fatalf("the late request after the claim: %+v", r)
	}
	cmds.quiet(t, 0, 50*time.Millisecond)
	if s, err := exec.Settle(ctx, e.store, late, "again", t0); err != nil || s.State != exec.FireFailed {
		t.Fatalf("settle the claimed id again: %+v %v", s, err)
	}

	ok := scheduled("ok", 1, messages.ScheduledExecID("ok", t0), "a")
	if r := collect(t, e.send([]*messages.ExecRequest{ok}), 1)[0]; r.Err != nil {
		t.Fatal(r.Err)
	}
	if s, err := exec.Settle(ctx, e.store, ok, "x", t0); err != nil || s.State != exec.FirePublished || s.Exec.ExpectedPcs != 1 {
		t.Fatalf("settle a published exec: %+v %v", s, err)
	}

	// Recorded but not published yet: the engine is between its
	// transaction and its flush.
	rec := scheduled("rec", 1, messages.ScheduledExecID("rec", t0), "a")
	err = e.store.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		row := &storage.Execution{ExecID: rec.ExecID, JobID: "job1", Version: "1", InitiatedBy: "scheduler:rec", Plan: []byte("{}"),
			Subjects: []byte(`["commands.pc.a"]`), TargetCount: 1, ExpectedPcs: 1, Status: storage.ExecPending,
			CreatedAt: storage.T(t0), DeadlineAt: storage.T(t0), UpdatedAt: storage.T(t0)}
		if _, err := tx.NewInsert().Model(row).Exec(ctx); err != nil {
			return err
		}
		_, err := tx.NewInsert().Model(&storage.PublishedRequest{RequestID: "r1", ExecID: rec.ExecID, Subject: "commands.pc.a"}).Exec(ctx)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := exec.Settle(ctx, e.store, rec, "x", t0); err != nil || s.State != exec.FireRecorded {
		t.Fatalf("settle a recorded, unpublished exec: %+v %v", s, err)
	}
}

// A stop while a batch is in progress and requests wait behind it: the
// batch completes (rows, Commands, record, reply), the requests still in
// the mailbox are never handled (their senders settle them, see Settle),
// and no exec is half-written.
func TestStopCompletesTheBatchInProgressAndHalfWritesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	e.metrics = exec.NewMetrics(reg)
	cmds := e.recordCommands()
	e.putJob("job1", "1", "echo")
	e.start()
	// Hold the single writer connection: the first batch waits for it.
	ctx := context.Background()
	conn, err := e.store.W.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var lists [][]*messages.ExecRequest
	for i := range 50 {
		lists = append(lists, []*messages.ExecRequest{scheduled(fmt.Sprintf("s%d", i), 1,
			messages.ScheduledExecID(fmt.Sprintf("s%d", i), t0), fmt.Sprintf("pc-%d", i))})
	}
	replies := e.send(lists[:1]...)
	// The first batch has started and waits for the database.
	eventually(t, func() error {
		if n, _ := histogram(t, reg, "kanade_exec_batch_requests"); n != 1 {
			return fmt.Errorf("%d batches started", n)
		}
		return nil
	})
	// The others are in the engine's mailbox once their senders have
	// sent them (a Request posts to the mailbox before it returns).
	rest := make(chan *messages.ExecReply, len(lists)-1)
	var sent sync.WaitGroup
	for _, l := range lists[1:] {
		sent.Add(1)
		e.sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
			return &sender{engine: e.pid, reqs: l, replies: rest, sent: sent.Done}
		}))
	}
	sent.Wait()
	// The stop is posted (a system message, handled before them) before
	// the batch may go on.
	stopping := e.sys.Root.StopFuture(e.pid)
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- stopping.Wait() }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the engine did not stop within 10 s")
	}
	e.pid = nil
	if first := collect(t, replies, 1)[0]; first.Err != nil {
		t.Fatalf("the batch in progress: %v", first.Err)
	}
	select {
	case r := <-rest:
		t.Fatalf("a request behind the stop was handled: %+v", r)
	case <-time.After(200 * time.Millisecond):
	}
	var rows []storage.Execution
	if err := e.store.R.NewSelect().Model(&rows).Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].ExecID != lists[0][0].ExecID {
		t.Fatalf("%d execs recorded, want the one of the batch in progress", len(rows))
	}
	if n := len(e.requests(rows[0].ExecID)); n != 1 || len(e.expected(rows[0].ExecID)) != 1 || e.requests(rows[0].ExecID)[0].PublishedAt.IsZero() {
		t.Fatalf("the exec is half-written: %d request_ids", n)
	}
	cmds.quiet(t, 1, 50*time.Millisecond)
	if count(t, e.restored(), rows[0].ExecID) != 1 {
		t.Fatal("its record was not stored before the stop ended")
	}
}
