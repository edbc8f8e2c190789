package auth

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

func TestRoleOrder(t *testing.T) {
	allowed := map[[2]Role]bool{
		{RoleViewer, RoleViewer}: true, {RoleOperator, RoleViewer}: true, {RoleAdmin, RoleViewer}: true,
		{RoleOperator, RoleOperator}: true, {RoleAdmin, RoleOperator}: true,
		{RoleAdmin, RoleAdmin}: true,
	}
	all := append(Roles(), "", "root", "Admin")
	for _, have := range all {
		for _, need := range all {
			if got := have.Allows(need); got != allowed[[2]Role{have, need}] {
				t.Errorf("%q.Allows(%q) = %v", have, need, got)
			}
		}
	}
	for in, want := range map[string]Role{"viewer": RoleViewer, " Operator ": RoleOperator, "ADMIN": RoleAdmin} {
		if got, err := ParseRole(in); err != nil || got != want {
			t.Errorf("ParseRole(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "root", "view", "admins"} {
		if _, err := ParseRole(in); err == nil || !strings.Contains(err.Error(), "want viewer, operator or admin") {
			t.Errorf("ParseRole(%q) error = %v", in, err)
		}
	}
}

// The route table's invariants: every key is a "METHOD /api/..." pattern
// with a valid role, and no route that changes state is open to viewers
// (what makes the viewer role read-only, whatever routes are added later).
func TestRouteTable(t *testing.T) {
	table := RouteRoles()
	if len(table) < 50 {
		t.Fatalf("route table has %d entries", len(table))
	}
	for pattern, role := range table {
		method, path, ok := strings.Cut(pattern, " ")
		if !ok || !strings.HasPrefix(path, "/api/") || method != strings.ToUpper(method) {
			t.Errorf("%q: not a METHOD /api/... pattern", pattern)
		}
		if !role.Valid() {
			t.Errorf("%s: invalid role %q", pattern, role)
		}
		if method != http.MethodGet && role == RoleViewer {
			t.Errorf("%s changes state but is open to viewers", pattern)
		}
	}
	// Spot checks of the split (the HTTP acceptance test in
	// http/operators walks every route).
	for pattern, want := range map[string]Role{
		"GET /api/events": RoleViewer, "POST /api/exec/{job_id}": RoleOperator,
		"POST /api/agents/rollout": RoleAdmin, "POST /api/operators": RoleAdmin,
		"POST /api/scripts/{job_id}/revoke": RoleAdmin, "PUT /api/config": RoleOperator,
	} {
		if got, _ := RouteRole(pattern); got != want {
			t.Errorf("%s requires %q, want %q", pattern, got, want)
		}
	}
}

func TestMissingRoles(t *testing.T) {
	if err := MissingRoles([]string{"GET /api/jobs", "GET /", "GET /metrics", "POST /api/exec/{job_id}"}); err != nil {
		t.Fatalf("known routes: %v", err)
	}
	err := MissingRoles([]string{"GET /api/jobs", "POST /api/new-thing", "GET /api/other"})
	if err == nil || !strings.Contains(err.Error(), "POST /api/new-thing, GET /api/other") ||
		!strings.Contains(err.Error(), "http/auth/routes.go") {
		t.Fatalf("MissingRoles = %v", err)
	}
}

// guarded serves pattern behind the middleware and Guard, as the router
// does, and answers 200 "ran" when the handler is reached.
func guarded(t *testing.T, a *Authenticator, pattern string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(pattern, Guard(pattern, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ran")
	})))
	srv := httptest.NewServer(a.Middleware(mux))
	t.Cleanup(srv.Close)
	return srv
}

