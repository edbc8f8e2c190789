package projector

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

// applyResults runs the results projection's apply on batch in one
// transaction, as the stream projector does, and returns its outcome.
func applyResults(t *testing.T, st *storage.Store, now time.Time, batch []envelope[resultItem]) outcome {
	t.Helper()
	out, err := tryApplyResults(st, now, batch)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func tryApplyResults(st *storage.Store, now time.Time, batch []envelope[resultItem]) (outcome, error) {
	var out outcome
	err := st.InTx(context.Background(), func(ctx context.Context, tx bun.Tx) error {
		out = outcome{}
		return resultsCodec{}.apply(ctx, tx, now, batch, &out)
	})
	if err != nil {
		return out, fmt.Errorf("apply %d results: %w", len(batch), err)
	}
	return out, nil
}

// envelopes decodes msgs as the pump does, numbering them from seq.
func envelopes(t *testing.T, seq uint64, msgs ...pubMsg) []envelope[resultItem] {
	t.Helper()
	out := make([]envelope[resultItem], len(msgs))
	for i, m := range msgs {
		r, err := resultsCodec{}.decode(m.data)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = envelope[resultItem]{seq: seq + uint64(i), subject: m.subject, data: m.data, item: r}
	}
	return out
}

func projectedCount(out outcome) int {
	n := 0
	for _, ev := range out.events {
		if p, ok := ev.(*messages.ResultsProjected); ok {
			n += len(p.Results)
		}
	}
	return n
}

// The results projection on both databases: duplicates inside a batch,
// redeliveries and a second writer applying the same batch at the same
// time store each (request_id, pc_id) once and count each expected PC
// once; the counters settle the exec without any count over its expected
// PCs until they say it may be done.
func TestResultsApplyOnBothDialects(t *testing.T) {
	storagetest.ForEachDialect(t, func(t *testing.T, st *storage.Store) {
		now := t0.Add(10 * time.Second)
		insertExec(t, st, execFixture{id: "ex", expected: []string{"pc-a", "pc-b", "pc-c"},
			requests: map[string]string{"req": messages.SubjectCommandsAll, "req-a": "commands.pc.pc-a"}})

		// Out of key order, as a fleet answers: the insert sorts the batch
		// by key and must still tell which envelope each new row came from.
		first := envelopes(t, 1,
			result("req-other", "pc-a", 0, "", ""),
			result("req", "pc-zz", 0, "", ""), // not expected: stored, attributed, not counted
			result("req", "pc-b", 2, "", ""),
			result("req", "pc-a", 0, "first", ""),
			result("req-a", "pc-b", 0, "", ""),          // another PC's Command: stored, unexpected
			result("req", "pc-a", 1, "second copy", ""), // same key in the batch: the first wins
		)
		// Two writers apply the same batch at once (replicas on PostgreSQL;
		// SQLite's one writer runs them in turn): together they store and
		// count what one would.
		var wg sync.WaitGroup
		outs := make([]outcome, 2)
		errs := make([]error, 2)
		for w := range outs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				outs[w], errs[w] = tryApplyResults(st, now, first)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if a, b := projectedCount(outs[0]), projectedCount(outs[1]); a+b != 5 || (a != 0 && b != 0) {
			t.Fatalf("the two writers projected %d and %d results, want 5 once", a, b)
		}
		if n := len(outs[0].errors) + len(outs[1].errors); n != 1 {
			t.Fatalf("%d unexpected-result errors, want 1", n)
		}
		wantExecNow(t, st, "ex", storage.ExecRunning, 1, 1)
		var rows []storage.ExecutionResult
		if err := st.R.NewSelect().Model(&rows).Order("request_id", "pc_id").Scan(context.Background()); err != nil {
			t.Fatal(err)
		}
		got := ""
		for _, r := range rows {
			exec := ""
			if r.ExecID != nil {
				exec = *r.ExecID
			}
			got += fmt.Sprintf("%s/%s/%s/%d/%q ", r.RequestID, r.PcID, exec, r.ExitCode, r.Stdout)
		}
		want := `req/pc-a/ex/0/"first" req/pc-b/ex/2/"" req/pc-zz/ex/0/"" req-a/pc-b//0/"" req-other/pc-a//0/"" `
		if got != want {
			t.Fatalf("rows:\n got %s\nwant %s", got, want)
		}

		// A redelivery of the whole batch changes nothing.
		if out := applyResults(t, st, now, first); projectedCount(out) != 0 || len(out.errors) != 0 {
			t.Fatalf("redelivery projected %d results, %d errors", projectedCount(out), len(out.errors))
		}
		wantExecNow(t, st, "ex", storage.ExecRunning, 1, 1)

		// pc-a answers again through its own Command (a new row, no new
		// count); pc-c is the last expected PC: the exec fails (pc-b exited
		// 2) at pc-c's finished_at.
		last := messages.ExecResult{RequestID: "req", PcID: "pc-c", StartedAt: t0, FinishedAt: t0.Add(3 * time.Second)}
		data, _ := json.Marshal(last)
		out := applyResults(t, st, now, append(envelopes(t, 10, result("req-a", "pc-a", 0, "", "")),
			envelopes(t, 11, pubMsg{subject: messages.ResultsSubject("req"), data: data})...))
		if projectedCount(out) != 2 {
			t.Fatalf("projected %d results, want 2", projectedCount(out))
		}
		wantExecNow(t, st, "ex", storage.ExecFailed, 2, 1)
		if ex := execRow(t, st, "ex"); !ex.FinishedAt.Equal(t0.Add(3 * time.Second)) {
			t.Fatalf("finished_at = %v, want pc-c's answer %v", ex.FinishedAt.Time, t0.Add(3*time.Second))
		}
		var progressed []*messages.ExecProgressed
		for _, ev := range out.events {
			if p, ok := ev.(*messages.ExecProgressed); ok {
				progressed = append(progressed, p)
			}
		}
		if len(progressed) != 1 || progressed[0].Status != storage.ExecFailed || progressed[0].Success != 2 || progressed[0].Failure != 1 {
			t.Fatalf("ExecProgressed events = %+v", progressed)
		}
	})
}

// wantExecNow checks the exec row as it is (no waiting: apply has
// committed).
func wantExecNow(t *testing.T, st *storage.Store, id, status string, success, failure int) {
	t.Helper()
	ex := execRow(t, st, id)
	if ex.Status != status || ex.SuccessCount != success || ex.FailureCount != failure {
		t.Fatalf("exec %s: %s %d/%d, want %s %d/%d", id, ex.Status, ex.SuccessCount, ex.FailureCount, status, success, failure)
	}
}
