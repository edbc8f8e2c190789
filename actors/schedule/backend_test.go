package schedule

import (
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/storage/storagetest"
)

// The store queries of the scheduler run on indexes, never a scan of
// execution_results or executions: the bulk once_per_pc seed on the
// covering index execution_results_success, the bulk in-flight rebuild and
// the last fires on executions_schedule.
func TestQueriesUseIndexes(t *testing.T) {
	st := storagetest.Open(t)
	plan := func(q *bun.SelectQuery) string { return storagetest.QueryPlan(t, st.R, q) }
	if p := plan(seedQuery(st.R, []string{"j", "k"})); !strings.Contains(p, "USING COVERING INDEX execution_results_success") {
		t.Fatalf("seed query plan: %s", p)
	}
	if p := plan(lastFiresQuery(st.R)); !strings.Contains(p, "executions_schedule") {
		t.Fatalf("last fires plan: %s", p)
	}
	if p := plan(inFlightQuery(st.R, []string{"s", "t"}, time.Now())); !strings.Contains(p, "executions_schedule") || strings.Contains(p, "SCAN e") {
		t.Fatalf("in-flight plan: %s", p)
	}
}
