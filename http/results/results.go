// Package results serves the execution results the results projector
// stored: GET /api/results (newest first, filtered, paged; every PC's
// answer to one Command with ?request_id=) and GET /api/results/{request_id}
// (one result, as upstream answered).
//
// Lists at fleet scale (a million rows) stay within the page budget because
// every filter combination walks an index that yields the page's order
// (migration 20261126234000_list_indexes) and X-Total-Count is counted up to
// httpx.TotalCap only.
package results

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"

	"kanade-backend/http/httpx"
	"kanade-backend/http/server"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

// Deps is what the routes need: the store's read pool.
type Deps struct {
	DB bun.IDB
}

// Register adds the routes.
func Register(r *server.Router, d Deps) {
	h := &handler{db: d.DB}
	r.API("GET /api/results", h.list)
	r.API("GET /api/results/{request_id}", h.byRequest)
}

// Result statuses of the status filter and the status field.
const (
	StatusSuccess = "success"
	StatusFailure = "failure"
)

// Row is one ResultRow of the API: the stored result plus its status.
type Row struct {
	storage.ExecutionResult
	// Status is success (exit code 0) or failure.
	Status string `json:"status"`
}

func toRows(rs []storage.ExecutionResult) []Row {
	out := make([]Row, len(rs))
	for i, r := range rs {
		out[i] = Row{ExecutionResult: r, Status: StatusSuccess}
		if r.ExitCode != 0 {
			out[i].Status = StatusFailure
		}
	}
	return out
}

// newestFirst is the list order. finished_at alone ties within a broadcast
// (PCs answer in the same instant); request_id and pc_id, the row's
// identity, make the order total so that pages never overlap or skip.
const newestFirst = "finished_at DESC, request_id DESC, pc_id DESC"

type handler struct {
	db bun.IDB
}

// filter holds the list filters of api.md §3, and request_id (beyond: the
// rows of one broadcast Command, which upstream could not tell apart).
type filter struct {
	requestID           string
	pcID, jobID, execID string
	status              string
	since               time.Time
}

func parseFilter(r *http.Request) (filter, error) {
	var f filter
	var err error
	if f.requestID, err = httpx.QueryToken(r, "request_id"); err != nil {
		return f, err
	}
	if f.pcID, err = httpx.QueryToken(r, "pc_id"); err != nil {
		return f, err
	}
	if f.jobID, err = httpx.QueryToken(r, "job_id"); err != nil {
		return f, err
	}
	if f.execID, err = httpx.QueryToken(r, "exec_id"); err != nil {
		return f, err
	}
	switch s := r.URL.Query().Get("status"); s {
	case "", StatusSuccess, StatusFailure:
		f.status = s
	default:
		return f, messages.Invalidf("invalid status %q: must be %s or %s", s, StatusSuccess, StatusFailure)
	}
	if f.since, _, err = httpx.QueryTime(r, "since"); err != nil {
		return f, err
	}
	return f, nil
}

