package projector

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

// One broadcast Command answered by three PCs: three rows, one per
// (request_id, pc_id) (upstream collapsed them into one, defect 1).
func TestBroadcastAnsweredByThreePCs(t *testing.T) {
	h := newHarness(t, harnessOpts{}).start()
	var msgs []pubMsg
	for _, pc := range []string{"pc-a", "pc-b", "pc-c"} {
		msgs = append(msgs, result("req-broadcast", pc, 0, "ok "+pc, "job1"))
	}
	// Agents publish results on core NATS; the RESULTS stream captures them.
	for _, m := range msgs {
		if err := h.broker.Conn.Publish(m.subject, m.data); err != nil {
			t.Fatal(err)
		}
	}
	h.waitCount("execution_results", 3, 5*time.Second, "request_id = 'req-broadcast'")
	var rows []storage.ExecutionResult
	if err := h.store.R.NewSelect().Model(&rows).Order("pc_id").Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i, pc := range []string{"pc-a", "pc-b", "pc-c"} {
		r := rows[i]
		if r.PcID != pc || r.Stdout != "ok "+pc || r.JobID == nil || *r.JobID != "job1" || r.ExecID != nil ||
			!r.FinishedAt.Equal(t0.Add(time.Second)) || r.StreamSeq == 0 {
			t.Fatalf("row %d = %+v", i, r)
		}
	}
	testsupport.Eventually(t, waitFor, func() error {
		n := 0
		for _, ev := range eventsOf[*messages.ResultsProjected](h) {
			n += len(ev.Results)
		}
		if n != 3 {
			return fmt.Errorf("ResultsProjected carried %d results, want 3", n)
		}
		return nil
	})
}

// The same 1 000 results published twice are 1 000 rows; and a consumer
// reset (every message delivered again) adds nothing and counts nothing.
func TestResultsRedeliveredAreIdempotent(t *testing.T) {
	h := newHarness(t, harnessOpts{}).start()
	var msgs []pubMsg
	for i := range 1000 {
		msgs = append(msgs, result(fmt.Sprintf("req-%04d", i), "pc-1", 0, "x", ""))
	}
	publishJS(t, h.broker.JS, msgs)
	publishJS(t, h.broker.JS, msgs)
	h.waitCount("execution_results", 1000, 10*time.Second)
	h.consumerIdle(messages.StreamResults, DurableResults)
	projected := 0
	for _, ev := range eventsOf[*messages.ResultsProjected](h) {
		projected += len(ev.Results)
	}
	if projected != 1000 {
		t.Fatalf("ResultsProjected events carried %d results, want 1000 (duplicates must not notify)", projected)
	}
	if got := h.metric("kanade_projection_messages_total", "projection", "results"); got != 2000 {
		t.Fatalf("messages projected = %v, want 2000", got)
	}
	var cp uint64
	if err := h.store.R.NewSelect().TableExpr("projection_checkpoints").Column("last_seq").
		Where("projection = 'results'").Scan(context.Background(), &cp); err != nil || cp != 2000 {
		t.Fatalf("checkpoint = %d (%v), want 2000", cp, err)
	}
	// Counted only now that every duplicate was applied (the wait above
	// returns as soon as the count reaches 1 000).
	if n := h.count("execution_results"); n != 1000 {
		t.Fatalf("%d rows after the duplicates, want 1000", n)
	}

	// Reset: no consumer and no checkpoint, so all 2 000 messages are
	// delivered again; rows and notifications stay as they are.
	ctx := context.Background()
	h.stop()
	if err := h.broker.JS.DeleteConsumer(ctx, messages.StreamResults, DurableResults); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.W.ExecContext(ctx, "DELETE FROM projection_checkpoints"); err != nil {
		t.Fatal(err)
	}
	h2 := newHarness(t, harnessOpts{broker: h.broker, store: h.store}).start()
	h2.consumerIdle(messages.StreamResults, DurableResults)
	if got := h2.metric("kanade_projection_messages_total", "projection", "results"); got != 2000 {
		t.Fatalf("after the reset %v messages were applied again, want all 2000", got)
	}
	if n := h2.count("execution_results"); n != 1000 {
		t.Fatalf("%d rows after a full replay, want 1000", n)
	}
	if n := len(eventsOf[*messages.ResultsProjected](h2)); n != 0 {
		t.Fatalf("a full replay of known results notified %d times, want none", n)
	}
}

