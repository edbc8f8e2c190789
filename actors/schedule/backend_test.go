package schedule

import (
	"context"
	"strings"
	"testing"
	"time"

	"kanade-backend/storage/storagetest"
)

// The store queries of the scheduler run on indexes, never a scan of
// execution_results or executions: the once_per_pc seed on the covering
// index execution_results_success, the in-flight rebuild and the last
// fires on executions_schedule.
func TestQueriesUseIndexes(t *testing.T) {
	st := storagetest.Open(t)
	ctx := context.Background()
	plan := func(q string) string {
		rows, err := st.R.QueryContext(ctx, "EXPLAIN QUERY PLAN "+q)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			out = append(out, detail)
		}
		return strings.Join(out, "; ")
	}
	if p := plan(seedQuery(st.R, "j").String()); !strings.Contains(p, "USING COVERING INDEX execution_results_success") {
		t.Fatalf("seed query plan: %s", p)
	}
	if p := plan(lastFiresQuery(st.R).String()); !strings.Contains(p, "executions_schedule") {
		t.Fatalf("last fires plan: %s", p)
	}
	if p := plan(inFlightQuery(st.R, "s", "j", time.Now()).String()); !strings.Contains(p, "executions_schedule") || strings.Contains(p, "SCAN e") {
		t.Fatalf("in-flight plan: %s", p)
	}
}
