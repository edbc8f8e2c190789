package results

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

// The planner has no statistics, so its choice depends on the query's
// shape and the schema only, not on the data: an empty store shows the
// plans a fleet-sized one gets. Every filter combination must walk the
// index meant for it, in page order (no sort), and its count must stay
// inside that index, on both databases.
func TestQueryPlans(t *testing.T) {
	st := storagetest.Open(t)
	pg := storagetest.OpenPostgres(t)
	since := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		f     filter
		index string
		// lookups: the count may visit the table (the driving index lacks
		// the column, and it matches only the rows of one PC).
		lookups bool
	}{
		{f: filter{}, index: "execution_results_finished"},
		{f: filter{since: since}, index: "execution_results_finished"},
		{f: filter{status: StatusSuccess}, index: "execution_results_finished"},
		{f: filter{status: StatusFailure}, index: "execution_results_failed"},
		{f: filter{status: StatusFailure, since: since}, index: "execution_results_failed"},
		{f: filter{pcID: "p"}, index: "execution_results_pc"},
		{f: filter{pcID: "p", jobID: "j"}, index: "execution_results_pc"},
		{f: filter{pcID: "p", execID: "x"}, index: "execution_results_pc", lookups: true},
		{f: filter{pcID: "p", status: StatusFailure}, index: "execution_results_pc"},
		{f: filter{pcID: "p", since: since}, index: "execution_results_pc"},
		{f: filter{execID: "x"}, index: "execution_results_exec_finished"},
		{f: filter{execID: "x", jobID: "j"}, index: "execution_results_exec_finished"},
		{f: filter{execID: "x", status: StatusFailure}, index: "execution_results_exec_finished"},
		{f: filter{jobID: "j"}, index: "execution_results_job"},
		{f: filter{jobID: "j", status: StatusSuccess}, index: "execution_results_job"},
		{f: filter{jobID: "j", status: StatusFailure}, index: "execution_results_job_failed"},
		{f: filter{jobID: "j", since: since}, index: "execution_results_job"},
		{f: filter{jobID: "j", status: StatusFailure, since: since}, index: "execution_results_job_failed"},
	}
	h := &handler{db: st.R}
	// One Command's rows (at most one per PC) come from the primary key;
	// sorting that handful by time is cheaper than an index for it.
	for _, f := range []filter{{requestID: "r"}, {requestID: "r", pcID: "p", status: StatusFailure}} {
		q := h.db.NewSelect().Model((*storage.ExecutionResult)(nil)).Apply(f.apply).OrderExpr(newestFirst).Limit(50)
		if plan := storagetest.QueryPlan(t, st.R, q); !strings.Contains(plan, "sqlite_autoindex_execution_results_1 (request_id=?)") {
			t.Errorf("%+v: plan %q, want the primary key on request_id", f, plan)
		}
	}
	for _, c := range cases {
		page := h.db.NewSelect().Model((*storage.ExecutionResult)(nil)).Apply(c.f.apply).
			OrderExpr(newestFirst).Limit(50).Offset(100)
		count := h.db.NewSelect().ColumnExpr("count(*)").TableExpr("(?) AS upto",
			h.db.NewSelect().TableExpr("execution_results").ColumnExpr("1").Apply(c.f.apply).OrderExpr(newestFirst).Limit(10001))
		for what, q := range map[string]*bun.SelectQuery{"page": page, "count": count} {
			plan := storagetest.QueryPlan(t, st.R, q)
			if !regexp.MustCompile(`INDEX ` + c.index + `\b`).MatchString(plan) {
				t.Errorf("%+v %s: plan %q, want index %s", c.f, what, plan, c.index)
			}
			if strings.Contains(plan, "TEMP B-TREE") {
				t.Errorf("%+v %s: plan %q sorts", c.f, what, plan)
			}
			if what == "count" && !c.lookups && !strings.Contains(plan, "COVERING INDEX") {
				t.Errorf("%+v count: plan %q reads the table", c.f, plan)
			}
			// PostgreSQL walks the same index in page order, and counts
			// inside it (an index-only scan).
			plan = storagetest.QueryPlan(t, pg.R, q)
			if !regexp.MustCompile(`using `+c.index+`\b`).MatchString(plan) || strings.Contains(plan, "Sort") ||
				(what == "count" && !c.lookups && !strings.Contains(plan, "Index Only Scan")) {
				t.Errorf("%+v %s: PostgreSQL plan %q, want index %s in order", c.f, what, plan, c.index)
			}
		}
	}
}