// 10 malformed messages among 1 000 good ones: 1 000 rows, 10 errors, the
// consumer keeps up and nothing is delivered again.
func TestPoisonResultsAreRecordedAndTerminated(t *testing.T) {
	// A short AckWait (long enough for a busy -race run to acknowledge its
	// batches in time), so that a poison message left unacknowledged or
	// nak'd instead of terminated would be delivered again within the
	// test and show up as a redelivery.
	const ackWait = 2 * time.Second
	h := newHarness(t, harnessOpts{cfg: Config{AckWait: ackWait}}).start()
	var msgs []pubMsg
	for i := range 1000 {
		msgs = append(msgs, result(fmt.Sprintf("req-%04d", i), "pc-1", 0, "x", ""))
		if i%100 == 50 {
			bad := []string{`{"request_id":`, `not json`, `{"request_id":"r","pc_id":""}`, `[]`, `{"pc_id":"p"}`}[i/100%5]
			msgs = append(msgs, pubMsg{subject: fmt.Sprintf("results.bad-%d", i), data: []byte(bad)})
		}
	}
	publishJS(t, h.broker.JS, msgs)
	h.waitCount("execution_results", 1000, 10*time.Second)
	h.waitCount("projection_errors", 10, 5*time.Second, "projection = 'results'", "stream = 'RESULTS'")
	h.consumerIdle(messages.StreamResults, DurableResults)
	var errs []storage.ProjectionError
	if err := h.store.R.NewSelect().Model(&errs).Order("stream_seq").Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, e := range errs {
		if e.StreamSeq == 0 || !strings.HasPrefix(e.Subject, "results.bad-") || e.Error == "" || len(e.Payload) == 0 {
			t.Fatalf("projection error = %+v", e)
		}
	}
	if got := h.metric("kanade_projection_poison_total", "projection", "results"); got != 10 {
		t.Fatalf("poison metric = %v", got)
	}
	// Terminated messages are not redelivered: one and a half AckWaits
	// later the consumer has redelivered nothing and no error was recorded
	// twice.
	time.Sleep(ackWait + ackWait/2)
	ci, err := h.consumerInfo(messages.StreamResults, DurableResults)
	if err != nil {
		t.Fatal(err)
	}
	if ci.NumRedelivered != 0 || ci.NumAckPending != 0 {
		t.Fatalf("after %v: %d redelivered, %d awaiting ack; poison must be terminated", ackWait+ackWait/2, ci.NumRedelivered, ci.NumAckPending)
	}
	if n := h.count("projection_errors"); n != 10 {
		t.Fatalf("%d projection errors after %v, want 10", n, ackWait+ackWait/2)
	}
}

