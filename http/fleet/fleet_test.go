package fleet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"kanade-backend/http/fleet"
	"kanade-backend/http/internal/fleettest"
	"kanade-backend/internal/apptest"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

type errBody struct {
	Error string `json:"error"`
}

func TestAgentsListFiltersAndPages(t *testing.T) {
	storagetest.RunDialects(t, testAgentsListFiltersAndPages)
}

func testAgentsListFiltersAndPages(t *testing.T, d storagetest.Dialect) {
	b := apptest.Start(t, apptest.Options{DBURL: d.URL(t)})
	now := time.Now().UTC()
	fleettest.InsertAgents(t, b.Store,
		fleettest.Agent{PcID: "PC-001", Hostname: "alpha", OS: "windows", Seen: now.Add(-10 * time.Second)},
		fleettest.Agent{PcID: "PC-002", Hostname: "Beta", OS: "windows", Seen: now.Add(-30 * time.Second)},
		fleettest.Agent{PcID: "pc_3", Hostname: "gamma", OS: "linux", Seen: now.Add(-time.Minute)},
		fleettest.Agent{PcID: "PC-004", Seen: now.Add(-10 * time.Minute)},
		fleettest.Agent{PcID: "WS-9", Hostname: "delta", Seen: now.Add(-24 * time.Hour)},
	)

	list := func(query string) ([]fleet.AgentRow, string) {
		t.Helper()
		resp, out := b.Do(t, http.MethodGet, "/api/agents"+query, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /api/agents%s: %d %s", query, resp.StatusCode, out)
		}
		var rows []fleet.AgentRow
		if err := json.Unmarshal(out, &rows); err != nil {
			t.Fatal(err)
		}
		return rows, resp.Header.Get("X-Total-Count")
	}
	ids := func(rows []fleet.AgentRow) []string {
		var out []string
		for _, r := range rows {
			out = append(out, r.PcID)
		}
		return out
	}

	rows, total := list("")
	if total != "5" || len(rows) != 5 {
		t.Fatalf("all: %d rows, total %s", len(rows), total)
	}
	if got := ids(rows); !slices.Equal(got, []string{"PC-001", "PC-002", "PC-004", "WS-9", "pc_3"}) {
		t.Fatalf("order by pc_id: %v", got)
	}
	online := map[string]bool{}
	for _, r := range rows {
		online[r.PcID] = r.Online
	}
	if !online["PC-001"] || !online["pc_3"] || online["PC-004"] || online["WS-9"] {
		t.Fatalf("online flags: %v", online)
	}
	if rows[0].Hostname == nil || *rows[0].Hostname != "alpha" || rows[2].Hostname != nil {
		t.Fatalf("hostname null rules: %+v", rows)
	}

	// The wire form: RFC 3339 UTC times, null hostname, online bool.
	_, raw := b.Do(t, http.MethodGet, "/api/agents?q=PC-004", nil)
	var generic []map[string]any
	if err := json.Unmarshal(raw, &generic); err != nil || len(generic) != 1 {
		t.Fatalf("raw: %s %v", raw, err)
	}
	for _, k := range []string{"pc_id", "hostname", "os_family", "agent_version", "last_heartbeat", "updated_at", "online"} {
		if _, ok := generic[0][k]; !ok {
			t.Fatalf("field %s missing in %s", k, raw)
		}
	}
	if generic[0]["hostname"] != nil || !strings.HasSuffix(generic[0]["last_heartbeat"].(string), "Z") {
		t.Fatalf("wire form: %s", raw)
	}

	rows, total = list("?limit=2&offset=1")
	if total != "5" || !slices.Equal(ids(rows), []string{"PC-002", "PC-004"}) {
		t.Fatalf("page: %v total %s", ids(rows), total)
	}
	rows, total = list("?limit=2&offset=10")
	if total != "5" || len(rows) != 0 {
		t.Fatalf("past the end: %v total %s", ids(rows), total)
	}

	rows, total = list("?q=beta") // hostname, case-insensitive
	if total != "1" || rows[0].PcID != "PC-002" {
		t.Fatalf("q=beta: %v", ids(rows))
	}
	rows, _ = list("?q=pc-00")
	if !slices.Equal(ids(rows), []string{"PC-001", "PC-002", "PC-004"}) {
		t.Fatalf("q=pc-00: %v", ids(rows))
	}
	rows, _ = list("?q=c_") // '_' is literal, not a LIKE wildcard
	if !slices.Equal(ids(rows), []string{"pc_3"}) {
		t.Fatalf("q=c_: %v", ids(rows))
	}
	rows, total = list("?online=true")
	if total != "3" || !slices.Equal(ids(rows), []string{"PC-001", "PC-002", "pc_3"}) {
		t.Fatalf("online=true: %v", ids(rows))
	}
	rows, _ = list("?online=false&q=pc")
	if !slices.Equal(ids(rows), []string{"PC-004"}) {
		t.Fatalf("online=false&q=pc: %v", ids(rows))
	}

	// Keyset pages (?after=) walk the same order as offset pages and keep
	// the filter's total.
	var walked []string
	for after := ""; ; {
		rows, total = list("?limit=2&after=" + url.QueryEscape(after))
		if total != "5" {
			t.Fatalf("after=%q: total %s, want 5", after, total)
		}
		if len(rows) == 0 {
			break
		}
		walked = append(walked, ids(rows)...)
		after = rows[len(rows)-1].PcID
	}
	if !slices.Equal(walked, []string{"PC-001", "PC-002", "PC-004", "WS-9", "pc_3"}) {
		t.Fatalf("keyset walk: %v", walked)
	}
	rows, total = list("?online=true&after=PC-001") // default limit
	if total != "3" || !slices.Equal(ids(rows), []string{"PC-002", "pc_3"}) {
		t.Fatalf("online=true&after=PC-001: %v total %s", ids(rows), total)
	}
	rows, total = list("?q=pc&limit=1&after=PC-002")
	if total != "4" || !slices.Equal(ids(rows), []string{"PC-004"}) {
		t.Fatalf("q=pc&after=PC-002: %v total %s", ids(rows), total)
	}
	b.WantError(t, http.MethodGet, "/api/agents?after=PC-001&offset=2", nil, 400, "after and offset cannot be combined: after already says where the page starts")
	b.WantError(t, http.MethodGet, "/api/agents?after=a.b", nil, 400, `invalid after "a.b": must be the pc_id of the last agent of the previous page`)

	b.WantError(t, http.MethodGet, "/api/agents?online=maybe", nil, 400, `invalid online "maybe": must be true or false`)
	b.WantError(t, http.MethodGet, "/api/agents?limit=0", nil, 400, "")
	b.WantError(t, http.MethodGet, "/api/agents?offset=-1", nil, 400, "")
	b.WantError(t, http.MethodPost, "/api/agents", nil, 405, "")
}

