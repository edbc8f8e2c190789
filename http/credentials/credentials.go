// Package credentials serves the agent credentials API (admins only): a
// NATS token per PC, minted one at a time or in bulk for kitting (a CSV of
// pc_id,token), listed without secrets, and revoked, which also ends the
// PC's live connection; and enrollment tokens for PCs not known yet, which
// become the credential of the PC whose agent presents one first
// (storage/agentauth). A token is shown once, in the answer that makes it;
// the server keeps only its hash. Every change is audited.
package credentials

import (
	"context"
	"encoding/csv"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"kanade-backend/http/auth"
	"kanade-backend/http/httpx"
	"kanade-backend/http/internal/fleetkv"
	"kanade-backend/http/internal/opaudit"
	"kanade-backend/http/server"
	"kanade-backend/messages"
	"kanade-backend/messages/humantime"
	"kanade-backend/storage/agentauth"
)

// Limits of one request.
const (
	// MaxBulk is the most PCs one kitting request mints for.
	MaxBulk = 10000
	// MaxEnrollments is the most enrollment tokens one request makes.
	MaxEnrollments = 1000
	// DefaultEnrollmentTTL is how long an enrollment token waits for its PC.
	DefaultEnrollmentTTL = 7 * 24 * time.Hour
	// MaxEnrollmentTTL bounds it: a kitting secret should not live forever.
	MaxEnrollmentTTL = 90 * 24 * time.Hour
)

// Kicker ends live connections (agentauth.Service); nil when NATS does not
// enforce agent credentials (an external server without the callout).
type Kicker interface {
	Revoked(ctx context.Context, pcID string) (int, error)
	EnrollmentRevoked(ctx context.Context, id string) (int, error)
}

// Deps is what the routes need.
type Deps struct {
	Store  *agentauth.Store
	Kicker Kicker
	Audit  opaudit.Publisher
	Logger *slog.Logger
}

type handlers struct{ Deps }

// Register adds the routes.
func Register(r *server.Router, d Deps) {
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	h := &handlers{d}
	r.API("GET /api/agents/{pc_id}/credentials", h.list)
	r.API("POST /api/agents/{pc_id}/credentials", h.mint)
	// DELETE …/credentials (every credential of the PC) would collide with
	// DELETE /api/agents/releases/{version} in the mux, hence the id "all".
	r.API("DELETE /api/agents/{pc_id}/credentials/{id}", h.revoke)
	r.API("POST /api/agents/credentials", h.bulk)
	r.API("GET /api/enrollments", h.listEnrollments)
	r.API("POST /api/enrollments", h.createEnrollments)
	r.API("DELETE /api/enrollments/{id}", h.revokeEnrollment)
}

func pathPC(r *http.Request) (string, error) {
	pc := r.PathValue("pc_id")
	return pc, messages.ValidateToken("pc_id", pc)
}

func pathID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	return id, messages.ValidateToken("credential id", id)
}

func (h *handlers) list(w http.ResponseWriter, r *http.Request) error {
	pc, err := pathPC(r)
	if err != nil {
		return err
	}
	p, err := httpx.ParsePage(r)
	if err != nil {
		return err
	}
	cs, total, err := h.Store.ListPC(r.Context(), pc, p.Limit, p.Offset)
	if err != nil {
		return err
	}
	httpx.WriteList(w, cs, total)
	return nil
}

// noStore keeps an answer carrying tokens out of browser and proxy caches:
// a token must exist only where the admin puts it.
func noStore(w http.ResponseWriter) { w.Header().Set("Cache-Control", "no-store") }

func (h *handlers) mint(w http.ResponseWriter, r *http.Request) error {
	pc, err := pathPC(r)
	if err != nil {
		return err
	}
	if _, err := httpx.ReadBody(w, r, httpx.MaxBodyBytes); err != nil {
		return err
	}
	is, err := h.Store.MintPC(r.Context(), []string{pc}, auth.Subject(r.Context()))
	if err != nil {
		return err
	}
	h.record(r, messages.ActionCredentialCreate, pc, map[string]any{"credential": is[0].ID})
	noStore(w)
	httpx.WriteJSON(w, http.StatusCreated, is[0])
	return nil
}

