package storagetest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"kanade-backend/storage"
)

// Fleet sizes a synthetic read model for benchmarks and API tests. Rows are
// written straight into the database (either dialect) in large batches, which is how a fleet of
// this size can be set up in seconds instead of being projected message by
// message.
type Fleet struct {
	Agents int
	// Results is the number of execution_results rows; they are spread over
	// Results/ResultsPerExec execs, each answered by ResultsPerExec PCs.
	Results        int
	ResultsPerExec int
	Jobs           int
	Audit          int
	// FailureEvery makes every n-th result a failure (exit code 1).
	FailureEvery int
	// End is the newest finished_at; execs are spaced Spacing apart
	// before it.
	End     time.Time
	Spacing time.Duration
}

// DefaultFleet is the performance budget's size: 10 000 agents and
// 1 000 000 results (architecture.md §6).
func DefaultFleet(end time.Time) Fleet {
	return Fleet{Agents: 10_000, Results: 1_000_000, ResultsPerExec: 2_000, Jobs: 20, Audit: 100_000,
		FailureEvery: 10, End: end, Spacing: 5 * time.Minute}
}

// PcID is the pc_id of the i-th seeded agent.
func PcID(i int) string { return fmt.Sprintf("pc-%05d", i) }

// JobID is the id of the i-th seeded job.
func JobID(i int) string { return fmt.Sprintf("job-%02d", i) }

// ExecID is the exec_id of the i-th seeded exec.
func ExecID(i int) string { return fmt.Sprintf("exec-%06d", i) }

// Seed writes f into st with multi-row INSERTs on the writer connection.
func Seed(ctx context.Context, st *storage.Store, f Fleet) error {
	if f.ResultsPerExec <= 0 {
		f.ResultsPerExec = 1
	}
	if f.Jobs <= 0 {
		f.Jobs = 1
	}
	if f.Spacing <= 0 {
		f.Spacing = time.Minute
	}
	end := f.End.UTC()
	if !st.IsPostgres() {
		// Index pages of a million rows do not fit the default 2 MB page
		// cache; a larger one for the writer connection only speeds up the
		// load.
		if _, err := st.W.DB.ExecContext(ctx, "PRAGMA cache_size = -262144"); err != nil {
			return fmt.Errorf("seed: raise cache size: %w", err)
		}
		defer st.W.DB.ExecContext(ctx, "PRAGMA cache_size = -2000") //nolint:errcheck // best effort
	}
	ins := &batchInserter{ctx: ctx, st: st}

	ins.start("agents", "pc_id, hostname, os_family, agent_version, last_heartbeat, updated_at", 6)
	for i := 0; i < f.Agents; i++ {
		// Nine in ten agents are online; the rest went quiet a day ago.
		hb := end.Add(-time.Duration(i%30) * time.Second)
		if i%10 == 9 {
			hb = end.Add(-24 * time.Hour)
		}
		ins.row(PcID(i), "HOST-"+PcID(i), "windows", "0.21.2", storage.FormatTime(hb), storage.FormatTime(hb))
	}

	ins.start("jobs", "id, version, description, has_inventory, manifest, kv_revision, updated_at", 7)
	for j := 0; j < f.Jobs; j++ {
		inv := j%4 == 0
		manifest := fmt.Sprintf(`{"id":%q,"version":"1.0","description":"seeded job %d","execute":{"shell":"powershell","script":"Get-Date","timeout":"60s","run_as":"system"},"require_approval":false,"inventory":null}`, JobID(j), j)
		if inv {
			manifest = fmt.Sprintf(`{"id":%q,"version":"1.0","description":"seeded inventory job %d","execute":{"shell":"powershell","script":"Get-Date","timeout":"60s","run_as":"system"},"require_approval":false,"inventory":{"display":[{"field":"os","label":"OS"},{"field":"ram","label":"RAM","type":"bytes"}],"summary":[{"field":"os","label":"OS"}]}}`, JobID(j), j)
		}
		ins.row(JobID(j), "1.0", fmt.Sprintf("seeded job %d", j), inv, manifest, j+1, storage.FormatTime(end))
	}

	ins.start("execution_results", "request_id, pc_id, exec_id, job_id, exit_code, stdout, stderr, started_at, finished_at, recorded_at, stream_seq", 11)
	execs := f.Results / f.ResultsPerExec
	seq := 0
	for e := 0; e < execs; e++ {
		// Exec 0 is the newest; one broadcast request_id per exec, answered
		// by ResultsPerExec PCs in a window of a few seconds.
		t0 := end.Add(-time.Duration(e) * f.Spacing)
		job := JobID(e % f.Jobs)
		for k := 0; k < f.ResultsPerExec; k++ {
			seq++
			pc := PcID((e*f.ResultsPerExec + k) % max(f.Agents, 1))
			finished := t0.Add(-time.Duration(k) * time.Millisecond)
			exit := 0
			if f.FailureEvery > 0 && seq%f.FailureEvery == 0 {
				exit = 1
			}
			ins.row(fmt.Sprintf("req-%06d", e), pc, ExecID(e), job, exit,
				`{"os":"Windows 11 Pro","ram":17179869184}`, "",
				storage.FormatTime(finished.Add(-2*time.Second)), storage.FormatTime(finished),
				storage.FormatTime(finished.Add(50*time.Millisecond)), seq)
		}
	}

	ins.start("audit_log", "stream_seq, actor, action, target, payload, occurred_at, recorded_at", 7)
	actions := []string{"exec", "job_upsert", "schedule_upsert", "config_put", "groups_put"}
	for i := 0; i < f.Audit; i++ {
		at := end.Add(-time.Duration(i) * time.Minute)
		actor := "operator"
		if i%3 == 0 {
			actor = "scheduler"
		}
		ins.row(i+1, actor, actions[i%len(actions)], JobID(i%f.Jobs),
			fmt.Sprintf(`{"exec_id":%q,"sub":"admin"}`, ExecID(i)), storage.FormatTime(at), storage.FormatTime(at))
	}
	ins.flush()
	// No ANALYZE: a production database has no planner statistics either,
	// and the plans measured here must be the plans it gets.
	return ins.err
}

