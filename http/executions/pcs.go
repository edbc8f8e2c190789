package executions

import (
	"context"
	"fmt"
	"time"

	"kanade-backend/storage"
)

// Per-PC states of an exec.
const (
	// StateAnswered: a result arrived (exit code and duration known).
	StateAnswered = "answered"
	// StatePending: expected, no result yet, deadline not passed.
	StatePending = "pending"
	// StateNeverAnswered: expected, no result, deadline passed.
	StateNeverAnswered = "never_answered"
)

// PCStatus is one PC of an exec.
type PCStatus struct {
	PcID  string `json:"pc_id"`
	State string `json:"state"`
	// Expected is false for a PC that answered without being expected (a
	// broadcast reached an agent that was not alive when the exec
	// resolved its target).
	Expected   bool         `json:"expected"`
	RequestID  *string      `json:"request_id"`
	ExitCode   *int         `json:"exit_code"`
	StartedAt  storage.Time `json:"started_at"`
	FinishedAt storage.Time `json:"finished_at"`
	DurationMs *int64       `json:"duration_ms"`
}

// pcStatuses joins the exec's expected PCs with its results. Results find
// the exec through exec_requests (the ExecResult carries no exec_id); a PC
// with several results (reached by two subjects) shows its latest.
func pcStatuses(ctx context.Context, st *storage.Store, ex *storage.Execution, now time.Time) ([]PCStatus, error) {
	var expected []string
	if err := st.R.NewSelect().Model((*storage.ExecExpected)(nil)).Column("pc_id").
		Where("exec_id = ?", ex.ExecID).Order("pc_id").Scan(ctx, &expected); err != nil {
		return nil, fmt.Errorf("load expected PCs of exec %s: %w", ex.ExecID, err)
	}
	var results []storage.ExecutionResult
	if err := st.R.NewSelect().Model(&results).
		ColumnExpr("r.request_id, r.pc_id, r.exit_code, r.started_at, r.finished_at").
		ModelTableExpr("execution_results AS r").
		Join("JOIN exec_requests AS q ON q.request_id = r.request_id").
		Where("q.exec_id = ?", ex.ExecID).
		OrderExpr("r.pc_id, r.finished_at").Scan(ctx); err != nil {
		return nil, fmt.Errorf("load results of exec %s: %w", ex.ExecID, err)
	}
	latest := make(map[string]*storage.ExecutionResult, len(results))
	var order []string
	for i := range results {
		res := &results[i]
		if _, ok := latest[res.PcID]; !ok {
			order = append(order, res.PcID)
		}
		latest[res.PcID] = res // ordered by finished_at: the last one wins
	}
	silent := StatePending
	if ex.Status == storage.ExecExpired || now.After(ex.DeadlineAt.Time) {
		silent = StateNeverAnswered
	}
	out := make([]PCStatus, 0, len(expected)+len(results))
	isExpected := make(map[string]bool, len(expected))
	for _, pc := range expected {
		isExpected[pc] = true
		out = append(out, status(pc, true, latest[pc], silent))
	}
	for _, pc := range order {
		if !isExpected[pc] {
			out = append(out, status(pc, false, latest[pc], silent))
		}
	}
	return out, nil
}

func status(pc string, expected bool, res *storage.ExecutionResult, silent string) PCStatus {
	if res == nil {
		return PCStatus{PcID: pc, State: silent, Expected: expected}
	}
	code := res.ExitCode
	rid := res.RequestID
	ms := res.FinishedAt.Sub(res.StartedAt.Time).Milliseconds()
	return PCStatus{PcID: pc, State: StateAnswered, Expected: expected, RequestID: &rid, ExitCode: &code,
		StartedAt: res.StartedAt, FinishedAt: res.FinishedAt, DurationMs: &ms}
}
