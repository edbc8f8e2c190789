package listbench_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/internal/apptest"
	"kanade-backend/storage"
	"kanade-backend/storage/pgtest"
	"kanade-backend/storage/storagetest"
)

// BenchmarkPagedLists measures the latency of the paged list endpoints over
// real HTTP against a whole backend whose SQLite store holds 10 000 agents,
// 1 000 000 results (500 execs × 2 000 PCs, 20 jobs, one failure in ten)
// and 100 000 audit rows, inserted directly in bulk. Next to each endpoint,
// in the same run and interleaved request by request, it measures the raw
// ceiling: the very SQL statements the request ran (captured with a bun
// query hook: the page SELECT and the capped count) run again directly on
// the store's read pool and read to the end, without HTTP, routing, auth,
// row mapping or JSON. The raw run comes second and finds the rows' pages
// warm in SQLite's page cache, so it is a true ceiling (a lower bound): for
// filters whose rows are scattered over the table (one PC's, one exec's)
// the gap to the API includes those first reads, a real cost of a page.
//
//	go test -run '^$' -bench PagedLists -benchtime 400x -timeout 30m ./http/listbench/
//
// Seeding takes about a minute; KANADE_BENCH_DIR=<dir> keeps the seeded
// data directory between runs.
func BenchmarkPagedLists(b *testing.B) { benchmarkPagedLists(b, "") }

// BenchmarkPagedListsPostgres is BenchmarkPagedLists on PostgreSQL: the
// package's throwaway server (storage/pgtest: local socket, fsync off,
// default memory settings, no ANALYZE), or the database at
// KANADE_BENCH_DB_URL, which keeps its seeded rows between runs.
//
//	go test -run '^$' -bench PagedListsPostgres -benchtime 200x -timeout 30m ./http/listbench/
func BenchmarkPagedListsPostgres(b *testing.B) {
	u := os.Getenv("KANADE_BENCH_DB_URL")
	if u == "" {
		u = pgtest.URL(b)
	}
	benchmarkPagedLists(b, u)
}

func benchmarkPagedLists(b *testing.B, dbURL string) {
	dir := os.Getenv("KANADE_BENCH_DIR")
	if dir == "" || dbURL != "" {
		dir = b.TempDir()
	}
	bk, stop := apptest.StartManual(b, apptest.Options{DataDir: dir, DBURL: dbURL})
	defer stop()
	ctx := context.Background()
	end := seed(b, bk)
	if bk.Store.IsPostgres() {
		// PostgreSQL's autovacuum analyzes a table once a tenth of it
		// changed, so a production database has statistics (SQLite's
		// never has any: there the seed runs no ANALYZE), and vacuums an
		// insert-only table once a fifth of it is new, which sets the
		// visibility map that lets an index-only scan skip the table
		// (without it, counting a page's 10 001 rows read 10 001 heap
		// tuples: 80 ms instead of 2). The throwaway test server runs
		// without autovacuum; this is what it would do. A vacuum cannot
		// mark a page all-visible while a transaction older than its rows
		// is open (measured: the first one right after the seed marked
		// none), so, like autovacuum's next rounds, it runs again until
		// the lists' tables are all visible.
		vacuum(b, bk.Store)
	}

	registered := map[string]bool{}
	for _, p := range bk.Router.Patterns() {
		registered[p] = true
	}
	rng := rand.New(rand.NewPCG(6, 20261126))
	page := func() string { return fmt.Sprint(rng.IntN(20) * 50) } // one of the first 20 pages
	pc := func() string { return storagetest.PcID(rng.IntN(10_000)) }
	job := func() string { return storagetest.JobID(rng.IntN(20)) }
	exec := func() string { return storagetest.ExecID(rng.IntN(500)) }
	since := storage.FormatTime(end.Add(-24 * time.Hour))
	q := func(kv ...string) url.Values {
		v := url.Values{}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}
	cases := []listCase{
		{"results", "/api/results", func() url.Values { return q("offset", page()) }},
		{"results pc_id", "/api/results", func() url.Values { return q("pc_id", pc(), "offset", fmt.Sprint(rng.IntN(2)*50)) }},
		{"results job_id", "/api/results", func() url.Values { return q("job_id", job(), "offset", page()) }},
		{"results exec_id", "/api/results", func() url.Values { return q("exec_id", exec(), "offset", page()) }},
		{"results status=success", "/api/results", func() url.Values { return q("status", "success", "offset", page()) }},
		{"results status=failure", "/api/results", func() url.Values { return q("status", "failure", "offset", page()) }},
		{"results since (24 h)", "/api/results", func() url.Values { return q("since", since, "offset", page()) }},
		{"results job_id+status=failure", "/api/results", func() url.Values {
			return q("job_id", job(), "status", "failure", "offset", page())
		}},
		{"results pc_id+job_id", "/api/results", func() url.Values { return q("pc_id", pc(), "job_id", job()) }},
		{"results offset 9950", "/api/results", func() url.Values { return q("offset", "9950") }},
		{"audit", "/api/audit", func() url.Values { return q("offset", page()) }},
		{"audit actor=scheduler", "/api/audit", func() url.Values { return q("actor", "scheduler", "offset", page()) }},
		{"audit action=exec", "/api/audit", func() url.Values { return q("action", "exec", "offset", page()) }},
	}
	if registered["GET /api/agents"] {
		cases = append(cases,
			listCase{"agents", "/api/agents", func() url.Values { return q("offset", page()) }},
			listCase{"agents q=pc-01", "/api/agents", func() url.Values { return q("q", "pc-01", "offset", fmt.Sprint(rng.IntN(2)*50)) }},
			listCase{"agents online=true", "/api/agents", func() url.Values { return q("online", "true", "offset", page()) }},
		)
	} else {
		b.Log("GET /api/agents is not registered on this build; skipped")
	}

	hook := &capture{}
	//lint:ignore SA1019 the handlers hold this *bun.DB, so the hook goes on it in place (WithQueryHook returns a copy)
	bk.Store.R.AddQueryHook(hook)
	client := &http.Client{Timeout: 30 * time.Second}
	rows := map[string][4]time.Duration{}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			one := func() (api, raw time.Duration) {
				v := c.next()
				hook.take()
				t0 := time.Now()
				get(b, client, bk, c.path, v)
				api = time.Since(t0)
				stmts := hook.take()
				t0 = time.Now()
				for _, s := range stmts {
					rawQuery(b, ctx, bk.Store, s)
				}
				return api, time.Since(t0)
			}
			// Warm-up: the first requests of a kind open read connections
			// and pull index pages into the OS cache.
			for i := 0; i < 20; i++ {
				one()
			}
			api := make([]time.Duration, 0, b.N)
			raw := make([]time.Duration, 0, b.N)
			runtime.GC() // start every list with the same heap
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				a, r := one()
				api = append(api, a)
				raw = append(raw, r)
			}
			b.StopTimer()
			r := [4]time.Duration{pct(api, 50), pct(api, 99), pct(raw, 50), pct(raw, 99)}
			rows[c.name] = r
			b.ReportMetric(ms(r[0]), "p50_ms")
			b.ReportMetric(ms(r[1]), "p99_ms")
			b.ReportMetric(ms(r[2]), "raw_p50_ms")
			b.ReportMetric(ms(r[3]), "raw_p99_ms")
		})
	}

	var sb strings.Builder
	fmt.Fprintf(&sb, "\n| list | p50 | p99 | raw p50 | raw p99 |\n|---|---|---|---|---|\n")
	for _, c := range cases {
		r, ok := rows[c.name]
		if !ok {
			continue
		}
		fmt.Fprintf(&sb, "| %s | %.2f ms | %.2f ms | %.2f ms | %.2f ms |\n", c.name, ms(r[0]), ms(r[1]), ms(r[2]), ms(r[3]))
	}
	fmt.Print(sb.String())
}