// batchInserter groups rows into multi-row INSERT statements (500 rows) and
// statements into transactions (50 000 rows), the fastest way to load
// SQLite through database/sql (and fast enough for PostgreSQL).
type batchInserter struct {
	ctx   context.Context
	st    *storage.Store
	table string
	cols  string
	ncol  int
	args  []any
	rows  int
	err   error
	tx    []string
	txArg [][]any
}

const (
	rowsPerStmt = 500
	rowsPerTx   = 50_000
)

func (b *batchInserter) start(table, cols string, ncol int) {
	b.flush()
	b.table, b.cols, b.ncol = table, cols, ncol
}

func (b *batchInserter) row(vals ...any) {
	b.args = append(b.args, vals...)
	b.rows++
	if b.rows == rowsPerStmt {
		b.stmt()
	}
}

// stmt turns the pending rows into one statement of the current batch.
func (b *batchInserter) stmt() {
	if b.rows == 0 {
		return
	}
	// The statement goes straight to the driver, bypassing Bun's
	// formatting, so it carries the driver's own placeholders: ? for
	// SQLite, $n for PostgreSQL.
	var q strings.Builder
	q.WriteString("INSERT INTO " + b.table + " (" + b.cols + ") VALUES ")
	n := 0
	for r := 0; r < b.rows; r++ {
		if r > 0 {
			q.WriteByte(',')
		}
		q.WriteByte('(')
		for c := 0; c < b.ncol; c++ {
			if c > 0 {
				q.WriteByte(',')
			}
			n++
			if b.st.IsPostgres() {
				q.WriteString("$" + strconv.Itoa(n))
			} else {
				q.WriteByte('?')
			}
		}
		q.WriteByte(')')
	}
	b.tx = append(b.tx, q.String())
	b.txArg = append(b.txArg, b.args)
	b.args, b.rows = nil, 0
	if len(b.tx)*rowsPerStmt >= rowsPerTx {
		b.commit()
	}
}

func (b *batchInserter) commit() {
	if len(b.tx) == 0 || b.err != nil {
		b.tx, b.txArg = nil, nil
		return
	}
	tx, err := b.st.W.DB.BeginTx(b.ctx, nil)
	if err != nil {
		b.err = fmt.Errorf("seed %s: begin: %w", b.table, err)
		return
	}
	for i, q := range b.tx {
		if _, err := tx.ExecContext(b.ctx, q, b.txArg[i]...); err != nil {
			_ = tx.Rollback()
			b.err = fmt.Errorf("seed %s: %w", b.table, err)
			return
		}
	}
	if err := tx.Commit(); err != nil {
		b.err = fmt.Errorf("seed %s: commit: %w", b.table, err)
	}
	b.tx, b.txArg = nil, nil
}

func (b *batchInserter) flush() {
	b.stmt()
	b.commit()
}