func TestAgentDetail(t *testing.T) {
	storagetest.RunDialects(t, testAgentDetail)
}

func testAgentDetail(t *testing.T, db storagetest.Dialect) {
	b := apptest.Start(t, apptest.Options{DBURL: db.URL(t)})
	fleettest.InsertAgents(t, b.Store, fleettest.Agent{PcID: "PC-1", Hostname: "pc1", OS: "windows", Seen: time.Now()})

	b.WantError(t, http.MethodGet, "/api/agents/nope", nil, 404, "agent 'nope' not found")
	b.WantError(t, http.MethodGet, "/api/agents/bad.id", nil, 400,
		`invalid pc_id "bad.id": must match [A-Za-z0-9_=-]+ (no spaces, '.', '*', '>')`)
	wantErrorPrefix(t, b, http.MethodDelete, "/api/agents/PC-1", 409, "agent 'PC-1' is online (last heartbeat ")

	b.JSON(t, http.MethodPut, "/api/agents/PC-1/groups", map[string]any{"groups": []string{"lab", "canary"}}, 200, nil)
	b.JSON(t, http.MethodPut, "/api/groups/canary/config", map[string]any{"target_version": "0.22.0"}, 200, nil)

	var d fleet.AgentDetail
	b.JSON(t, http.MethodGet, "/api/agents/PC-1", nil, 200, &d)
	if d.PcID != "PC-1" || !d.Online || !slices.Equal(d.Groups, []string{"canary", "lab"}) {
		t.Fatalf("detail: %+v", d)
	}
	if d.EffectiveConfig.TargetVersion == nil || *d.EffectiveConfig.TargetVersion != "0.22.0" || d.Warnings == nil {
		t.Fatalf("detail effective config: %+v", d)
	}
}

