package projector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/actors/clock"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker/brokertest"
)

// execFixture inserts what the exec engine writes when it fires: the
// executions row (pending, deadline = created + timeout + jitter +
// margin), its request_ids and its expected PCs.
type execFixture struct {
	id       string
	requests map[string]string // request_id → subject
	expected []string
	waves    []string // states of rollout waves
}

func insertExec(t *testing.T, st *storage.Store, f execFixture) {
	t.Helper()
	err := st.InTx(context.Background(), func(ctx context.Context, tx bun.Tx) error {
		ex := storage.Execution{
			ExecID: f.id, JobID: "job-" + f.id, Version: "1", InitiatedBy: "operator:test",
			Plan: json.RawMessage(`{}`), Subjects: json.RawMessage(`[]`), TargetCount: len(f.requests),
			ExpectedPcs: len(f.expected), Status: storage.ExecPending, TimeoutSecs: 30,
			CreatedAt: storage.T(t0), DeadlineAt: storage.T(t0.Add(90 * time.Second)), UpdatedAt: storage.T(t0),
		}
		if _, err := tx.NewInsert().Model(&ex).Exec(ctx); err != nil {
			return err
		}
		for req, subj := range f.requests {
			r := storage.PublishedRequest{RequestID: req, ExecID: f.id, Subject: subj, PublishedAt: storage.T(t0)}
			if _, err := tx.NewInsert().Model(&r).Exec(ctx); err != nil {
				return err
			}
		}
		for _, pc := range f.expected {
			if _, err := tx.NewInsert().Model(&storage.ExecExpected{ExecID: f.id, PcID: pc}).Exec(ctx); err != nil {
				return err
			}
		}
		for i, state := range f.waves {
			w := storage.ExecWave{ExecID: f.id, WaveIndex: i, GroupName: "g", DueAt: storage.T(t0), State: state}
			if _, err := tx.NewInsert().Model(&w).Exec(ctx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func execRow(t testing.TB, st *storage.Store, id string) storage.Execution {
	t.Helper()
	var ex storage.Execution
	if err := st.R.NewSelect().Model(&ex).Where("exec_id = ?", id).Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	return ex
}

func wantExec(t *testing.T, st *storage.Store, id, status string, success, failure int) {
	t.Helper()
	testsupport.Eventually(t, waitFor, func() error {
		ex := execRow(t, st, id)
		if ex.Status != status || ex.SuccessCount != success || ex.FailureCount != failure {
			return fmt.Errorf("exec %s: %s %d/%d, want %s %d/%d", id, ex.Status, ex.SuccessCount, ex.FailureCount, status, success, failure)
		}
		return nil
	})
}

func TestExecProgress(t *testing.T) {
	// The backend's clock is 10 s past the agents' finished_at (t0 + 1 s).
	fake := clock.NewFake(t0.Add(10 * time.Second))
	h := newHarness(t, harnessOpts{clock: fake}).start()
	st := h.store
	// failed: 2 answer 0 and 1 answers 2. The broadcast request is also
	// answered by a PC the exec did not expect, and pc-a is reached a second
	// time through its own subject; neither may count.
	insertExec(t, st, execFixture{id: "ex-failed", requests: map[string]string{"req-f": "commands.group.g", "req-f2": "commands.pc.pc-a"}, expected: []string{"pc-a", "pc-b", "pc-c"}})
	// completed: all 0.
	insertExec(t, st, execFixture{id: "ex-done", requests: map[string]string{"req-d": "commands.all"}, expected: []string{"pc-a", "pc-b", "pc-c"}})
	// expired: nobody answers.
	insertExec(t, st, execFixture{id: "ex-silent", requests: map[string]string{"req-s": "commands.all"}, expected: []string{"pc-a", "pc-b", "pc-c"}})
	// expired with partial answers.
	insertExec(t, st, execFixture{id: "ex-partial", requests: map[string]string{"req-p": "commands.all"}, expected: []string{"pc-a", "pc-b", "pc-c"}})
	// every expected PC answered, but a rollout wave is still to come.
	insertExec(t, st, execFixture{id: "ex-waves", requests: map[string]string{"req-w": "commands.group.canary"}, expected: []string{"pc-a"}, waves: []string{storage.WavePublished, storage.WavePending}})

	publishJS(t, h.broker.JS, []pubMsg{
		result("req-f", "pc-a", 0, "", ""),
		result("req-f", "pc-b", 0, "", ""),
		result("req-f", "pc-zz", 0, "", ""),
		result("req-f2", "pc-a", 1, "", ""),
		result("req-d", "pc-a", 0, "", ""),
		result("req-d", "pc-b", 0, "", ""),
		result("req-p", "pc-a", 0, "", ""),
		result("req-p", "pc-b", 3, "", ""),
		result("req-w", "pc-a", 0, "", ""),
	})
	wantExec(t, st, "ex-failed", storage.ExecRunning, 2, 0)
	wantExec(t, st, "ex-done", storage.ExecRunning, 2, 0)
	wantExec(t, st, "ex-partial", storage.ExecRunning, 1, 1)
	wantExec(t, st, "ex-waves", storage.ExecRunning, 1, 0)
	wantExec(t, st, "ex-silent", storage.ExecPending, 0, 0)

	publishJS(t, h.broker.JS, []pubMsg{
		result("req-f", "pc-c", 2, "", ""),
		result("req-f", "pc-c", 2, "", ""), // published twice
		result("req-d", "pc-c", 0, "", ""),
	})
	wantExec(t, st, "ex-failed", storage.ExecFailed, 2, 1)
	wantExec(t, st, "ex-done", storage.ExecCompleted, 2+1, 0)
	h.waitCount("execution_results", 2, time.Second, "pc_id = 'pc-a'", "exec_id = 'ex-failed'")
	h.waitCount("execution_results", 1, time.Second, "pc_id = 'pc-zz'", "exec_id = 'ex-failed'")
	var answer storage.ExecExpected
	if err := st.R.NewSelect().Model(&answer).Where("exec_id = 'ex-failed' AND pc_id = 'pc-c'").Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	if answer.ExitCode == nil || *answer.ExitCode != 2 || answer.RequestID == nil || *answer.RequestID != "req-f" || !answer.AnsweredAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("exec_expected answer = %+v", answer)
	}
	if ex := execRow(t, st, "ex-done"); !ex.FinishedAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("finished_at = %v, want the last answer's finished_at %v, not the projection time", ex.FinishedAt, t0.Add(time.Second))
	}

	// Before the deadline (t0 + 90 s) nothing expires.
	fake.Advance(60 * time.Second)
	time.Sleep(50 * time.Millisecond)
	wantExec(t, st, "ex-silent", storage.ExecPending, 0, 0)
	// After it (created + timeout + jitter + margin = t0 + 90 s).
	testsupport.Eventually(t, waitFor, func() error {
		fake.Advance(5 * time.Second)
		if ex := execRow(t, st, "ex-silent"); ex.Status != storage.ExecExpired {
			return fmt.Errorf("ex-silent is %s", ex.Status)
		}
		return nil
	})
	if ex := execRow(t, st, "ex-silent"); !ex.FinishedAt.Equal(t0.Add(90 * time.Second)) {
		t.Fatalf("expired exec finished_at = %v, want its deadline %v", ex.FinishedAt, t0.Add(90*time.Second))
	}
	wantExec(t, st, "ex-partial", storage.ExecExpired, 1, 1)
	wantExec(t, st, "ex-waves", storage.ExecRunning, 1, 0) // a wave is pending: not over
	wantExec(t, st, "ex-failed", storage.ExecFailed, 2, 1)
	wantExec(t, st, "ex-done", storage.ExecCompleted, 3, 0)
	if got := h.metric("kanade_exec_expired_total"); got != 2 {
		t.Fatalf("expired metric = %v", got)
	}

	// A late answer after expiry counts but leaves the status.
	publishJS(t, h.broker.JS, []pubMsg{result("req-s", "pc-a", 0, "", "")})
	wantExec(t, st, "ex-silent", storage.ExecExpired, 1, 0)

	byExec := map[string][]string{}
	for _, ev := range eventsOf[*messages.ExecProgressed](h) {
		byExec[ev.ExecID] = append(byExec[ev.ExecID], fmt.Sprintf("%s %d/%d of %d", ev.Status, ev.Success, ev.Failure, ev.Expected))
	}
	if got := byExec["ex-failed"]; len(got) == 0 || got[len(got)-1] != "failed 2/1 of 3" {
		t.Fatalf("ExecProgressed for ex-failed: %v", got)
	}
	if got := byExec["ex-silent"]; len(got) != 2 || got[0] != "expired 0/0 of 3" {
		t.Fatalf("ExecProgressed for ex-silent: %v", got)
	}
}

// After downtime the answers to an exec past its deadline may still wait in
// the RESULTS backlog: the expiry sweeper waits until the results
// projection has applied that backlog, so the exec completes instead of
// expiring with PCs called silent that did answer.
func TestExpiryWaitsForTheResultsBacklog(t *testing.T) {
	fake := clock.NewFake(t0.Add(time.Hour)) // long past the deadline (t0 + 90 s)
	b := brokertest.Start(t)
	h := newHarness(t, harnessOpts{broker: b, clock: fake})
	insertExec(t, h.store, execFixture{id: "ex-late", requests: map[string]string{"req-l": "commands.all"}, expected: []string{"pc-a", "pc-b"}})
	publishJS(t, b.JS, []pubMsg{result("req-l", "pc-a", 0, "", ""), result("req-l", "pc-b", 0, "", "")})

	// The backlog cannot be applied for now (the database refuses it).
	var blocked atomicBool
	blocked.Store(true)
	var attempts atomic.Int32
	setBeforeCommit(t, func(projection string) error {
		if projection == ProjResults && blocked.Load() {
			attempts.Add(1)
			return errors.New("injected: results batch refused")
		}
		return nil
	})
	h.start()
	testsupport.Eventually(t, waitFor, func() error {
		if attempts.Load() == 0 {
			return errors.New("no results batch tried yet")
		}
		return nil
	})
	for range 3 {
		fake.Advance(h.cfg.withDefaults().ExpiryInterval)
		time.Sleep(30 * time.Millisecond)
	}
	if ex := execRow(t, h.store, "ex-late"); ex.Status != storage.ExecPending {
		t.Fatalf("exec is %s while its answers were still in the backlog", ex.Status)
	}
	blocked.Store(false)
	wantExec(t, h.store, "ex-late", storage.ExecCompleted, 2, 0)

	// Once current, expiry runs again: a silent exec expires.
	insertExec(t, h.store, execFixture{id: "ex-silent", requests: map[string]string{"req-s": "commands.all"}, expected: []string{"pc-a"}})
	testsupport.Eventually(t, waitFor, func() error {
		fake.Advance(h.cfg.withDefaults().ExpiryInterval)
		if ex := execRow(t, h.store, "ex-silent"); ex.Status != storage.ExecExpired {
			return fmt.Errorf("ex-silent is %s", ex.Status)
		}
		return nil
	})
}

// A result answering a Command that was sent to another PC (commands.pc.X
// answered with pc_id Y) is recorded as unexpected: stored without its
// exec, kept as a projection error, never counted as Y's answer, even when
// Y is expected by the same exec through its own request.
func TestResultForAnotherPCsRequestIsUnexpected(t *testing.T) {
	fake := clock.NewFake(t0.Add(10 * time.Second))
	h := newHarness(t, harnessOpts{clock: fake}).start()
	st := h.store
	insertExec(t, st, execFixture{id: "ex-two", requests: map[string]string{"req-x": "commands.pc.pc-x", "req-y": "commands.pc.pc-y"},
		expected: []string{"pc-x", "pc-y"}})
	publishJS(t, h.broker.JS, []pubMsg{
		result("req-x", "pc-y", 0, "", ""), // pc-y claims success on pc-x's Command
		result("req-x", "pc-x", 1, "", ""), // pc-x's own answer: failed
	})
	wantExec(t, st, "ex-two", storage.ExecRunning, 0, 1)
	h.waitCount("projection_errors", 1, 5*time.Second, "projection = 'results'",
		"error = 'unexpected result: request req-x was sent to pc pc-x, not to pc pc-y'")
	h.waitCount("execution_results", 1, time.Second, "request_id = 'req-x'", "pc_id = 'pc-y'", "exec_id IS NULL")
	h.waitCount("execution_results", 1, time.Second, "request_id = 'req-x'", "pc_id = 'pc-x'", "exec_id = 'ex-two'")
	var y storage.ExecExpected
	if err := st.R.NewSelect().Model(&y).Where("exec_id = 'ex-two' AND pc_id = 'pc-y'").Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !y.AnsweredAt.IsZero() {
		t.Fatalf("pc-y counted as answered: %+v", y)
	}
	// Its own answer still counts.
	publishJS(t, h.broker.JS, []pubMsg{result("req-y", "pc-y", 0, "", "")})
	wantExec(t, st, "ex-two", storage.ExecFailed, 1, 1)
}