// Revocation is the answer of a revocation: what was revoked and how many
// live connections were ended because of it.
type Revocation struct {
	Revoked []agentauth.Credential `json:"revoked"`
	// Disconnected counts the connections closed at once (0 where NATS does
	// not enforce agent credentials).
	Disconnected int `json:"disconnected"`
}

// AllCredentials is the {id} that revokes every credential of a PC.
const AllCredentials = "all"

func (h *handlers) revoke(w http.ResponseWriter, r *http.Request) error {
	if r.PathValue("id") == AllCredentials {
		return h.revokeAll(w, r)
	}
	return h.revokeOne(w, r)
}

func (h *handlers) revokeAll(w http.ResponseWriter, r *http.Request) error {
	pc, err := pathPC(r)
	if err != nil {
		return err
	}
	revoked, err := h.Store.RevokePC(r.Context(), pc, auth.Subject(r.Context()))
	if err != nil {
		return err
	}
	ids := make([]string, len(revoked))
	for i, c := range revoked {
		ids[i] = c.ID
	}
	if len(revoked) > 0 {
		h.record(r, messages.ActionCredentialRevoke, pc, map[string]any{"credentials": ids})
	}
	httpx.WriteJSON(w, http.StatusOK, Revocation{Revoked: nonNil(revoked), Disconnected: h.kickPC(r.Context(), pc)})
	return nil
}