func TestGroupsEditing(t *testing.T) {
	b := apptest.Start(t)
	audit := fleettest.RecordAudit(t, b.Conn)
	type groupsBody struct {
		Groups []string `json:"groups"`
	}
	var g groupsBody

	// Unset: an empty list, never null, for a PC that never reported.
	out := b.JSON(t, http.MethodGet, "/api/agents/PC-1/groups", nil, 200, &g)
	if strings.TrimSpace(string(out)) != `{"groups":[]}` {
		t.Fatalf("unset groups: %s", out)
	}

	b.JSON(t, http.MethodPut, "/api/agents/PC-1/groups", map[string]any{"groups": []string{"b", "a", "b", " c "}}, 200, &g)
	if !slices.Equal(g.Groups, []string{"a", "b", "c"}) {
		t.Fatalf("PUT sorted/deduped: %v", g.Groups)
	}
	b.JSON(t, http.MethodGet, "/api/agents/PC-1/groups", nil, 200, &g)
	if !slices.Equal(g.Groups, []string{"a", "b", "c"}) {
		t.Fatalf("GET after PUT: %v", g.Groups)
	}
	// KV holds the wrapper form.
	e, err := b.JS.KeyValue(context.Background(), messages.BucketAgentGroups)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := e.Get(context.Background(), "PC-1")
	if err != nil || string(entry.Value()) != `{"groups":["a","b","c"]}` {
		t.Fatalf("KV value %q %v", entry.Value(), err)
	}

	b.WantError(t, http.MethodPut, "/api/agents/PC-1/groups", map[string]any{"groups": []string{"a", "  "}}, 400, "group name must not be empty")
	b.WantError(t, http.MethodPut, "/api/agents/PC-1/groups", map[string]any{"groups": []string{"a.b"}}, 400,
		`invalid group "a.b": must match [A-Za-z0-9_=-]+ (no spaces, '.', '*', '>')`)
	b.WantError(t, http.MethodPut, "/api/agents/PC-1/groups", map[string]any{"group": []string{"a"}}, 400, "")
	b.WantError(t, http.MethodPut, "/api/agents/PC-1/groups", "{", 400, "")

	b.JSON(t, http.MethodPost, "/api/agents/PC-1/groups", map[string]any{"group": "aa"}, 200, &g)
	if !slices.Equal(g.Groups, []string{"a", "aa", "b", "c"}) {
		t.Fatalf("POST add: %v", g.Groups)
	}
	b.JSON(t, http.MethodPost, "/api/agents/PC-1/groups", map[string]any{"group": "aa"}, 200, &g)
	if !slices.Equal(g.Groups, []string{"a", "aa", "b", "c"}) {
		t.Fatalf("POST add twice: %v", g.Groups)
	}
	b.WantError(t, http.MethodPost, "/api/agents/PC-1/groups", map[string]any{"group": ""}, 400, "group name must not be empty")
	b.WantError(t, http.MethodPost, "/api/agents/PC-1/groups", map[string]any{"group": "   "}, 400, "group name must not be empty")
	b.WantError(t, http.MethodPost, "/api/agents/PC-1/groups", map[string]any{}, 400, "group name must not be empty")
	b.WantError(t, http.MethodPost, "/api/agents/PC-1/groups", map[string]any{"group": "x>"}, 400, "")

	b.JSON(t, http.MethodDelete, "/api/agents/PC-1/groups/b", nil, 200, &g)
	if !slices.Equal(g.Groups, []string{"a", "aa", "c"}) {
		t.Fatalf("DELETE: %v", g.Groups)
	}
	b.JSON(t, http.MethodDelete, "/api/agents/PC-1/groups/zzz", nil, 200, &g)
	if !slices.Equal(g.Groups, []string{"a", "aa", "c"}) {
		t.Fatalf("DELETE non-member: %v", g.Groups)
	}
	b.WantError(t, http.MethodDelete, "/api/agents/PC-1/groups/a*", nil, 400, "")
	b.WantError(t, http.MethodPatch, "/api/agents/PC-1/groups", nil, 405, "")
	b.WantError(t, http.MethodGet, "/api/agents/PC-1/groups/a", nil, 405, "")

	// The mirror rows follow at once (read-your-writes for targeting).
	var members []string
	if err := b.Store.R.NewSelect().Model((*storage.GroupMember)(nil)).Column("group_name").
		Where("pc_id = ?", "PC-1").Order("group_name").Scan(context.Background(), &members); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(members, []string{"a", "aa", "c"}) {
		t.Fatalf("mirror rows: %v", members)
	}

	// One audit event per effective change: PUT, add, remove; the no-op
	// add and the non-member removal record nothing.
	time.Sleep(100 * time.Millisecond)
	evs := audit.Wait(t, messages.ActionGroupsPut, 3)
	if len(evs) != 3 {
		t.Fatalf("groups_put events: %d", len(evs))
	}
	ev := evs[1]
	if ev.Actor != "operator" || ev.Target == nil || *ev.Target != "PC-1" || ev.Payload["sub"] != "admin" || ev.Payload["op"] != "add" {
		t.Fatalf("audit event: %+v", ev)
	}
}

