package projector

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/actors/clock"
	"kanade-backend/internal/testsupport"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

const day = 24 * time.Hour

func TestRetentionSweep(t *testing.T) { storagetest.ForEachDialect(t, testRetentionSweep) }

func testRetentionSweep(t *testing.T, st *storage.Store) {
	now := t0
	fake := clock.NewFake(now)
	h := newHarness(t, harnessOpts{clock: fake, store: st, cfg: Config{Retention: Retention{
		ResultsDays: 90, AuditDays: 365, ProjectionErrorsDays: 30, SweepInterval: time.Hour, BatchRows: 7,
	}}})
	ctx := context.Background()
	ago := func(d time.Duration) storage.Time { return storage.T(now.Add(-d)) }
	exec := func(id, status string, created time.Duration) storage.Execution {
		return storage.Execution{ExecID: id, JobID: "j", Version: "1", InitiatedBy: "t", Plan: json.RawMessage(`{}`),
			Subjects: json.RawMessage(`[]`), Status: status, CreatedAt: ago(created), DeadlineAt: ago(created - time.Hour), UpdatedAt: ago(created)}
	}
	err := h.store.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		execs := []storage.Execution{
			exec("old-done", storage.ExecCompleted, 100*day),
			// Still running: a wave published late pushed its deadline out,
			// so the expiry sweep leaves it alone too.
			exec("old-running", storage.ExecRunning, 100*day),
			exec("old-waves", storage.ExecFailed, 100*day),
			exec("new-done", storage.ExecCompleted, 10*day),
		}
		execs[1].DeadlineAt = storage.T(now.Add(3 * day))
		if _, err := tx.NewInsert().Model(&execs).Exec(ctx); err != nil {
			return err
		}
		wave := storage.ExecWave{ExecID: "old-waves", WaveIndex: 1, GroupName: "g", DueAt: ago(99 * day), State: storage.WavePending}
		if _, err := tx.NewInsert().Model(&wave).Exec(ctx); err != nil {
			return err
		}
		var expected []storage.ExecExpected
		var reqs []storage.PublishedRequest
		for i := range 20 {
			for _, id := range []string{"old-done", "old-running"} {
				expected = append(expected, storage.ExecExpected{ExecID: id, PcID: fmt.Sprintf("pc-%d", i)})
				reqs = append(reqs, storage.PublishedRequest{RequestID: fmt.Sprintf("%s-%d", id, i), ExecID: id, Subject: "s"})
			}
		}
		if _, err := tx.NewInsert().Model(&expected).Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewInsert().Model(&reqs).Exec(ctx); err != nil {
			return err
		}
		var results []storage.ExecutionResult
		add := func(req, execID string, finished time.Duration) {
			r := storage.ExecutionResult{RequestID: req, PcID: "pc", StartedAt: ago(finished), FinishedAt: ago(finished), RecordedAt: ago(finished)}
			if execID != "" {
				r.ExecID = &execID
			}
			results = append(results, r)
		}
		for i := range 25 {
			add(fmt.Sprintf("old-%d", i), "", 91*day)
		}
		add("old-of-done", "old-done", 95*day)
		add("old-of-running", "old-running", 95*day)
		add("old-of-waves", "old-waves", 95*day)
		add("recent", "", 89*day)
		if _, err := tx.NewInsert().Model(&results).Exec(ctx); err != nil {
			return err
		}
		audits := []storage.AuditRow{
			{StreamSeq: 1, Actor: "a", Action: "x", Payload: json.RawMessage(`{}`), OccurredAt: ago(366 * day), RecordedAt: ago(0)},
			{StreamSeq: 2, Actor: "a", Action: "x", Payload: json.RawMessage(`{}`), OccurredAt: ago(364 * day), RecordedAt: ago(0)},
		}
		if _, err := tx.NewInsert().Model(&audits).Exec(ctx); err != nil {
			return err
		}
		errs := []storage.ProjectionError{
			{Projection: "heartbeat", Subject: "heartbeat.x", Error: "e", RecordedAt: ago(31 * day)},
			{Projection: "heartbeat", Subject: "heartbeat.y", Error: "e", RecordedAt: ago(29 * day)},
		}
		_, err := tx.NewInsert().Model(&errs).Exec(ctx)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	h.start()
	if h.count("execution_results") != 29 {
		t.Fatal("swept before the first tick")
	}
	fake.Advance(time.Minute)
	h.waitCount("execution_results", 3, 5*time.Second)
	h.waitCount("execution_results", 1, time.Second, "request_id = 'old-of-running'")
	h.waitCount("execution_results", 1, time.Second, "request_id = 'old-of-waves'")
	h.waitCount("executions", 3, 5*time.Second)
	h.waitCount("executions", 0, time.Second, "exec_id = 'old-done'")
	h.waitCount("exec_expected", 20, time.Second)
	h.waitCount("exec_requests", 20, time.Second)
	h.waitCount("exec_waves", 1, time.Second)
	h.waitCount("audit_log", 1, time.Second, "stream_seq = 2")
	h.waitCount("projection_errors", 1, time.Second, "subject = 'heartbeat.y'")
	testsupport.Eventually(t, waitFor, func() error {
		if got := h.metric("kanade_retention_deleted_rows_total", "table", "execution_results"); got != 26 {
			return fmt.Errorf("deleted results metric = %v", got)
		}
		return nil
	})

	// A day later the recent result is past 90 days too.
	fake.Advance(day)
	h.waitCount("execution_results", 2, 5*time.Second)
}