func (h *handlers) revokeOne(w http.ResponseWriter, r *http.Request) error {
	pc, err := pathPC(r)
	if err != nil {
		return err
	}
	id, err := pathID(r)
	if err != nil {
		return err
	}
	before, err := h.Store.Revoke(r.Context(), id, agentauth.Match{PcID: pc}, auth.Subject(r.Context()))
	if err != nil {
		return err
	}
	out := Revocation{Revoked: []agentauth.Credential{}}
	if before.RevokedAt.IsZero() {
		h.record(r, messages.ActionCredentialRevoke, pc, map[string]any{"credentials": []string{id}})
		after, err := h.Store.Get(r.Context(), id)
		if err != nil {
			return err
		}
		out.Revoked = append(out.Revoked, after)
		// The PC's connections on its other credentials come straight back.
		out.Disconnected = h.kickPC(r.Context(), pc)
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

// kickPC ends pcID's connections. The revocation is already committed, so
// a failure here is logged, not answered: the connections then end at the
// second sweep or whenever they reconnect.
func (h *handlers) kickPC(ctx context.Context, pc string) int {
	if h.Kicker == nil {
		return 0
	}
	n, err := h.Kicker.Revoked(ctx, pc)
	if err != nil {
		h.Logger.Error("revoked credentials; ending the PC's connections failed", "pc_id", pc, "err", err)
	}
	return n
}

type bulkBody struct {
	PcIDs []string `json:"pc_ids"`
}

// bulk mints one credential per pc_id and answers the CSV a kitting
// script reads: a header line pc_id,token then one line per PC.
func (h *handlers) bulk(w http.ResponseWriter, r *http.Request) error {
	var b bulkBody
	if err := httpx.DecodeJSON(w, r, &b); err != nil {
		return err
	}
	switch {
	case len(b.PcIDs) == 0:
		return messages.Invalidf("pc_ids must list at least one pc_id")
	case len(b.PcIDs) > MaxBulk:
		return messages.Invalidf("pc_ids lists %d PCs; at most %d per request", len(b.PcIDs), MaxBulk)
	}
	seen := make(map[string]bool, len(b.PcIDs))
	for _, pc := range b.PcIDs {
		if err := messages.ValidateToken("pc_id", pc); err != nil {
			return err
		}
		if seen[pc] {
			return messages.Invalidf("pc_id %q is listed twice", pc)
		}
		seen[pc] = true
	}
	is, err := h.Store.MintPC(r.Context(), b.PcIDs, auth.Subject(r.Context()))
	if err != nil {
		return err
	}
	h.record(r, messages.ActionCredentialCreate, "", map[string]any{"pc_ids": b.PcIDs, "count": len(b.PcIDs)})
	noStore(w)
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="kanade-credentials.csv"`)
	w.WriteHeader(http.StatusCreated)
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"pc_id", "token"})
	for _, c := range is {
		_ = cw.Write([]string{*c.PcID, c.Token})
	}
	cw.Flush()
	return nil
}

func (h *handlers) listEnrollments(w http.ResponseWriter, r *http.Request) error {
	p, err := httpx.ParsePage(r)
	if err != nil {
		return err
	}
	cs, total, err := h.Store.ListEnrollments(r.Context(), p.Limit, p.Offset)
	if err != nil {
		return err
	}
	httpx.WriteList(w, cs, total)
	return nil
}

type enrollBody struct {
	Count     *int     `json:"count"`
	Groups    []string `json:"groups"`
	ExpiresIn string   `json:"expires_in"`
}

// Enrollments is the answer that carries new enrollment tokens.
type Enrollments struct {
	Enrollments []agentauth.Issued `json:"enrollments"`
}

func (h *handlers) createEnrollments(w http.ResponseWriter, r *http.Request) error {
	var b enrollBody
	if err := httpx.DecodeJSON(w, r, &b); err != nil {
		return err
	}
	n := 1
	if b.Count != nil {
		n = *b.Count
	}
	if n < 1 || n > MaxEnrollments {
		return messages.Invalidf("count %d: want 1 to %d", n, MaxEnrollments)
	}
	ttl := DefaultEnrollmentTTL
	if b.ExpiresIn != "" {
		d, err := humantime.Parse(b.ExpiresIn)
		if err != nil {
			return messages.Invalidf("invalid expires_in: %v", err)
		}
		ttl = d
	}
	if ttl <= 0 || ttl > MaxEnrollmentTTL {
		return messages.Invalidf("expires_in %s: want more than 0s and at most %dd", b.ExpiresIn, MaxEnrollmentTTL/(24*time.Hour))
	}
	for _, g := range b.Groups {
		if err := messages.ValidateToken("group", g); err != nil {
			return err
		}
	}
	groups := messages.NormalizeGroups(b.Groups)
	is, err := h.Store.CreateEnrollments(r.Context(), n, groups, h.Store.Now().Add(ttl), auth.Subject(r.Context()))
	if err != nil {
		return err
	}
	ids := make([]string, len(is))
	for i, c := range is {
		ids[i] = c.ID
	}
	h.record(r, messages.ActionEnrollmentCreate, "", map[string]any{
		"enrollments": ids, "groups": groups, "expires_at": is[0].ExpiresAt.UTC().Format(time.RFC3339),
	})
	noStore(w)
	httpx.WriteJSON(w, http.StatusCreated, Enrollments{Enrollments: is})
	return nil
}

func (h *handlers) revokeEnrollment(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	before, err := h.Store.Revoke(r.Context(), id, agentauth.Match{Kind: agentauth.KindEnrollment}, auth.Subject(r.Context()))
	if err != nil {
		return err
	}
	out := Revocation{Revoked: []agentauth.Credential{}}
	if before.RevokedAt.IsZero() {
		payload := map[string]any{}
		if before.PcID != nil {
			payload["pc_id"] = *before.PcID
		}
		h.record(r, messages.ActionEnrollmentRevoke, id, payload)
		after, err := h.Store.Get(r.Context(), id)
		if err != nil {
			return err
		}
		out.Revoked = append(out.Revoked, after)
		if h.Kicker != nil {
			n, err := h.Kicker.EnrollmentRevoked(r.Context(), id)
			if err != nil {
				h.Logger.Error("revoked an enrollment; ending its connections failed", "enrollment", id, "err", err)
			}
			out.Disconnected = n
			if before.PcID != nil {
				out.Disconnected += h.kickPC(r.Context(), *before.PcID)
			}
		}
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (h *handlers) record(r *http.Request, action, target string, payload map[string]any) {
	opaudit.Record(r.Context(), h.Audit, h.Logger, action, target, payload)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// GroupAdder returns the enroller's way of putting an enrolled PC in its
// token's groups: the same compare-and-set merge the groups API uses.
func GroupAdder(js fleetkv.Opener) agentauth.GroupAdder {
	b := fleetkv.NewBucket(js, messages.BucketAgentGroups)
	return func(ctx context.Context, pcID string, groups []string) error {
		kv, err := b.Open(ctx)
		if err != nil {
			return err
		}
		_, _, err = fleetkv.UpdateGroups(ctx, kv, pcID, func(cur []string) []string {
			return append(slices.Clone(cur), groups...)
		})
		if err != nil {
			return fmt.Errorf("add groups %v to %s: %w", groups, pcID, err)
		}
		return nil
	}
}