// TestGroupsConcurrentEdits fires parallel adds and removes at one PC:
// compare-and-set must keep every one of them.
func TestGroupsConcurrentEdits(t *testing.T) {
	b := apptest.Start(t)
	var initial []string
	for i := range 10 {
		initial = append(initial, fmt.Sprintf("old%02d", i))
	}
	b.JSON(t, http.MethodPut, "/api/agents/PC-1/groups", map[string]any{"groups": initial}, 200, nil)

	var wg sync.WaitGroup
	errs := make(chan error, 40)
	var want []string
	for i := range 20 {
		g := fmt.Sprintf("new%02d", i)
		want = append(want, g)
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, out := b.Do(t, http.MethodPost, "/api/agents/PC-1/groups", map[string]any{"group": g})
			if resp.StatusCode != 200 {
				errs <- fmt.Errorf("add %s: %d %s", g, resp.StatusCode, out)
			}
		}()
	}
	for i := range 5 { // remove old00..old04, keep old05..old09
		g := fmt.Sprintf("old%02d", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, out := b.Do(t, http.MethodDelete, "/api/agents/PC-1/groups/"+g, nil)
			if resp.StatusCode != 200 {
				errs <- fmt.Errorf("remove %s: %d %s", g, resp.StatusCode, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	want = append(want, initial[5:]...)
	slices.Sort(want)
	var g struct {
		Groups []string `json:"groups"`
	}
	b.JSON(t, http.MethodGet, "/api/agents/PC-1/groups", nil, 200, &g)
	if !slices.Equal(g.Groups, want) {
		t.Fatalf("after concurrent edits:\n got %v\nwant %v", g.Groups, want)
	}
	var members []string
	if err := b.Store.R.NewSelect().Model((*storage.GroupMember)(nil)).Column("group_name").
		Where("pc_id = ?", "PC-1").Order("group_name").Scan(context.Background(), &members); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(members, want) {
		t.Fatalf("mirror after concurrent edits:\n got %v\nwant %v", members, want)
	}
}

func TestConfigScopes(t *testing.T) {
	b := apptest.Start(t)
	audit := fleettest.RecordAudit(t, b.Conn)

	out := b.JSON(t, http.MethodGet, "/api/config", nil, 200, nil)
	if strings.TrimSpace(string(out)) != "{}" {
		t.Fatalf("unset global: %s", out)
	}
	out = b.JSON(t, http.MethodGet, "/api/groups/canary/config", nil, 200, nil)
	if strings.TrimSpace(string(out)) != "{}" {
		t.Fatalf("unset group: %s", out)
	}
	b.WantError(t, http.MethodPut, "/api/config", map[string]any{"heartbeat_interval": "5 parsecs"}, 400, "")
	resp, body := b.Do(t, http.MethodPut, "/api/config", map[string]any{"target_version_jitter": "soon"})
	if resp.StatusCode != 400 || !strings.Contains(string(body), "invalid target_version_jitter") {
		t.Fatalf("bad jitter: %d %s", resp.StatusCode, body)
	}
	b.WantError(t, http.MethodPut, "/api/config", map[string]any{"heartbeat_interval": 30}, 400, "")
	b.WantError(t, http.MethodPut, "/api/config", "", 400, "")
	b.WantError(t, http.MethodDelete, "/api/config", nil, 405, "")
	b.WantError(t, http.MethodPut, "/api/groups/a.b/config", map[string]any{}, 400, "")
	b.WantError(t, http.MethodGet, "/api/pcs/a%20b/config", nil, 400, "")

	global := map[string]any{"heartbeat_interval": "1m", "target_version": "0.21.2", "legacy_inventory_x": true}
	out = b.JSON(t, http.MethodPut, "/api/config", global, 200, nil)
	if strings.TrimSpace(string(out)) != `{"target_version":"0.21.2","heartbeat_interval":"1m"}` {
		t.Fatalf("PUT global echo: %s", out)
	}
	b.JSON(t, http.MethodPut, "/api/groups/b/config", map[string]any{"target_version": "0.22.0", "target_version_jitter": "10m"}, 200, nil)
	b.JSON(t, http.MethodPut, "/api/groups/c/config", map[string]any{"target_version": "0.23.0"}, 200, nil)
	b.JSON(t, http.MethodPut, "/api/pcs/PC-1/config", map[string]any{"heartbeat_interval": "15s"}, 200, nil)
	b.JSON(t, http.MethodPut, "/api/agents/PC-1/groups", map[string]any{"groups": []string{"c", "b"}}, 200, nil)

	var eff fleet.EffectiveConfigResponse
	b.JSON(t, http.MethodGet, "/api/agents/PC-1/effective_config", nil, 200, &eff)
	if eff.PcID != "PC-1" || eff.Effective.TargetVersion == nil || *eff.Effective.TargetVersion != "0.23.0" ||
		eff.Effective.TargetVersionJitter != "10m" || eff.Effective.HeartbeatInterval != "15s" {
		t.Fatalf("effective: %+v", eff)
	}
	if len(eff.Warnings) != 1 || !strings.Contains(eff.Warnings[0], "target_version is set by several groups (b, c)") {
		t.Fatalf("warnings: %v", eff.Warnings)
	}
	// A PC nobody configured gets the built-ins plus global, warnings [].
	out = b.JSON(t, http.MethodGet, "/api/agents/PC-2/effective_config", nil, 200, nil)
	if !strings.Contains(string(out), `"warnings":[]`) || !strings.Contains(string(out), `"heartbeat_interval":"1m"`) ||
		!strings.Contains(string(out), `"target_version_jitter":"0s"`) {
		t.Fatalf("unconfigured PC: %s", out)
	}

	resp, _ = b.Do(t, http.MethodDelete, "/api/groups/c/config", nil)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE group scope: %d", resp.StatusCode)
	}
	resp, _ = b.Do(t, http.MethodDelete, "/api/groups/c/config", nil) // idempotent
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE again: %d", resp.StatusCode)
	}
	resp, _ = b.Do(t, http.MethodDelete, "/api/pcs/PC-1/config", nil)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE pc scope: %d", resp.StatusCode)
	}
	b.JSON(t, http.MethodGet, "/api/agents/PC-1/effective_config", nil, 200, &eff)
	if *eff.Effective.TargetVersion != "0.22.0" || eff.Effective.HeartbeatInterval != "1m" || len(eff.Warnings) != 0 {
		t.Fatalf("effective after deletes: %+v", eff)
	}

	puts := audit.Wait(t, messages.ActionConfigPut, 4)
	if *puts[1].Target != "groups.b" || puts[1].Payload["key"] != "groups.b" {
		t.Fatalf("config_put event: %+v", puts[1])
	}
	dels := audit.Wait(t, messages.ActionConfigDelete, 2)
	if len(dels) != 2 || *dels[0].Target != "groups.c" || *dels[1].Target != "pcs.PC-1" {
		t.Fatalf("config_delete events: %+v", dels)
	}
}

