package fleet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/http/fleet"
	"kanade-backend/http/internal/fleettest"
	"kanade-backend/internal/apptest"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

// The trigram index changes how a search runs, not what it finds: every q
// gives the agents a plain LIKE (ILIKE on PostgreSQL) over every row
// finds, in the same order, for short and long q, case differences,
// wildcards and quotes taken literally, non-ASCII text and a hostname the
// agent reported after its first heartbeat (the index follows updates).
func TestAgentSearchMatchesTheScan(t *testing.T) {
	storagetest.RunDialects(t, func(t *testing.T, d storagetest.Dialect) {
		b := apptest.Start(t, apptest.Options{DBURL: d.URL(t)})
		now := time.Now().UTC()
		hosts := []string{"alpha-01", "ALPHA-02", "beta_03", "gam%ma", `q"uote`, "Ünïcode-Höst", "dëlta", "x", "",
			"SIM-0999-ws", "pc!bang", "tab here", "long-hostname-of-the-accounting-floor"}
		var agents []fleettest.Agent
		for i := range 120 {
			agents = append(agents, fleettest.Agent{
				PcID:     fmt.Sprintf("SIM-%04d", i*97%1200),
				Hostname: hosts[i%len(hosts)],
				Seen:     now,
			})
		}
		agents = append(agents, fleettest.Agent{PcID: "pc_literal", Seen: now}, fleettest.Agent{PcID: "late", Seen: now})
		fleettest.InsertAgents(t, b.Store, agents...)
		// "late" reports its hostname later, through the heartbeat
		// projection's kind of update; every agent then heartbeats again
		// (an update that leaves pc_id and hostname as they are).
		err := b.Store.InTx(context.Background(), func(ctx context.Context, tx bun.Tx) error {
			if _, err := tx.NewUpdate().Model((*storage.Agent)(nil)).Set("hostname = COALESCE(hostname, ?)", "Late-Reporter").
				Where("pc_id = ?", "late").Exec(ctx); err != nil {
				return err
			}
			_, err := tx.NewUpdate().Model((*storage.Agent)(nil)).Set("last_heartbeat = ?", storage.T(now.Add(time.Second))).
				Where("TRUE").Exec(ctx)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}

		like := "LIKE"
		if b.Store.IsPostgres() {
			like = "ILIKE"
		}
		scan := func(q string) []string {
			t.Helper()
			pat := "%" + strings.NewReplacer("!", "!!", "%", "!%", "_", "!_").Replace(q) + "%"
			var ids []string
			err := b.Store.R.NewSelect().Model((*storage.Agent)(nil)).Column("pc_id").
				Where("(pc_id "+like+" ? ESCAPE '!' OR hostname "+like+" ? ESCAPE '!')", pat, pat).
				Order("pc_id").Scan(context.Background(), &ids)
			if err != nil {
				t.Fatal(err)
			}
			return ids
		}
		api := func(q string, page string) ([]string, string) {
			t.Helper()
			resp, out := b.Do(t, http.MethodGet, "/api/agents?q="+url.QueryEscape(q)+page, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("q=%q: %d %s", q, resp.StatusCode, out)
			}
			var rows []fleet.AgentRow
			if err := json.Unmarshal(out, &rows); err != nil {
				t.Fatal(err)
			}
			ids := []string{}
			for _, r := range rows {
				ids = append(ids, r.PcID)
			}
			return ids, resp.Header.Get("X-Total-Count")
		}
		for _, q := range []string{"a", "al", "alp", "ALPHA", "alpha-0", "sim-0", "SIM-0999", "0999-w", "_0", "a_0", "m%m",
			`"uote`, `q"u`, "ünï", "ÜNÏ", "Höst", "dël", "!ba", "pc!", "b h", "Late-Rep", "late-rep", "reporter",
			"pc_lit", "of-the-acc", "nomatch", "___", "%%%", `"""`} {
			want := scan(q)
			got, total := api(q, "")
			if !slices.Equal(got, want) || total != fmt.Sprint(len(want)) {
				t.Errorf("q=%q: API %v (total %s), scan %v", q, got, total, want)
			}
			if len(want) > 3 { // a page and its total agree too
				got, total := api(q, "&limit=2&offset=1")
				if !slices.Equal(got, want[1:3]) || total != fmt.Sprint(len(want)) {
					t.Errorf("q=%q page: %v (total %s), want %v of %d", q, got, total, want[1:3], len(want))
				}
			}
		}
		if got, _ := api("late-rep", ""); !slices.Equal(got, []string{"late"}) {
			t.Errorf("a hostname reported later is not found: %v", got)
		}
		checkSearchIndex(t, b.Store)
	})
}

// checkSearchIndex checks that the search has its index: the FTS5 table
// in SQLite's plan of a search, the two pg_trgm indexes on PostgreSQL
// wherever the server offers pg_trgm (Debian's postgresql-15 does).
func checkSearchIndex(t *testing.T, st *storage.Store) {
	t.Helper()
	ctx := context.Background()
	if st.IsPostgres() {
		var avail, idx int
		if err := st.R.NewRaw("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_trgm'").Scan(ctx, &avail); err != nil {
			t.Fatal(err)
		}
		if err := st.R.NewRaw("SELECT count(*) FROM pg_indexes WHERE indexname IN ('agents_search_pc_id', 'agents_search_hostname')").Scan(ctx, &idx); err != nil {
			t.Fatal(err)
		}
		if avail == 1 && idx != 2 {
			t.Fatalf("pg_trgm is available but %d of the 2 search indexes exist", idx)
		}
		return
	}
	q := st.R.NewSelect().Model((*storage.Agent)(nil)).
		Where("rowid IN (SELECT rowid FROM agents_search WHERE agents_search MATCH ?)", `"SIM-0999"`).
		Where("(pc_id LIKE ? ESCAPE '!' OR hostname LIKE ? ESCAPE '!')", "%SIM-0999%", "%SIM-0999%").
		Order("pc_id").Limit(50)
	if plan := storagetest.QueryPlan(t, st.R, q); !strings.Contains(plan, "VIRTUAL TABLE INDEX") || strings.Contains(plan, "SCAN agent ") {
		t.Fatalf("the search does not use agents_search: %s", plan)
	}
}
