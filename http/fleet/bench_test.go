package fleet_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"kanade-backend/http/internal/fleettest"
	"kanade-backend/internal/apptest"
	"kanade-backend/storage"
)

// BenchmarkAgentsList measures GET /api/agents over real HTTP against a
// whole backend holding 10 000 agents (rows inserted directly), for a
// plain page at a random offset, a substring search and the online
// filter. Next to each it measures the raw ceiling: the same two queries
// (count + page) sent straight to the read pool, without HTTP, auth,
// routing or JSON. Reported: p50 and p99 latency of each, in ms.
//
// KANADE_BENCH_AGENTS sets the number of agents (default 10 000).
//
//	go test -run '^$' -bench BenchmarkAgentsList -benchtime 2000x ./http/fleet/
//	KANADE_BENCH_AGENTS=100000 go test -run '^$' -bench BenchmarkAgentsList -benchtime 2000x ./http/fleet/
func BenchmarkAgentsList(b *testing.B) {
	be := apptest.Start(b)
	n := 10_000
	if v, err := strconv.Atoi(os.Getenv("KANADE_BENCH_AGENTS")); err == nil && v > 0 {
		n = v
	}
	now := time.Now().UTC()
	agents := make([]fleettest.Agent, n)
	for i := range agents {
		agents[i] = fleettest.Agent{
			PcID: fmt.Sprintf("PC-%05d", i), Hostname: fmt.Sprintf("host-%05d", i), OS: "windows",
			// A third of the fleet is stale.
			Seen: now.Add(-time.Duration(i%3) * 2 * time.Minute),
		}
	}
	fleettest.InsertAgents(b, be.Store, agents...)
	since := storage.FormatTime(now.Add(-storage.AliveWindow))

	cases := []struct {
		name  string
		query func() string
		// raw is the equivalent SQL: a count and a page.
		rawCount, rawPage string
		rawArgs           func() []any
		// always: the handler counts whatever the page (a keyset page
		// cannot tell the total from its own length).
		always bool
	}{
		{
			name:     "page",
			query:    func() string { return fmt.Sprintf("?limit=50&offset=%d", rand.IntN(n-50)) },
			rawCount: "SELECT count(*) FROM agents",
			rawPage:  "SELECT * FROM agents ORDER BY pc_id LIMIT 50 OFFSET ?",
			rawArgs:  func() []any { return []any{rand.IntN(n - 50)} },
		},
		{
			name: "search",
			// Broad (1 000 matches, full pages) and selective (1 match)
			// searches, alternately.
			query: func() string {
				if rand.IntN(2) == 0 {
					return fmt.Sprintf("?limit=50&q=host-0%d", rand.IntN(10))
				}
				return fmt.Sprintf("?limit=50&q=host-%05d", rand.IntN(n))
			},
			// The handler's SQL: the trigram index narrows, the LIKE decides.
			rawCount: "SELECT count(*) FROM agents WHERE rowid IN (SELECT rowid FROM agents_search WHERE agents_search MATCH ?) AND (pc_id LIKE ? ESCAPE '!' OR hostname LIKE ? ESCAPE '!')",
			rawPage:  "SELECT * FROM agents WHERE rowid IN (SELECT rowid FROM agents_search WHERE agents_search MATCH ?) AND (pc_id LIKE ? ESCAPE '!' OR hostname LIKE ? ESCAPE '!') ORDER BY pc_id LIMIT 50",
			rawArgs: func() []any {
				q := fmt.Sprintf("host-0%d", rand.IntN(10))
				if rand.IntN(2) == 0 {
					q = fmt.Sprintf("host-%05d", rand.IntN(n))
				}
				return []any{`"` + q + `"`, "%" + q + "%", "%" + q + "%"}
			},
		},
		{
			// Keyset pages (after= the last pc_id of the previous page) at
			// any depth; an offset page walks what it skips (online-offset).
			name:     "online",
			query:    func() string { return fmt.Sprintf("?limit=50&online=true&after=PC-%05d", rand.IntN(n)) },
			rawCount: "SELECT count(*) FROM agents WHERE last_heartbeat >= ?",
			rawPage:  "SELECT * FROM agents WHERE last_heartbeat >= ? AND pc_id > ? ORDER BY pc_id LIMIT 50",
			rawArgs:  func() []any { return []any{since, fmt.Sprintf("PC-%05d", rand.IntN(n))} },
			always:   true,
		},
		{
			name:     "online-offset",
			query:    func() string { return fmt.Sprintf("?limit=50&online=true&offset=%d", rand.IntN(n*6/10)) },
			rawCount: "SELECT count(*) FROM agents WHERE last_heartbeat >= ?",
			rawPage:  "SELECT * FROM agents WHERE last_heartbeat >= ? ORDER BY pc_id LIMIT 50 OFFSET ?",
			rawArgs:  func() []any { return []any{since, rand.IntN(n * 6 / 10)} },
		},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			// Warm up: prepared statements, page cache, connections.
			for range 50 {
				resp, out := be.Do(b, http.MethodGet, "/api/agents"+c.query(), nil)
				if resp.StatusCode != 200 {
					b.Fatalf("warm-up: %d %s", resp.StatusCode, out)
				}
			}
			api := make([]time.Duration, 0, b.N)
			raw := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			// The API and the raw queries run in separate passes so that
			// neither measures the other's trailing work (the server
			// finishing a response) on the two cores.
			for b.Loop() {
				req, _ := http.NewRequest(http.MethodGet, be.URL+"/api/agents"+c.query(), nil)
				req.Header.Set("Authorization", "Bearer "+apptest.Token)
				t0 := time.Now()
				resp, err := be.Client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				api = append(api, time.Since(t0))
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
			for range len(api) {
				// The same work as the handler: the page, then the count
				// when the page is full.
				args := c.rawArgs()
				t0 := time.Now()
				var rows []storage.Agent
				r, err := be.Store.R.QueryContext(ctx, c.rawPage, args...)
				if err != nil {
					b.Fatal(err)
				}
				if err := be.Store.R.ScanRows(ctx, r, &rows); err != nil {
					b.Fatal(err)
				}
				if len(rows) == 50 || c.always {
					countArgs := args
					switch c.name {
					case "page":
						countArgs = nil
					case "online", "online-offset":
						countArgs = args[:1]
					}
					var total int
					if err := be.Store.R.QueryRowContext(ctx, c.rawCount, countArgs...).Scan(&total); err != nil {
						b.Fatal(err)
					}
				}
				raw = append(raw, time.Since(t0))
			}
			b.StopTimer()
			b.ReportMetric(pct(api, 50), "p50-ms")
			b.ReportMetric(pct(api, 99), "p99-ms")
			b.ReportMetric(pct(raw, 50), "raw-p50-ms")
			b.ReportMetric(pct(raw, 99), "raw-p99-ms")
			b.ReportMetric(0, "ns/op") // the loop times two things; ns/op means neither
		})
	}
}

// pct returns the p-th percentile (nearest rank) in milliseconds.
func pct(d []time.Duration, p int) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p+99)/100 - 1
	return float64(s[max(i, 0)].Microseconds()) / 1000
}