// A database failure in the middle of the stream (a trigger that RAISEs
// until the test lifts it) fails batches; they are handed back, retried and
// every row arrives; nothing is recorded as poison.
func TestDatabaseFailureIsRetried(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ctx := context.Background()
	err := h.store.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		for _, q := range []string{
			`CREATE TABLE test_fail (on_ INTEGER)`,
			`INSERT INTO test_fail VALUES (1)`,
			`CREATE TRIGGER test_fail_results BEFORE INSERT ON execution_results
			 WHEN NEW.request_id = 'req-0500' AND (SELECT COUNT(*) FROM test_fail) > 0
			 BEGIN SELECT RAISE(ABORT, 'injected failure'); END`,
		} {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	h.start()
	var msgs []pubMsg
	for i := range 1000 {
		msgs = append(msgs, result(fmt.Sprintf("req-%04d", i), "pc-1", 0, "x", ""))
	}
	publishJS(t, h.broker.JS, msgs)
	retries := func() float64 { return h.metric("kanade_projection_retries_total", "projection", "results") }
	testsupport.Eventually(t, waitFor, func() error {
		if retries() == 0 {
			return fmt.Errorf("no retry yet")
		}
		return nil
	})
	if n := h.count("execution_results", "request_id = 'req-0500'"); n != 0 {
		t.Fatalf("the failing row is there while the failure lasts")
	}
	if _, err := h.store.W.ExecContext(ctx, `DELETE FROM test_fail`); err != nil {
		t.Fatal(err)
	}
	h.waitCount("execution_results", 1000, 15*time.Second)
	h.consumerIdle(messages.StreamResults, DurableResults)
	if n := h.count("projection_errors"); n != 0 {
		t.Fatalf("%d projection errors: a database failure is not poison", n)
	}
}

// A message that fails on its own every time (a trigger that rejects it)
// while the database takes other writes: its batch is applied message by
// message, the other 19 rows arrive, and the failing message is retried,
// never recorded as poison nor terminated (a database error is not poison;
// only an undecodable message is). The projection reports itself stalled
// with the reason while it waits; once the cause is removed the message
// goes through, without a restart, and the stall clears.
func TestPersistentFailureOfOneMessageIsRetriedNotPoisoned(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: Config{RetryDelay: 10 * time.Millisecond, MaxRetryDelay: 200 * time.Millisecond}})
	ctx := context.Background()
	if _, err := h.store.W.ExecContext(ctx, `CREATE TRIGGER test_fail_results BEFORE INSERT ON execution_results
		WHEN NEW.request_id = 'req-0005' BEGIN SELECT RAISE(ABORT, 'this row cannot be stored yet'); END`); err != nil {
		t.Fatal(err)
	}
	h.start()
	var msgs []pubMsg
	for i := range 20 {
		msgs = append(msgs, result(fmt.Sprintf("req-%04d", i), "pc-1", 0, "x", ""))
	}
	publishJS(t, h.broker.JS, msgs)
	h.waitCount("execution_results", 19, 15*time.Second)
	testsupport.Eventually(t, waitFor, func() error {
		st, ok := h.stall(ProjResults)
		if !ok || !strings.Contains(st.Reason, "seq 6") || !strings.Contains(st.Reason, "cannot be stored yet") || st.Cause != "other" {
			return fmt.Errorf("stall = %+v (%v), want seq 6 named with its error", st, ok)
		}
		if got := h.metric("kanade_projection_stalled", "projection", ProjResults); got != 1 {
			return fmt.Errorf("kanade_projection_stalled = %v", got)
		}
		return nil
	})
	// Several more deliveries while the cause lasts: still no poison.
	retried := h.metric("kanade_projection_retries_total", "projection", ProjResults)
	testsupport.Eventually(t, waitFor, func() error {
		if n := h.metric("kanade_projection_retries_total", "projection", ProjResults); n < retried+3 {
			return fmt.Errorf("retries %v, want a few more than %v", n, retried)
		}
		return nil
	})
	if n := h.count("projection_errors"); n != 0 {
		t.Fatalf("%d projection errors for a message the database refused", n)
	}
	if _, err := h.store.W.ExecContext(ctx, `DROP TRIGGER test_fail_results`); err != nil {
		t.Fatal(err)
	}
	h.waitCount("execution_results", 20, 15*time.Second)
	h.consumerIdle(messages.StreamResults, DurableResults)
	testsupport.Eventually(t, waitFor, func() error {
		if st, ok := h.stall(ProjResults); ok {
			return fmt.Errorf("still stalled: %+v", st)
		}
		if got := h.metric("kanade_projection_stalled", "projection", ProjResults); got != 0 {
			return fmt.Errorf("kanade_projection_stalled = %v", got)
		}
		return nil
	})
	if n := h.count("projection_errors"); n != 0 {
		t.Fatalf("%d projection errors", n)
	}
}

