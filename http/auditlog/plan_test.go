package auditlog

import (
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

// Pages and counts come straight from an index in list order (the audit
// indexes end in the rowid, which is id), whatever the filter, on both
// databases.
func TestQueryPlans(t *testing.T) {
	st := storagetest.Open(t)
	pg := storagetest.OpenPostgres(t)
	since := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, f := range []filter{
		{}, {since: since}, {actor: "operator"}, {action: "exec"}, {actor: "operator", since: since},
		{actor: "scheduler", action: "exec"},
	} {
		page := st.R.NewSelect().Model((*storage.AuditRow)(nil)).Apply(f.apply).OrderExpr(newestFirst).Limit(50)
		count := st.R.NewSelect().ColumnExpr("count(*)").TableExpr("(?) AS upto",
			st.R.NewSelect().TableExpr("audit_log").ColumnExpr("1").Apply(f.apply).OrderExpr(newestFirst).Limit(10001))
		for what, q := range map[string]*bun.SelectQuery{"page": page, "count": count} {
			plan := storagetest.QueryPlan(t, st.R, q)
			if strings.Contains(plan, "TEMP B-TREE") || !strings.Contains(plan, "INDEX audit_log_") {
				t.Errorf("%+v %s: plan %q", f, what, plan)
			}
			// PostgreSQL's indexes end in id too (migration 20261202130100).
			if plan := storagetest.QueryPlan(t, pg.R, q); strings.Contains(plan, "Sort") ||
				strings.Contains(plan, "Seq Scan") || !strings.Contains(plan, "using audit_log_") {
				t.Errorf("%+v %s: PostgreSQL plan %q", f, what, plan)
			}
		}
	}
}
