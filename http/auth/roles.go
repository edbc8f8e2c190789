package auth

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"kanade-backend/http/httpx"
)

// Role is what a principal may do. Roles are ordered: each includes
// everything the roles below it may do.
type Role string

// The three roles, lowest first.
const (
	// RoleViewer reads: every read route and the live event stream.
	RoleViewer Role = "viewer"
	// RoleOperator runs the fleet: viewer plus jobs, exec, kill, cancel,
	// re-run, schedules, groups, config, run, ping.
	RoleOperator Role = "operator"
	// RoleAdmin administers the install: everything, including agent
	// releases and rollout, credentials, operators and script revocation.
	RoleAdmin Role = "admin"
)

// Roles lists every role, lowest first.
func Roles() []Role { return []Role{RoleViewer, RoleOperator, RoleAdmin} }

// rank orders roles; 0 is "no role", which allows nothing.
func (r Role) rank() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleOperator:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// Valid reports whether r is one of the three roles.
func (r Role) Valid() bool { return r.rank() > 0 }

// Allows reports whether a principal with role r may use a route that
// requires need. An unknown role allows nothing, and nothing allows an
// unknown requirement, so a typo fails closed.
func (r Role) Allows(need Role) bool {
	return r.Valid() && need.Valid() && r.rank() >= need.rank()
}

// ParseRole reads a role name (case-insensitive, surrounding space ignored).
func ParseRole(s string) (Role, error) {
	r := Role(strings.ToLower(strings.TrimSpace(s)))
	if !r.Valid() {
		return "", fmt.Errorf("unknown role %q: want viewer, operator or admin", s)
	}
	return r, nil
}

// ForbiddenMessage is the 403 body's text for a route that requires need.
func ForbiddenMessage(need Role) string { return "forbidden: requires role " + string(need) }

// Require wraps next so that only principals whose role allows need reach
// it; everyone else gets 403 `{"error": "forbidden: requires role <need>"}`.
// A request without a principal (one that never passed the middleware) is
// refused too.
func Require(need Role, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := PrincipalFrom(r.Context())
		if !p.Role.Allows(need) {
			// Debug, like the 401s: a viewer's dashboard probing what it may
			// do is routine. The principal's name is not a secret.
			slog.Default().DebugContext(r.Context(), "API request forbidden",
				"method", r.Method, "path", r.URL.Path, "sub", p.Subject, "role", string(p.Role), "requires", string(need))
			httpx.WriteJSON(w, http.StatusForbidden, httpx.ErrorBody{Error: ForbiddenMessage(need)})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Guard wraps the handler of an /api route pattern with the role the route
// table requires (server.Options.Guard). A pattern the table does not list
// is refused to everyone: a route added without a role fails closed. The
// application also refuses to start with such a route (MissingRoles), so
// this is the second line.
func Guard(pattern string, next http.Handler) http.Handler {
	need, ok := RouteRole(pattern)
	if !ok {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			httpx.WriteJSON(w, http.StatusForbidden, httpx.ErrorBody{Error: "forbidden: route " + pattern + " has no role"})
		})
	}
	return Require(need, next)
}

// MissingRoles returns an error naming the /api patterns among patterns
// that the route table does not list; nil when every one has a role.
// Patterns outside /api (public routes) need none.
func MissingRoles(patterns []string) error {
	var missing []string
	for _, p := range patterns {
		if !strings.Contains(p, " /api/") {
			continue
		}
		if _, ok := RouteRole(p); !ok {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("auth: routes without a role (add each to the route table in http/auth/routes.go): %s",
		strings.Join(missing, ", "))
}