// apply adds the filter to a query on execution_results.
//
// Only the filter that should drive the query is written so that an index
// can serve it; the others are written as expressions no index matches
// (the column concatenated with an empty string, exit_code + 0: same
// truth, NULLs included, in SQLite and Postgres alike) and are checked on
// the driving index's entries, which carry job_id and exit_code for
// exactly that. Without planner statistics (nothing runs ANALYZE) SQLite
// cannot tell that a pc_id matches a hundred rows and a job_id fifty
// thousand; given both as equalities it picked the job index and read
// 50 000 entries for a page that the pc index answers from 100 (measured:
// 40 ms instead of 0.4 ms). The order of preference is by how few rows
// each filter matches in a fleet: one Command's (the primary key's first
// column), a PC's results, an exec's (one row per PC), a job's failures, a
// job's results, all failures, then time alone.
func (f filter) apply(q *bun.SelectQuery) *bun.SelectQuery {
	drive := f.driver()
	eq := func(col, val string) {
		if val == "" {
			return
		}
		if col == drive {
			q = q.Where("? = ?", bun.Ident(col), val)
		} else {
			q = q.Where("? || '' = ?", bun.Ident(col), val)
		}
	}
	eq("request_id", f.requestID)
	eq("pc_id", f.pcID)
	eq("exec_id", f.execID)
	eq("job_id", f.jobID)
	switch {
	case f.status == StatusFailure && (drive == "failure" || drive == "job_id"):
		// Exactly the partial indexes' predicate, or SQLite will not use
		// them.
		q = q.Where("exit_code <> 0")
	case f.status != "" && q.Dialect().Name() == dialect.PG:
		// PostgreSQL has statistics (autovacuum analyzes): written as an
		// expression, exit_code = 0 was estimated at 0.5 % of the rows
		// instead of 90 %, and the success list sorted the whole table
		// rather than walk execution_results_finished until its page
		// (measured at 1 000 000 results: 2 s against 2 ms).
		q = q.Where(map[string]string{StatusFailure: "exit_code <> 0", StatusSuccess: "exit_code = 0"}[f.status])
	case f.status == StatusFailure:
		q = q.Where("exit_code + 0 <> 0")
	case f.status == StatusSuccess:
		q = q.Where("exit_code + 0 = 0")
	}
	if !f.since.IsZero() {
		// A range on the second column of every driving index (and the
		// first of the time index): always worth serving from it.
		q = q.Where("finished_at >= ?", storage.T(f.since))
	}
	return q
}

// driver names the filter that drives the query (see apply): a column, or
// "failure", or "" for time order alone.
func (f filter) driver() string {
	switch {
	case f.requestID != "":
		return "request_id"
	case f.pcID != "":
		return "pc_id"
	case f.execID != "":
		return "exec_id"
	case f.jobID != "":
		return "job_id"
	case f.status == StatusFailure:
		return "failure"
	}
	return ""
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) error {
	f, err := parseFilter(r)
	if err != nil {
		return err
	}
	p, err := httpx.ParsePage(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	var rs []storage.ExecutionResult
	err = h.db.NewSelect().Model(&rs).Apply(f.apply).
		OrderExpr(newestFirst).Limit(int64(p.Limit)).Offset(int64(p.Offset)).Scan(ctx)
	if err != nil {
		return fmt.Errorf("list results: %w", err)
	}
	total, err := httpx.PageTotal(p, len(rs), func() (int, bool, error) {
		return h.count(ctx, f)
	})
	if err != nil {
		return fmt.Errorf("count results: %w", err)
	}
	httpx.WritePage(w, toRows(rs), total)
	return nil
}

// count counts the rows of f up to httpx.TotalCap, ordered like the page so
// that it walks the same index.
func (h *handler) count(ctx context.Context, f filter) (int, bool, error) {
	q := h.db.NewSelect().TableExpr("execution_results").ColumnExpr("1").Apply(f.apply).OrderExpr(newestFirst)
	return storage.CountUpTo(ctx, h.db, q, httpx.TotalCap)
}

// byRequest returns one result of a request_id, as upstream did (its
// results were keyed by request_id alone, defect 1): the given PC's with
// ?pc_id=, else the newest answer. A broadcast Command is answered by many
// PCs under one request_id; all of them are at
// GET /api/results?request_id=.
func (h *handler) byRequest(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("request_id")
	if err := messages.ValidateToken("request_id", id); err != nil {
		return err
	}
	pc, err := httpx.QueryToken(r, "pc_id")
	if err != nil {
		return err
	}
	var row storage.ExecutionResult
	q := h.db.NewSelect().Model(&row).Where("request_id = ?", id)
	if pc != "" {
		q = q.Where("pc_id = ?", pc)
	}
	err = q.OrderExpr("finished_at DESC, pc_id").Limit(1).Scan(r.Context())
	if errors.Is(err, sql.ErrNoRows) {
		if pc != "" {
			return messages.NotFoundf("no result from pc '%s' for request_id '%s'", pc, id)
		}
		return messages.NotFoundf("no results for request_id '%s'", id)
	}
	if err != nil {
		return fmt.Errorf("result of request %s: %w", id, err)
	}
	httpx.WriteJSON(w, http.StatusOK, toRows([]storage.ExecutionResult{row})[0])
	return nil
}
