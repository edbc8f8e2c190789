package inventory_test

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/http/httpx"
	"kanade-backend/internal/apptest"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	hwHint = `{"display":[{"field":"os","label":"OS"},{"field":"ram","label":"RAM","type":"bytes"}],"summary":[{"field":"os","label":"OS"}]}`
	swHint = `{"display":[{"field":"name","label":"Name"}]}`
)

func manifest(id, hint string) json.RawMessage {
	inv := "null"
	if hint != "" {
		inv = hint
	}
	return json.RawMessage(`{"id":"` + id + `","version":"1","description":"` + id + ` probe","execute":{"shell":"powershell","script":"x","timeout":"60s","run_as":"system"},"require_approval":false,"inventory":` + inv + `}`)
}

func fixture(t *testing.T, d storagetest.Dialect) *apptest.Backend {
	b := apptest.Start(t, apptest.Options{DBURL: d.URL(t)})
	desc := func(s string) *string { return &s }
	jobs := []storage.Job{
		{ID: "hw", Version: "1", Description: desc("hw probe"), HasInventory: true, Manifest: manifest("hw", hwHint)},
		{ID: "sw", Version: "1", Description: desc("sw probe"), HasInventory: true, Manifest: manifest("sw", swHint)},
		{ID: "plain", Version: "1", HasInventory: false, Manifest: manifest("plain", "")},
	}
	facts := []storage.InventoryFact{
		{PcID: "pc-2", JobID: "hw", Facts: json.RawMessage(`{"os":"Windows 11","ram":8}`), Display: json.RawMessage(`[{"field":"os","label":"OS"}]`), CollectedAt: storage.T(t0)},
		{PcID: "pc-1", JobID: "hw", Facts: json.RawMessage(`{"os":"Windows 10","ram":4}`), Display: json.RawMessage(`[{"field":"os","label":"OS"}]`), Summary: json.RawMessage(`[{"field":"os","label":"OS"}]`), CollectedAt: storage.T(t0.Add(time.Minute))},
		{PcID: "pc-1", JobID: "sw", Facts: json.RawMessage(`[{"name":"7zip"}]`), Display: json.RawMessage(swHint[11 : len(swHint)-1]), CollectedAt: storage.T(t0)},
		// A probe that has left the catalog; its facts remain.
		{PcID: "pc-1", JobID: "gone", Facts: json.RawMessage(`{"x":1}`), Display: json.RawMessage(`[{"field":"x","label":"X","type":"number"}]`), CollectedAt: storage.T(t0)},
		// A PC literally named "jobs".
		{PcID: "jobs", JobID: "hw", Facts: json.RawMessage(`{}`), Display: json.RawMessage(`[]`), CollectedAt: storage.T(t0)},
	}
	for i := range jobs {
		jobs[i].KVRevision, jobs[i].UpdatedAt = uint64(i+1), storage.T(t0)
	}
	for i := range facts {
		facts[i].RecordedAt = storage.T(facts[i].CollectedAt.Add(time.Second))
	}
	err := b.Store.InTx(context.Background(), func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewInsert().Model(&jobs).Exec(ctx); err != nil {
			return err
		}
		_, err := tx.NewInsert().Model(&facts).Exec(ctx)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// compact re-encodes JSON so expected texts can be written by hand.
func compact(t *testing.T, b []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

func TestJobs(t *testing.T) {
	storagetest.RunDialects(t, testJobs)
}

func testJobs(t *testing.T, d storagetest.Dialect) {
	b := fixture(t, d)
	resp, body := b.Do(t, "GET", "/api/inventory/jobs", nil)
	want := `[{"description":"hw probe","display":[{"field":"os","label":"OS"},{"field":"ram","label":"RAM","type":"bytes"}],"manifest_id":"hw","summary":[{"field":"os","label":"OS"}]},` +
		`{"description":"sw probe","display":[{"field":"name","label":"Name"}],"manifest_id":"sw","summary":null}]`
	if resp.StatusCode != 200 || compact(t, body) != want || resp.Header.Get("X-Total-Count") != "2" {
		t.Fatalf("%d %s\nwant %s", resp.StatusCode, compact(t, body), want)
	}
	resp, body = b.Do(t, "GET", "/api/inventory/jobs?limit=1&offset=1", nil)
	if !strings.Contains(string(body), `"manifest_id":"sw"`) || strings.Contains(string(body), `"hw"`) || resp.Header.Get("X-Total-Count") != "2" {
		t.Fatalf("paged: %s", body)
	}
}

func TestByJob(t *testing.T) {
	storagetest.RunDialects(t, testByJob)
}

func testByJob(t *testing.T, d storagetest.Dialect) {
	b := fixture(t, d)
	resp, body := b.Do(t, "GET", "/api/inventory/by-job/hw", nil)
	want := `{"display":[{"field":"os","label":"OS"},{"field":"ram","label":"RAM","type":"bytes"}],"manifest_id":"hw",` +
		`"rows":[{"collected_at":"2026-03-01T12:00:00Z","facts":{},"pc_id":"jobs"},` +
		`{"collected_at":"2026-03-01T12:01:00Z","facts":{"os":"Windows 10","ram":4},"pc_id":"pc-1"},` +
		`{"collected_at":"2026-03-01T12:00:00Z","facts":{"os":"Windows 11","ram":8},"pc_id":"pc-2"}],` +
		`"summary":[{"field":"os","label":"OS"}]}`
	if resp.StatusCode != 200 || compact(t, body) != want || resp.Header.Get("X-Total-Count") != "3" {
		t.Fatalf("%d %s\nwant %s", resp.StatusCode, compact(t, body), want)
	}

	var page struct {
		Rows []struct {
			PcID string `json:"pc_id"`
		} `json:"rows"`
	}
	resp, body = b.Do(t, "GET", "/api/inventory/by-job/hw?limit=1&offset=1", nil)
	if json.Unmarshal(body, &page) != nil || len(page.Rows) != 1 || page.Rows[0].PcID != "pc-1" || resp.Header.Get("X-Total-Count") != "3" {
		t.Fatalf("paged: %s", body)
	}

	// In the catalog without facts (and without a hint), or unknown to
	// both catalog and facts: 200, the empty shape (upstream's answer).
	for _, id := range []string{"plain", "nope"} {
		resp, body = b.Do(t, "GET", "/api/inventory/by-job/"+id, nil)
		if got := compact(t, body); resp.StatusCode != 200 || got != `{"display":[],"manifest_id":"`+id+`","rows":[],"summary":null}` ||
			resp.Header.Get("X-Total-Count") != "0" {
			t.Fatalf("%s: %d %s", id, resp.StatusCode, got)
		}
	}
	// Gone from the catalog, facts remain: the stored snapshot describes them.
	_, body = b.Do(t, "GET", "/api/inventory/by-job/gone", nil)
	if got := compact(t, body); got != `{"display":[{"field":"x","label":"X","type":"number"}],"manifest_id":"gone","rows":[{"collected_at":"2026-03-01T12:00:00Z","facts":{"x":1},"pc_id":"pc-1"}],"summary":null}` {
		t.Fatalf("gone: %s", got)
	}
}

func TestByPC(t *testing.T) {
	storagetest.RunDialects(t, testByPC)
}

func testByPC(t *testing.T, d storagetest.Dialect) {
	b := fixture(t, d)
	var rows []map[string]any
	resp, body := b.Do(t, "GET", "/api/inventory/pc-1", nil)
	if resp.StatusCode != 200 || json.Unmarshal(body, &rows) != nil || resp.Header.Get("X-Total-Count") != "3" {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var jobs []string
	for _, r := range rows {
		jobs = append(jobs, r["job_id"].(string))
	}
	if strings.Join(jobs, ",") != "gone,hw,sw" {
		t.Fatalf("jobs %v", jobs)
	}
	want := map[string]any{
		"job_id": "hw", "facts": map[string]any{"os": "Windows 10", "ram": 4.0},
		"display":      []any{map[string]any{"field": "os", "label": "OS"}},
		"summary":      []any{map[string]any{"field": "os", "label": "OS"}},
		"collected_at": "2026-03-01T12:01:00Z", "recorded_at": "2026-03-01T12:01:01Z",
	}
	if !reflect.DeepEqual(rows[1], want) {
		t.Fatalf("hw row %v\nwant %v", rows[1], want)
	}
	if s, ok := rows[2]["summary"]; !ok || s != nil {
		t.Fatalf("a NULL summary must be null: %v", rows[2])
	}

	resp, body = b.Do(t, "GET", "/api/inventory/pc-unknown", nil)
	if resp.StatusCode != 200 || string(body) != "[]\n" || resp.Header.Get("X-Total-Count") != "0" {
		t.Fatalf("unknown pc: %d %q", resp.StatusCode, body)
	}
}

// ServeMux gives the literal /api/inventory/jobs precedence over
// /api/inventory/{pc_id}; every other one-segment path is a pc_id and every
// two-segment by-job path a job.
func TestRouteOverlap(t *testing.T) {
	storagetest.RunDialects(t, testRouteOverlap)
}

func testRouteOverlap(t *testing.T, d storagetest.Dialect) {
	b := fixture(t, d)
	_, body := b.Do(t, "GET", "/api/inventory/jobs", nil)
	if !strings.Contains(string(body), `"manifest_id"`) {
		t.Fatalf("/api/inventory/jobs did not list jobs: %s", body)
	}
	_, body = b.Do(t, "GET", "/api/inventory/by-job", nil) // a pc_id "by-job"
	if string(body) != "[]\n" {
		t.Fatalf("/api/inventory/by-job: %s", body)
	}
	_, body = b.Do(t, "GET", "/api/inventory/by-job/jobs", nil) // a job "jobs"
	if !strings.Contains(string(body), `"manifest_id":"jobs"`) {
		t.Fatalf("/api/inventory/by-job/jobs: %s", body)
	}
	_, body = b.Do(t, "GET", "/api/inventory/pc-2", nil)
	if !strings.Contains(string(body), `"job_id":"hw"`) {
		t.Fatalf("/api/inventory/pc-2: %s", body)
	}
}

func TestErrors(t *testing.T) {
	storagetest.RunDialects(t, testErrors)
}

func testErrors(t *testing.T, d storagetest.Dialect) {
	b := fixture(t, d)
	for _, c := range []struct {
		method, path string
		status       int
		text         string
	}{
		{"GET", "/api/inventory/by-job/a.b", 400, `invalid job id "a.b": must match [A-Za-z0-9_=-]+`},
		{"GET", "/api/inventory/a%20b", 400, `invalid pc_id "a b": must match`},
		{"GET", "/api/inventory/" + strings.Repeat("x", 201), 400, `invalid pc_id "xxxxxxxx`},
		{"GET", "/api/inventory/pc-1?limit=0", 400, `invalid limit "0"`},
		{"POST", "/api/inventory/jobs", 405, "method POST not allowed"},
		{"DELETE", "/api/inventory/pc-1", 405, "method DELETE not allowed"},
		{"GET", "/api/inventory/by-job/hw/extra", 404, "no API route"},
	} {
		resp, body := b.Do(t, c.method, c.path, nil)
		var e httpx.ErrorBody
		if resp.StatusCode != c.status || json.Unmarshal(body, &e) != nil || !strings.HasPrefix(e.Error, c.text) {
			t.Errorf("%s %s: %d %s, want %d %q", c.method, c.path[:min(len(c.path), 60)], resp.StatusCode, body, c.status, c.text)
		}
	}
}
