// Package operators serves the operators API: admins give every person
// their own token with a role (viewer, operator, admin), change the role,
// replace the token, and revoke it; everyone may ask who they are
// (GET /api/me). A token is shown once, in the answer that makes it, and
// the server keeps only its hash, so a lost token is replaced, never
// recovered. Changes are audited with the acting operator's name as `sub`
// and take effect on the next request, because http/auth looks every
// operator token up in this package's Store instead of caching it; a
// revoked or replaced token's open event streams are ended too.
package operators

import (
	"log/slog"
	"net/http"

	"kanade-backend/http/auth"
	"kanade-backend/http/httpx"
	"kanade-backend/http/internal/opaudit"
	"kanade-backend/http/server"
	"kanade-backend/messages"
)

// maxNameLen bounds an operator's name: it is someone's handle, shown in
// every audit row and the dashboard's header.
const maxNameLen = 64

// Sessions ends an operator's open event streams (auth.Authenticator).
type Sessions interface {
	EndSessions(name string) int
}

// Deps is what the routes need.
type Deps struct {
	Store *Store
	Audit opaudit.Publisher
	// Sessions, if set, ends the streams of a revoked or replaced token.
	Sessions Sessions
	// Mode is the API's authentication mode, reported by GET /api/me.
	Mode auth.Mode
	// GuardLastAdmin refuses to revoke or demote the last active admin
	// operator. The application sets it in generated-token mode, where
	// operators are the only admins; with a static token or JWTs there is
	// an admin outside the table, and revoking a departed person's access
	// must never wait for someone to be promoted first.
	GuardLastAdmin bool
	Logger         *slog.Logger
}

type handlers struct{ Deps }

// Register adds the routes.
func Register(r *server.Router, d Deps) {
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	h := &handlers{d}
	r.API("GET /api/me", h.me)
	r.API("GET /api/operators", h.list)
	r.API("POST /api/operators", h.create)
	r.API("PATCH /api/operators/{name}", h.patch)
	r.API("DELETE /api/operators/{name}", h.revoke)
	r.API("POST /api/operators/{name}/token", h.token)
}

// Me is GET /api/me: who the caller is and what each route requires, so
// the dashboard shows only what the caller may do and says why the rest
// is disabled, from the same table the server enforces.
type Me struct {
	Name   string               `json:"name"`
	Role   auth.Role            `json:"role"`
	Mode   auth.Mode            `json:"mode"`
	Roles  []auth.Role          `json:"roles"`
	Routes map[string]auth.Role `json:"routes"`
}

func (h *handlers) me(w http.ResponseWriter, r *http.Request) error {
	p, _ := auth.PrincipalFrom(r.Context())
	httpx.WriteJSON(w, http.StatusOK, Me{Name: p.Subject, Role: p.Role, Mode: h.Mode, Roles: auth.Roles(), Routes: auth.RouteRoles()})
	return nil
}

func (h *handlers) list(w http.ResponseWriter, r *http.Request) error {
	p, err := httpx.ParsePage(r)
	if err != nil {
		return err
	}
	ops, total, err := h.Store.List(r.Context(), p.Limit, p.Offset)
	if err != nil {
		return err
	}
	httpx.WriteList(w, ops, total)
	return nil
}

// Issued is the answer that carries a token: the only time it is shown.
type Issued struct {
	Operator
	Token string `json:"token"`
}

// writeIssued answers with a new token. no-store keeps it out of browser
// and proxy caches: it must exist only where the admin copies it to.
func writeIssued(w http.ResponseWriter, status int, o Operator, tok string) {
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, status, Issued{Operator: o, Token: tok})
}

type createBody struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

func (h *handlers) create(w http.ResponseWriter, r *http.Request) error {
	var b createBody
	if err := httpx.DecodeJSON(w, r, &b); err != nil {
		return err
	}
	if err := validName(b.Name); err != nil {
		return err
	}
	role, err := parseRole(b.Role)
	if err != nil {
		return err
	}
	o, tok, err := h.Store.Create(r.Context(), b.Name, role, auth.Subject(r.Context()))
	if err != nil {
		return err
	}
	h.record(r, messages.ActionOperatorCreate, o.Name, map[string]any{"role": string(o.Role)})
	writeIssued(w, http.StatusCreated, o, tok)
	return nil
}

type patchBody struct {
	Role *string `json:"role"`
}

func (h *handlers) patch(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	var b patchBody
	if err := httpx.DecodeJSON(w, r, &b); err != nil {
		return err
	}
	if b.Role == nil {
		return messages.Invalidf("nothing to change: the body must set role")
	}
	role, err := parseRole(*b.Role)
	if err != nil {
		return err
	}
	before, after, _, err := h.Store.Update(r.Context(), name, Change{Role: role}, auth.Subject(r.Context()), h.GuardLastAdmin)
	if err != nil {
		return err
	}
	if before.Role != after.Role {
		h.record(r, messages.ActionOperatorRole, name, map[string]any{"role": string(after.Role), "previous_role": string(before.Role)})
	}
	httpx.WriteJSON(w, http.StatusOK, after)
	return nil
}

func (h *handlers) revoke(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	before, after, _, err := h.Store.Update(r.Context(), name, Change{Revoke: true}, auth.Subject(r.Context()), h.GuardLastAdmin)
	if err != nil {
		return err
	}
	if !before.Revoked() {
		h.endSessions(name)
		h.record(r, messages.ActionOperatorRevoke, name, map[string]any{"role": string(after.Role)})
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *handlers) token(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	if _, err := httpx.ReadBody(w, r, httpx.MaxBodyBytes); err != nil {
		return err
	}
	_, after, tok, err := h.Store.Update(r.Context(), name, Change{NewToken: true}, auth.Subject(r.Context()), h.GuardLastAdmin)
	if err != nil {
		return err
	}
	h.endSessions(name)
	h.record(r, messages.ActionOperatorToken, name, map[string]any{"role": string(after.Role)})
	writeIssued(w, http.StatusOK, after, tok)
	return nil
}

func (h *handlers) endSessions(name string) {
	if h.Sessions != nil {
		h.Sessions.EndSessions(name)
	}
}

func (h *handlers) record(r *http.Request, action, target string, payload map[string]any) {
	opaudit.Record(r.Context(), h.Audit, h.Logger, action, target, payload)
}

// validName applies the id rules of every other name in the API (a subject
// token: [A-Za-z0-9_=-]), so a name is safe in paths, audit subjects and
// logs, within a handle's length.
func validName(name string) error {
	if err := messages.ValidateToken("operator name", name); err != nil {
		return err
	}
	if len(name) > maxNameLen {
		return messages.Invalidf("invalid operator name %q: longer than %d bytes", name[:16]+"...", maxNameLen)
	}
	return nil
}

func pathName(r *http.Request) (string, error) {
	name := r.PathValue("name")
	return name, validName(name)
}

func parseRole(s string) (auth.Role, error) {
	role, err := auth.ParseRole(s)
	if err != nil {
		return "", messages.Invalidf("invalid role: %v", err)
	}
	return role, nil
}
