package operators_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"kanade-backend/http/auth"
	"kanade-backend/internal/apptest"
	"kanade-backend/internal/sim"
	"kanade-backend/messages"
)

const helloJob = `{"id":"hello","version":"1.0.0","execute":{"shell":"powershell","script":"echo hello","timeout":"30s"}}`

// fixture is a backend with something behind every read route: two
// simulated agents (they answer logs.fetch), a job, an exec with its
// results, a schedule, group and PC config scopes, and an operator.
type fixture struct {
	*apptest.Backend
	execID, requestID string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	b := apptest.Start(t)
	b.SetGroups(t, map[string][]string{"SIM-0001": {"canary"}, "SIM-0002": {"canary"}})
	b.StartFleet(t, sim.Config{Agents: 2, Prefix: "SIM-", Heartbeat: time.Second, Seed: 1,
		RunTime: sim.Range{Min: 10 * time.Millisecond, Max: 20 * time.Millisecond}})
	apptest.Eventually(t, 20*time.Second, func() error {
		var agents []json.RawMessage
		b.JSON(t, "GET", "/api/agents?online=true", nil, http.StatusOK, &agents)
		if len(agents) != 2 {
			return fmt.Errorf("%d agents online", len(agents))
		}
		return nil
	})
	b.JSON(t, "POST", "/api/jobs", helloJob, http.StatusOK, nil)
	var ex messages.ExecResponse
	b.JSON(t, "POST", "/api/exec/hello", `{"target":{"groups":["canary"]}}`, http.StatusOK, &ex)
	f := &fixture{Backend: b, execID: ex.ExecID}
	apptest.Eventually(t, 20*time.Second, func() error {
		var rows []struct {
			RequestID string `json:"request_id"`
		}
		b.JSON(t, "GET", "/api/results?exec_id="+ex.ExecID, nil, http.StatusOK, &rows)
		if len(rows) != 2 {
			return fmt.Errorf("%d results of the exec", len(rows))
		}
		f.requestID = rows[0].RequestID
		return nil
	})
	b.JSON(t, "POST", "/api/schedules", `{"id":"nightly","cron":"0 0 2 * * *","job_id":"hello","target":{"all":true}}`, http.StatusOK, nil)
	b.JSON(t, "PUT", "/api/groups/canary/config", `{"heartbeat_interval":"30s"}`, http.StatusOK, nil)
	b.JSON(t, "PUT", "/api/pcs/SIM-0001/config", `{"heartbeat_interval":"45s"}`, http.StatusOK, nil)
	b.CreateOperator(t, "someone", "viewer")
	return f
}

var wildcard = regexp.MustCompile(`\{([^}]*)\}`)

// path turns a route pattern into a request path: real ids when real is
// set (the fixture's rows, so reads find them), otherwise an id that fails
// validation ("bad.id"), so that a request the role allows stops at the
// handler's first check and changes nothing.
func (f *fixture) path(pattern string, real bool) (method, path string) {
	method, path, _ = strings.Cut(pattern, " ")
	path = wildcard.ReplaceAllStringFunc(path, func(w string) string {
		if !real {
			return "bad.id"
		}
		switch name := strings.Trim(w, "{}"); {
		case name == "pc_id":
			return "SIM-0001"
		case name == "job_id" || name == "manifest_id" || name == "id" && strings.HasPrefix(path, "/api/jobs/"):
			return "hello"
		case name == "id":
			return "nightly"
		case name == "exec_id":
			return f.execID
		case name == "request_id":
			return f.requestID
		case name == "name" && strings.HasPrefix(path, "/api/operators/"):
			return "someone"
		case name == "name" || name == "group":
			return "canary"
		case name == "version":
			return "0.22.0"
		}
		panic("no test value for " + w + " in " + pattern)
	})
	if pattern == "GET /api/schedules/preview" {
		path += "?cron=0+0+2+*+*+*"
	}
	return method, path
}