// TestWrongMethodIsJSON405 sends PATCH (which no route uses) to every path
// of the fleet-facing areas and expects the router's JSON 405.
func TestWrongMethodIsJSON405(t *testing.T) {
	b := apptest.Start(t)
	mine := []string{"/api/agents", "/api/config", "/api/groups/", "/api/pcs/", "/api/run", "/api/health/fleet"}
	n := 0
	for _, p := range b.Router.Patterns() {
		method, path, ok := strings.Cut(p, " ")
		if !ok || !slices.ContainsFunc(mine, func(m string) bool { return strings.HasPrefix(path, m) }) {
			continue
		}
		if method == http.MethodPatch {
			t.Fatalf("%s: PATCH is used; pick another method for this test", p)
		}
		for _, seg := range []string{"{pc_id}", "{group}", "{name}", "{version}"} {
			path = strings.ReplaceAll(path, seg, "x1")
		}
		resp, out := b.Do(t, http.MethodPatch, path, nil)
		var e errBody
		if resp.StatusCode != http.StatusMethodNotAllowed || json.Unmarshal(out, &e) != nil || e.Error == "" {
			t.Errorf("PATCH %s (from %s): %d %s", path, p, resp.StatusCode, out)
		}
		n++
	}
	if n < 20 {
		t.Fatalf("only %d routes checked", n)
	}
}