// vacuum runs VACUUM ANALYZE until every page of the listed tables is
// marked all-visible (at most 30 s).
func vacuum(b *testing.B, st *storage.Store) {
	ctx := context.Background()
	for try := 1; ; try++ {
		if _, err := st.W.ExecContext(ctx, "VACUUM ANALYZE"); err != nil {
			b.Fatal(err)
		}
		var hidden int
		if err := st.R.NewSelect().TableExpr("pg_class").ColumnExpr("COALESCE(SUM(relpages - relallvisible), 0)").
			Where("relname IN (?)", bun.List([]string{"execution_results", "audit_log", "agents"})).Scan(ctx, &hidden); err != nil {
			b.Fatal(err)
		}
		if hidden == 0 {
			b.Logf("vacuumed and analyzed (%d rounds)", try)
			return
		}
		if try == 60 {
			b.Logf("%d pages still not all-visible after %d vacuums", hidden, try)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// seed fills the store unless the data directory already holds the fleet;
// it returns the newest finished_at.
func seed(b *testing.B, bk *apptest.Backend) time.Time {
	ctx := context.Background()
	var n int
	if err := bk.Store.R.NewSelect().TableExpr("execution_results").ColumnExpr("count(*)").Scan(ctx, &n); err != nil {
		b.Fatal(err)
	}
	if n >= 1_000_000 {
		var newest storage.Time
		if err := bk.Store.R.NewSelect().TableExpr("execution_results").ColumnExpr("max(finished_at)").Scan(ctx, &newest); err != nil {
			b.Fatal(err)
		}
		b.Logf("reusing %d seeded results", n)
		return newest.Time
	}
	end := time.Now().UTC().Truncate(time.Minute)
	t0 := time.Now()
	if err := storagetest.Seed(ctx, bk.Store, storagetest.DefaultFleet(end)); err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded 10 000 agents, 1 000 000 results and 100 000 audit rows in %v", time.Since(t0).Round(time.Second))
	return end
}

type listCase struct {
	name, path string
	next       func() url.Values
}

func get(b *testing.B, c *http.Client, bk *apptest.Backend, path string, q url.Values) {
	req, _ := http.NewRequest("GET", bk.URL+path+"?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+apptest.Token)
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("X-Total-Count") == "" {
		b.Fatalf("GET %s?%s: %d %v", path, q.Encode(), resp.StatusCode, err)
	}
}

// capture records the SQL text of every query the read pool runs.
type capture struct {
	mu    sync.Mutex
	stmts []string
}

func (c *capture) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context { return ctx }

func (c *capture) AfterQuery(_ context.Context, e *bun.QueryEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stmts = append(c.stmts, e.Query)
}

func (c *capture) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stmts
	c.stmts = nil
	return s
}

// rawQuery runs one statement on the read pool's database/sql handle
// (below bun, so the hook does not see it) and reads every column of every
// row.
func rawQuery(b *testing.B, ctx context.Context, st *storage.Store, q string) {
	rows, err := st.R.DB.QueryContext(ctx, q)
	if err != nil {
		b.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			b.Fatal(err)
		}
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
}

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
