package results_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/http/httpx"
	"kanade-backend/http/results"
	"kanade-backend/internal/apptest"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func ptr(s string) *string { return &s }

// result builds a row finished n seconds after t0.
func result(req, pc, exec, job string, exit int, n int) storage.ExecutionResult {
	r := storage.ExecutionResult{
		RequestID: req, PcID: pc, ExitCode: exit, Stdout: "out " + pc, Stderr: "",
		StartedAt:  storage.T(t0.Add(time.Duration(n-1) * time.Second)),
		FinishedAt: storage.T(t0.Add(time.Duration(n) * time.Second)),
		RecordedAt: storage.T(t0.Add(time.Duration(n)*time.Second + time.Millisecond)),
		StreamSeq:  uint64(n + 1000),
	}
	if exec != "" {
		r.ExecID = ptr(exec)
	}
	if job != "" {
		r.JobID = ptr(job)
	}
	return r
}

func insert(t *testing.T, b *apptest.Backend, rows []storage.ExecutionResult) {
	t.Helper()
	err := b.Store.InTx(context.Background(), func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewInsert().Model(&rows).Exec(ctx)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// fixture: a broadcast (req-b, exec-1, job-a) answered by three PCs at the
// same instant, an ad-hoc run, and a failure of another job, in a backend
// on database d.
func fixture(t *testing.T, d storagetest.Dialect) *apptest.Backend {
	b := apptest.Start(t, apptest.Options{DBURL: d.URL(t)})
	insert(t, b, []storage.ExecutionResult{
		result("req-b", "pc-1", "exec-1", "job-a", 0, 10),
		result("req-b", "pc-2", "exec-1", "job-a", 0, 10),
		result("req-b", "pc-3", "exec-1", "job-a", 2, 10),
		result("req-adhoc", "pc-1", "", "", 0, 20),
		result("req-c", "pc-2", "exec-2", "job-b", 1, 30),
	})
	return b
}

type row struct {
	RequestID  string  `json:"request_id"`
	PcID       string  `json:"pc_id"`
	ExecID     *string `json:"exec_id"`
	JobID      *string `json:"job_id"`
	ExitCode   int     `json:"exit_code"`
	Status     string  `json:"status"`
	Stdout     string  `json:"stdout"`
	FinishedAt string  `json:"finished_at"`
}

func ids(rows []row) string {
	var s []string
	for _, r := range rows {
		s = append(s, r.RequestID+"/"+r.PcID)
	}
	return strings.Join(s, " ")
}

func TestListFiltersAndOrder(t *testing.T) {
	storagetest.RunDialects(t, testListFiltersAndOrder)
}

func testListFiltersAndOrder(t *testing.T, d storagetest.Dialect) {
	b := fixture(t, d)
	since := url.QueryEscape(t0.Add(20 * time.Second).In(time.FixedZone("JST", 9*3600)).Format(time.RFC3339))
	cases := []struct {
		query string
		want  string
		total string
	}{
		// Newest first; the broadcast's tie is broken by request_id, pc_id.
		{"", "req-c/pc-2 req-adhoc/pc-1 req-b/pc-3 req-b/pc-2 req-b/pc-1", "5"},
		{"?pc_id=pc-1", "req-adhoc/pc-1 req-b/pc-1", "2"},
		{"?job_id=job-a", "req-b/pc-3 req-b/pc-2 req-b/pc-1", "3"},
		{"?exec_id=exec-1&status=failure", "req-b/pc-3", "1"},
		{"?status=success", "req-adhoc/pc-1 req-b/pc-2 req-b/pc-1", "3"},
		{"?status=failure", "req-c/pc-2 req-b/pc-3", "2"},
		{"?since=" + since, "req-c/pc-2 req-adhoc/pc-1", "2"},
		// An unescaped '+' arrives as a space and is put back.
		{"?since=2026-03-01T21:00:20+09:00", "req-c/pc-2 req-adhoc/pc-1", "2"},
		{"?pc_id=", "req-c/pc-2 req-adhoc/pc-1 req-b/pc-3 req-b/pc-2 req-b/pc-1", "5"},
		{"?pc_id=nobody", "", "0"},
		// Paging: a full page asks for the count, a short one ends the list.
		{"?limit=2", "req-c/pc-2 req-adhoc/pc-1", "5"},
		{"?limit=2&offset=2", "req-b/pc-3 req-b/pc-2", "5"},
		{"?limit=2&offset=4", "req-b/pc-1", "5"},
		{"?limit=2&offset=10", "", "5"},
	}
	for _, c := range cases {
		var got []row
		resp, body := b.Do(t, "GET", "/api/results"+c.query, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d %s", c.query, resp.StatusCode, body)
		}
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("%s: %v: %s", c.query, err, body)
		}
		if ids(got) != c.want {
			t.Errorf("%s: got %q, want %q", c.query, ids(got), c.want)
		}
		if tc := resp.Header.Get("X-Total-Count"); tc != c.total {
			t.Errorf("%s: X-Total-Count %q, want %s", c.query, tc, c.total)
		}
		if resp.Header.Get(httpx.HeaderTotalCapped) != "" {
			t.Errorf("%s: capped header on a small list", c.query)
		}
	}
}

func TestRowShape(t *testing.T) {
	storagetest.RunDialects(t, testRowShape)
}

func testRowShape(t *testing.T, d storagetest.Dialect) {
	b := fixture(t, d)
	var got []map[string]any
	b.JSON(t, "GET", "/api/results?pc_id=pc-1", nil, 200, &got)
	want := map[string]any{
		"request_id": "req-adhoc", "pc_id": "pc-1", "exec_id": nil, "job_id": nil,
		"exit_code": 0.0, "status": "success", "stdout": "out pc-1", "stderr": "",
		"started_at":  "2026-03-01T12:00:19Z",
		"finished_at": "2026-03-01T12:00:20Z",
		"recorded_at": "2026-03-01T12:00:20.001Z",
	}
	if len(got) != 2 || fmt.Sprint(got[0]) != fmt.Sprint(want) {
		t.Fatalf("row = %v\nwant  %v", got[0], want)
	}
	if got[1]["exec_id"] != "exec-1" || got[1]["job_id"] != "job-a" {
		t.Fatalf("row = %v", got[1])
	}
}

// Bad filters are refused before any query: one dialect is enough.
func TestBadFilters(t *testing.T) {
	b := fixture(t, storagetest.Dialects[0])
	cases := []struct{ query, want string }{
		{"?status=ok", `invalid status "ok": must be success or failure`},
		{"?since=yesterday", `invalid since "yesterday": must be an RFC 3339 time such as 2026-01-02T15:04:05Z or 2026-01-02T15:04:05+09:00`},
		{"?since=2026-03-01", `invalid since "2026-03-01": must be an RFC 3339 time`},
		{"?pc_id=a%20b", `invalid pc_id "a b": must match [A-Za-z0-9_=-]+ (no spaces, '.', '*', '>')`},
		{"?job_id=a.b", `invalid job_id "a.b": must match`},
		{"?exec_id=*", `invalid exec_id "*": must match`},
		{"?limit=0", `invalid limit "0": must be an integer between 1 and 1000`},
		{"?limit=1001", `invalid limit "1001"`},
		{"?offset=-1", `invalid offset "-1": must be a non-negative integer`},
	}
	for _, c := range cases {
		resp, body := b.Do(t, "GET", "/api/results"+c.query, nil)
		var e httpx.ErrorBody
		if resp.StatusCode != 400 || json.Unmarshal(body, &e) != nil || !strings.HasPrefix(e.Error, c.want) {
			t.Errorf("%s: %d %s, want 400 %q", c.query, resp.StatusCode, body, c.want)
		}
	}
}

// GET /api/results/{request_id} answers one object, as upstream: the
// newest answer, or the PC's own with ?pc_id=; every PC's row of the
// request is a list filter.
func TestByRequest(t *testing.T) {
	storagetest.RunDialects(t, testByRequest)
}

func testByRequest(t *testing.T, d storagetest.Dialect) {
	b := fixture(t, d)
	insert(t, b, []storage.ExecutionResult{result("req-b", "pc-0", "exec-1", "job-a", 0, 11)})
	var one row
	b.JSON(t, "GET", "/api/results/req-b", nil, 200, &one)
	if one.PcID != "pc-0" || one.RequestID != "req-b" || one.Status != "success" {
		t.Fatalf("newest answer = %+v, want pc-0's", one)
	}
	b.JSON(t, "GET", "/api/results/req-b?pc_id=pc-3", nil, 200, &one)
	if one.PcID != "pc-3" || one.Status != "failure" || one.ExitCode != 2 || one.Stdout != "out pc-3" {
		t.Fatalf("pc-3's answer = %+v", one)
	}

	var got []row
	resp, body := b.Do(t, "GET", "/api/results?request_id=req-b", nil)
	if resp.StatusCode != 200 || json.Unmarshal(body, &got) != nil {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if ids(got) != "req-b/pc-0 req-b/pc-3 req-b/pc-2 req-b/pc-1" || resp.Header.Get("X-Total-Count") != "4" {
		t.Fatalf("got %q total %s", ids(got), resp.Header.Get("X-Total-Count"))
	}
	got = nil
	resp, body = b.Do(t, "GET", "/api/results?request_id=req-b&status=failure", nil)
	if json.Unmarshal(body, &got) != nil || ids(got) != "req-b/pc-3" || resp.Header.Get("X-Total-Count") != "1" {
		t.Fatalf("failures of req-b: %s total %s", body, resp.Header.Get("X-Total-Count"))
	}

	for path, want := range map[string]struct {
		status int
		text   string
	}{
		"/api/results/req-none":            {404, "no results for request_id 'req-none'"},
		"/api/results/req-b?pc_id=pc-9":    {404, "no result from pc 'pc-9' for request_id 'req-b'"},
		"/api/results/a.b":                 {400, `invalid request_id "a.b": must match [A-Za-z0-9_=-]+`},
		"/api/results/req-b?pc_id=a%20b":   {400, `invalid pc_id "a b": must match`},
		"/api/results?request_id=" + "a.b": {400, `invalid request_id "a.b": must match`},
	} {
		resp, body := b.Do(t, "GET", path, nil)
		var e httpx.ErrorBody
		if resp.StatusCode != want.status || json.Unmarshal(body, &e) != nil || !strings.HasPrefix(e.Error, want.text) {
			t.Errorf("%s: %d %s, want %d %q", path, resp.StatusCode, body, want.status, want.text)
		}
	}
}

func TestMethodsAndUnknownPaths(t *testing.T) {
	b := apptest.Start(t)
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{"POST", "/api/results", 405},
		{"DELETE", "/api/results/req-1", 405},
		{"GET", "/api/results/req-1/extra", 404},
		{"GET", "/api/x", 404},
	} {
		resp, body := b.Do(t, c.method, c.path, nil)
		var e httpx.ErrorBody
		if resp.StatusCode != c.status || json.Unmarshal(body, &e) != nil || e.Error == "" {
			t.Errorf("%s %s: %d %s, want %d JSON", c.method, c.path, resp.StatusCode, body, c.status)
		}
	}
}

// Beyond httpx.TotalCap matching rows the count stops: X-Total-Count is the
// cap, flagged as a lower bound, and never less than the rows already
// paged past.
func TestTotalIsCapped(t *testing.T) {
	storagetest.RunDialects(t, testTotalIsCapped)
}

func testTotalIsCapped(t *testing.T, d storagetest.Dialect) {
	b := apptest.Start(t, apptest.Options{DBURL: d.URL(t)})
	f := storagetest.Fleet{Agents: 100, Results: httpx.TotalCap + 100, ResultsPerExec: 100, Jobs: 2, End: t0, Spacing: time.Minute}
	if err := storagetest.Seed(context.Background(), b.Store, f); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		query, total, capped string
	}{
		{"", "10000", "true"},
		{"?offset=10040", "10090", "true"},
		{"?offset=10080&limit=50", "10100", ""},         // the short last page is exact
		{"?job_id=" + storagetest.JobID(0), "5100", ""}, // execs 0, 2, ..., 100
		{"?exec_id=" + storagetest.ExecID(3), "100", ""},
	} {
		resp, body := b.Do(t, "GET", "/api/results"+c.query, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", c.query, resp.StatusCode, body)
		}
		if got := resp.Header.Get("X-Total-Count"); got != c.total {
			t.Errorf("%s: X-Total-Count %s, want %s", c.query, got, c.total)
		}
		if got := resp.Header.Get(httpx.HeaderTotalCapped); got != c.capped {
			t.Errorf("%s: %s %q, want %q", c.query, httpx.HeaderTotalCapped, got, c.capped)
		}
	}
	// The list's status field follows the exit code.
	var got []results.Row
	b.JSON(t, "GET", "/api/results?status=failure&limit=3", nil, 200, &got)
	for _, r := range got {
		if r.Status != results.StatusFailure || r.ExitCode == 0 {
			t.Fatalf("failure filter returned %+v", r)
		}
	}
}
