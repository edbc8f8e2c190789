package schedule

import (
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

// The store queries of the scheduler run on indexes, never a scan of
// execution_results or executions: the bulk once_per_pc seed on the
// covering index execution_results_success, the bulk in-flight rebuild and
// the last fires on executions_schedule; on both databases.
func TestQueriesUseIndexes(t *testing.T) {
	storagetest.ForEachDialect(t, func(t *testing.T, st *storage.Store) {
		plan := func(q *bun.SelectQuery) string { return storagetest.QueryPlan(t, st.R, q) }
		covering, scan := "USING COVERING INDEX execution_results_success", "SCAN e"
		if st.IsPostgres() {
			covering, scan = "Index Only Scan using execution_results_success", "Seq Scan"
		}
		if p := plan(seedQuery(st.R, []string{"j", "k"})); !strings.Contains(p, covering) {
			t.Fatalf("seed query plan: %s", p)
		}
		if p := plan(lastFiresQuery(st.R)); !strings.Contains(p, "executions_schedule") || strings.Contains(p, "Seq Scan") {
			t.Fatalf("last fires plan: %s", p)
		}
		if p := plan(inFlightQuery(st.R, []string{"s", "t"}, time.Now())); !strings.Contains(p, "executions_schedule") || strings.Contains(p, scan) {
			t.Fatalf("in-flight plan: %s", p)
		}
	})
}