// Inventory jobs: JSON stdout becomes facts with the display snapshot; a
// non-JSON stdout is a projection error for that row, the result is stored.
func TestInventoryFacts(t *testing.T) {
	h := newHarness(t, harnessOpts{}).start()
	kv := h.broker.KV(t, messages.BucketJobs)
	manifest := `{"id":"hw","version":"1","description":null,"execute":{"shell":"powershell","script":"x","timeout":"1m"},` +
		`"require_approval":false,"inventory":{"display":[{"field":"cpu","label":"CPU"}],"summary":[{"field":"ram","label":"RAM","type":"bytes"}]}}`
	if _, err := kv.Put(context.Background(), "hw", []byte(manifest)); err != nil {
		t.Fatal(err)
	}
	h.waitCount("jobs", 1, 5*time.Second, "id = 'hw'", "has_inventory = 1")
	publishJS(t, h.broker.JS, []pubMsg{
		result("req-1", "pc-a", 0, "  {\"cpu\": \"x86\", \"ram\": 8589934592}\n", "hw"),
		result("req-1", "pc-b", 0, "Get-WmiObject: access denied", "hw"),
		result("req-1", "pc-c", 1, "not json either, but a failed run has no facts", "hw"),
	})
	h.waitCount("execution_results", 3, 5*time.Second)
	h.waitCount("inventory_facts", 1, 5*time.Second)
	var f storage.InventoryFact
	if err := h.store.R.NewSelect().Model(&f).Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.PcID != "pc-a" || f.JobID != "hw" || string(f.Facts) != `{"cpu":"x86","ram":8589934592}` ||
		string(f.Display) != `[{"field":"cpu","label":"CPU"}]` || string(f.Summary) != `[{"field":"ram","label":"RAM","type":"bytes"}]` ||
		!f.CollectedAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("facts = %+v (facts %s display %s summary %s)", f, f.Facts, f.Display, f.Summary)
	}
	h.waitCount("projection_errors", 1, 5*time.Second, "error LIKE '%not one JSON value%'", "subject = 'results.req-1'")

	// An older result (replayed late) does not replace newer facts.
	old := messages.ExecResult{RequestID: "req-0", PcID: "pc-a", Stdout: `{"cpu":"old"}`, StartedAt: t0.Add(-time.Hour), FinishedAt: t0.Add(-time.Hour)}
	job := "hw"
	old.ManifestID = &job
	b, _ := json.Marshal(old)
	publishJS(t, h.broker.JS, []pubMsg{{subject: "results.req-0", data: b}})
	h.waitCount("execution_results", 4, 5*time.Second)
	h.waitCount("inventory_facts", 1, time.Second, `facts = '{"cpu":"x86","ram":8589934592}'`)
}

// A crash of the results projector in the middle of a batch: the actor is
// restarted, resumes from its consumer, and every row arrives once.
func TestCrashedProjectorResumes(t *testing.T) {
	var crashed atomicBool
	setBeforeCommit(t, func(projection string) error {
		if projection == ProjResults && crashed.CompareAndSwap(false, true) {
			panic("injected crash")
		}
		return nil
	})
	h := newHarness(t, harnessOpts{cfg: Config{RestartBackoff: 50 * time.Millisecond}}).start()
	var msgs []pubMsg
	for i := range 600 {
		msgs = append(msgs, result(fmt.Sprintf("req-%04d", i), "pc-1", 0, "x", ""))
	}
	publishJS(t, h.broker.JS, msgs)
	h.waitCount("execution_results", 600, 15*time.Second)
	h.consumerIdle(messages.StreamResults, DurableResults)
	if !crashed.Load() {
		t.Fatal("the crash was not injected")
	}
	if got := h.metric("kanade_projection_restarts_total"); got < 1 {
		t.Fatalf("restarts = %v", got)
	}
}

// A durable consumer deleted under a running projector (an operator's
// mistake) is recreated from the checkpoint and projection carries on.
func TestDeletedConsumerIsRecreated(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: Config{RestartBackoff: 10 * time.Millisecond}}).start()
	publishJS(t, h.broker.JS, []pubMsg{result("req-1", "pc", 0, "", "")})
	h.waitCount("execution_results", 1, 5*time.Second)
	if err := h.broker.JS.DeleteConsumer(context.Background(), messages.StreamResults, DurableResults); err != nil {
		t.Fatal(err)
	}
	publishJS(t, h.broker.JS, []pubMsg{result("req-2", "pc", 0, "", "")})
	h.waitCount("execution_results", 2, 20*time.Second)
}