func call(t *testing.T, srv *httptest.Server, method, path, tok string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// JWTs carry their role in the role claim; without one they get the
// configured default; a role the server does not know is refused, not
// guessed.
func TestJWTRoles(t *testing.T) {
	secret := []byte(testSecret)
	withRole := func(role any) string {
		return sign(t, jwt.SigningMethodHS256, secret, claims(jwt.MapClaims{"role": role}))
	}
	tests := []struct {
		name     string
		defRole  Role
		tok      string
		want     int
		wantBody string
	}{
		{"viewer claim on an operator route", "", withRole("viewer"), 403, `{"error":"forbidden: requires role operator"}`},
		{"operator claim", "", withRole("operator"), 200, "ran"},
		{"admin claim, any case", RoleViewer, withRole("Admin"), 200, "ran"},
		{"no claim: default admin", "", sign(t, jwt.SigningMethodHS256, secret, claims(nil)), 200, "ran"},
		{"no claim: configured viewer", RoleViewer, sign(t, jwt.SigningMethodHS256, secret, claims(nil)), 403,
			`{"error":"forbidden: requires role operator"}`},
		{"unknown role", "", withRole("root"), 401,
			`{"error":"invalid token: role claim: unknown role \"root\": want viewer, operator or admin"}`},
		{"role not a string", "", withRole([]string{"admin"}), 401, `{"error":"invalid token: role claim must be a string"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := guarded(t, newAuth(t, Config{JWTSecret: testSecret, JWTDefaultRole: tt.defRole}), "POST /api/exec/{job_id}")
			status, body := call(t, srv, "POST", "/api/exec/hello", tt.tok)
			if status != tt.want || body != tt.wantBody {
				t.Fatalf("%d %s; want %d %s", status, body, tt.want, tt.wantBody)
			}
		})
	}
}

func TestJWTDefaultRoleConfig(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == EnvJWTDefaultRole {
				return v
			}
			return ""
		}
	}
	cfg, err := ConfigFromEnv(env(" viewer "))
	if err != nil || cfg.JWTDefaultRole != RoleViewer {
		t.Fatalf("ConfigFromEnv(viewer) = %+v, %v", cfg, err)
	}
	if _, err := ConfigFromEnv(env("superuser")); err == nil || !strings.Contains(err.Error(), EnvJWTDefaultRole) {
		t.Fatalf("ConfigFromEnv(superuser) error = %v", err)
	}
	if _, err := New(Config{JWTSecret: testSecret, JWTDefaultRole: "root"}, t.TempDir(), nil); err == nil {
		t.Fatal("New accepted an unknown default role")
	}
}

// The static token is an admin: it reaches admin routes; a route missing
// from the table is refused even to an admin.
func TestGuardStaticAdmin(t *testing.T) {
	a := newAuth(t, Config{StaticToken: testStatic})
	for _, pattern := range []string{"POST /api/operators", "GET /api/jobs"} {
		srv := guarded(t, a, pattern)
		method, path, _ := strings.Cut(pattern, " ")
		if status, body := call(t, srv, method, path, testStatic); status != 200 || body != "ran" {
			t.Errorf("%s as admin: %d %s", pattern, status, body)
		}
	}
	srv := guarded(t, a, "POST /api/not-in-table")
	status, body := call(t, srv, "POST", "/api/not-in-table", testStatic)
	if status != 403 || body != `{"error":"forbidden: route POST /api/not-in-table has no role"}` {
		t.Fatalf("unlisted route: %d %s", status, body)
	}
}

// A handler reached without the middleware has no principal and is refused.
func TestRequireWithoutPrincipal(t *testing.T) {
	h := Require(RoleViewer, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("handler reached") }))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/jobs", nil))
	if rec.Code != 403 || strings.TrimSpace(rec.Body.String()) != `{"error":"forbidden: requires role viewer"}` {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}

func TestSessionsEnd(t *testing.T) {
	var s sessions
	ended := map[string]int{}
	mk := func(name string) func() {
		return s.add(name, func() { ended[name]++ })
	}
	mk("alice")
	removeSecond := mk("alice")
	mk("bob")
	removeSecond() // a stream that finished on its own is not ended again
	if n := s.end("alice"); n != 1 || ended["alice"] != 1 || ended["bob"] != 0 {
		t.Fatalf("end(alice) = %d, ended %v", n, ended)
	}
	if n := s.end("alice"); n != 0 {
		t.Fatalf("second end(alice) = %d", n)
	}
}