// send makes one request with tok and returns the status, the content type
// and the body (only the headers of an event stream).
func (f *fixture) send(t *testing.T, tok, method, path, body string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, f.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := f.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	ct := resp.Header.Get("Content-Type")
	if ct == "text/event-stream" {
		return resp.StatusCode, ct, ""
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", method, path, err)
	}
	return resp.StatusCode, ct, strings.TrimSpace(string(b))
}

func forbidden(role auth.Role) string {
	return `{"error":"forbidden: requires role ` + string(role) + `"}`
}

// The acceptance test of roles, over real HTTP, for every route of the
// route table: a viewer gets 200 from every read (with data behind it) and
// 403 from every route that changes state; an operator gets 403 from the
// admin routes (releases, operators, script revocation) and passes the
// role check everywhere else; an admin passes it everywhere. The route
// table and the router must list the same routes.
func TestEveryRouteByRole(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	table := auth.RouteRoles()

	var registered []string
	for _, p := range f.Router.Patterns() {
		if strings.Contains(p, " /api/") {
			registered = append(registered, p)
			if _, ok := table[p]; !ok {
				t.Errorf("route %s has no role in the route table", p)
			}
		}
	}
	for p := range table {
		if !contains(registered, p) {
			t.Errorf("route table entry %s is not a registered route", p)
		}
	}
	patterns := make([]string, 0, len(table))
	for p := range table {
		patterns = append(patterns, p)
	}
	sort.Strings(patterns)

	toks := map[auth.Role]string{
		auth.RoleViewer:   f.CreateOperator(t, "vera", "viewer"),
		auth.RoleOperator: f.CreateOperator(t, "otto", "operator"),
		auth.RoleAdmin:    f.CreateOperator(t, "ada", "admin"),
	}
	counts := map[string]int{}
	for _, pattern := range patterns {
		need := table[pattern]
		for _, role := range auth.Roles() {
			tok := toks[role]
			if !role.Allows(need) {
				method, path := f.path(pattern, false)
				status, _, body := f.send(t, tok, method, path, "{")
				if status != http.StatusForbidden || body != forbidden(need) {
					t.Errorf("%s as %s: %d %s; want 403 %s", pattern, role, status, body, forbidden(need))
				}
				counts[string(role)+" forbidden"]++
				continue
			}
			if need == auth.RoleViewer {
				// Reads: the real thing, 200.
				method, path := f.path(pattern, true)
				status, ct, body := f.send(t, tok, method, path, "")
				if status != http.StatusOK {
					t.Errorf("%s as %s: GET %s: %d %.300s; want 200", pattern, role, path, status, body)
				}
				if pattern == "GET /api/events" && ct != "text/event-stream" {
					t.Errorf("%s as %s: content type %q", pattern, role, ct)
				}
				counts[string(role)+" read"]++
				continue
			}
			// Changes the role may make: the role check passes, and the
			// invalid id or body stops the request at the handler's own
			// validation (400; 404 for a release version, which is not an
			// id token), so nothing changes.
			// A read kept from lower roles (agent credentials) without an id
			// to get wrong answers 200.
			method, path := f.path(pattern, false)
			status, _, body := f.send(t, tok, method, path, "{")
			if status != http.StatusBadRequest && status != http.StatusNotFound && !(method == "GET" && status == http.StatusOK) {
				t.Errorf("%s as %s: %d %s; want the handler's 400 or 404", pattern, role, status, body)
			}
			counts[string(role)+" allowed change"]++
		}
	}
	t.Logf("%d routes; requests by outcome: %v", len(patterns), counts)
	// Every read route was read by all three roles, and the viewer was
	// refused every change.
	reads, changes := 0, 0
	for _, need := range table {
		if need == auth.RoleViewer {
			reads++
		} else {
			changes++
		}
	}
	if counts["viewer read"] != reads || counts["admin read"] != reads || counts["viewer forbidden"] != changes {
		t.Errorf("counts %v; want %d reads by each role and %d changes refused to the viewer", counts, reads, changes)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
