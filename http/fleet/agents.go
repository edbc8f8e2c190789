package fleet

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"

	"kanade-backend/http/httpx"
	"kanade-backend/http/internal/fleetkv"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

// AgentRow is one agent as the API lists it: the agents row plus whether
// the PC is online (heartbeat within storage.AliveWindow).
type AgentRow struct {
	PcID          string       `json:"pc_id"`
	Hostname      *string      `json:"hostname"`
	OsFamily      *string      `json:"os_family"`
	AgentVersion  string       `json:"agent_version"`
	LastHeartbeat storage.Time `json:"last_heartbeat"`
	UpdatedAt     storage.Time `json:"updated_at"`
	Online        bool         `json:"online"`
}

// AgentDetail is GET /api/agents/{pc_id}: the row, the PC's groups and the
// configuration it resolves to.
type AgentDetail struct {
	AgentRow
	Groups          []string                 `json:"groups"`
	EffectiveConfig messages.EffectiveConfig `json:"effective_config"`
	Warnings        []string                 `json:"warnings"`
}

func toRow(a storage.Agent, since time.Time) AgentRow {
	return AgentRow{
		PcID:          a.PcID,
		Hostname:      a.Hostname,
		OsFamily:      a.OsFamily,
		AgentVersion:  a.AgentVersion,
		LastHeartbeat: a.LastHeartbeat,
		UpdatedAt:     a.UpdatedAt,
		Online:        !a.LastHeartbeat.Before(since),
	}
}

// agentFilter is the parsed query of GET /api/agents.
type agentFilter struct {
	// q is a case-insensitive substring of pc_id or hostname.
	q      string
	online *bool
	since  time.Time
}

func parseAgentFilter(r *http.Request, now time.Time) (agentFilter, error) {
	qs := r.URL.Query()
	q, err := httpx.QueryText(r, "q")
	if err != nil {
		return agentFilter{}, err
	}
	f := agentFilter{q: strings.TrimSpace(q), since: now.Add(-storage.AliveWindow)}
	if s := qs.Get("online"); s != "" {
		v, err := strconv.ParseBool(s)
		if err != nil {
			return f, messages.Invalidf("invalid online %q: must be true or false", s)
		}
		f.online = &v
	}
	return f, nil
}

// apply adds the filter's conditions to q. The substring match is a
// case-insensitive LIKE: SQLite's LIKE already ignores ASCII case, and
// Postgres gets ILIKE. (LOWER() on both columns, the portable spelling,
// costs twice as much per row in the pure-Go SQLite, see
// docs/benchmarks.md.) '!' escapes the LIKE wildcards so that "pc_1"
// matches literally.
//
// A q of three characters or more is served by a trigram index instead of
// a scan of every agent: PostgreSQL's planner uses the pg_trgm indexes for
// the ILIKE itself; on SQLite the FTS5 trigram table agents_search first
// narrows the rows to those holding q (a phrase of q's trigrams, case
// folded: a superset of the LIKE's matches), and the LIKE decides, so the
// results are the LIKE's alone.
func (f agentFilter) apply(q *bun.SelectQuery) *bun.SelectQuery {
	if f.q != "" {
		like := "LIKE"
		if q.Dialect().Name() == dialect.PG {
			like = "ILIKE"
		} else if utf8.RuneCountInString(f.q) >= trigram {
			q = q.Where("rowid IN (SELECT rowid FROM agents_search WHERE agents_search MATCH ?)", ftsPhrase(f.q))
		}
		pat := "%" + escapeLike(f.q) + "%"
		q = q.Where("(pc_id "+like+" ? ESCAPE '!' OR hostname "+like+" ? ESCAPE '!')", pat, pat)
	}
	if f.online != nil {
		if *f.online {
			q = q.Where("last_heartbeat >= ?", storage.T(f.since))
		} else {
			q = q.Where("last_heartbeat < ?", storage.T(f.since))
		}
	}
	return q
}

// trigram is the shortest q the trigram index can serve.
const trigram = 3

// ftsPhrase quotes s as one FTS5 phrase: every character is literal.
func ftsPhrase(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

func escapeLike(s string) string {
	return strings.NewReplacer("!", "!!", "%", "!%", "_", "!_").Replace(s)
}

// listAgents returns one page of agents ordered by pc_id and the number of
// agents matching the filter. The page is read first: when it is the last
// one (fewer rows than the limit) it already tells the total, and a
// selective search, which scans the whole table once for the page, does
// not scan it a second time to count.
//
// A page that starts after a pc_id (keyset pagination, ?after=) is found
// through the primary key and costs the same at any depth. An OFFSET page
// walks every matching agent it skips; it walks pc_ids only (an index:
// agents_alive_by_pc holds last_heartbeat for the online filter) and
// reads the rows of its own page alone, rather than a table row per
// skipped agent. It still grows with the offset (docs/benchmarks.md).
func listAgents(ctx context.Context, db bun.IDB, f agentFilter, p httpx.Page, after string) ([]storage.Agent, int, error) {
	var agents []storage.Agent
	q := db.NewSelect().Model(&agents)
	switch {
	case after != "":
		q = f.apply(q).Where("pc_id > ?", after).Limit(int64(p.Limit))
	case p.Offset > 0:
		ids := f.apply(db.NewSelect().Model((*storage.Agent)(nil)).Column("pc_id")).
			Order("pc_id").Limit(int64(p.Limit)).Offset(int64(p.Offset))
		q = q.Where("pc_id IN (?)", ids)
	default:
		q = f.apply(q).Limit(int64(p.Limit))
	}
	err := q.Order("pc_id").Scan(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("list agents: %w", err)
	}
	if after == "" && len(agents) < p.Limit && (len(agents) > 0 || p.Offset == 0) {
		return agents, p.Offset + len(agents), nil
	}
	total, err := f.apply(db.NewSelect().Model((*storage.Agent)(nil))).Count(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("count agents: %w", err)
	}
	return agents, int(total), nil
}

// listAgents answers every matching agent unless limit or offset is given,
// as upstream did (a script listing its fleet must not silently get the
// first page only); the dashboard asks for pages explicitly.
func (h *handlers) listAgents(w http.ResponseWriter, r *http.Request) error {
	page, paged, err := httpx.ParseOptionalPage(r)
	if err != nil {
		return err
	}
	after, err := parseAfter(r)
	if err != nil {
		return err
	}
	if after != "" {
		if page.Offset > 0 {
			return messages.Invalidf("after and offset cannot be combined: after already says where the page starts")
		}
		if !paged {
			page, paged = httpx.Page{Limit: httpx.DefaultLimit}, true
		}
	}
	f, err := parseAgentFilter(r, h.clock.Now())
	if err != nil {
		return err
	}
	var agents []storage.Agent
	var total int
	if paged {
		agents, total, err = listAgents(r.Context(), h.db, f, page, after)
	} else {
		err = f.apply(h.db.NewSelect().Model(&agents)).Order("pc_id").Scan(r.Context())
		if err != nil {
			err = fmt.Errorf("list agents: %w", err)
		}
		total = len(agents)
	}
	if err != nil {
		return err
	}
	rows := make([]AgentRow, len(agents))
	for i, a := range agents {
		rows[i] = toRow(a, f.since)
	}
	httpx.WriteList(w, rows, total)
	return nil
}

// parseAfter reads the keyset cursor of GET /api/agents: the pc_id of the
// last agent of the previous page ("" when absent).
func parseAfter(r *http.Request) (string, error) {
	after := r.URL.Query().Get("after")
	if after == "" {
		return "", nil
	}
	if err := messages.ValidateToken("after", after); err != nil {
		return "", messages.Invalidf("invalid after %q: must be the pc_id of the last agent of the previous page", after)
	}
	return after, nil
}

// pathPC returns the validated {pc_id} path value.
func pathPC(r *http.Request) (string, error) {
	id := r.PathValue("pc_id")
	if err := messages.ValidateToken("pc_id", id); err != nil {
		return "", err
	}
	return id, nil
}

func (h *handlers) getAgent(w http.ResponseWriter, r *http.Request) error {
	pcID, err := pathPC(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	var a storage.Agent
	err = h.db.NewSelect().Model(&a).Where("pc_id = ?", pcID).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return messages.NotFoundf("agent '%s' not found", pcID)
	}
	if err != nil {
		return fmt.Errorf("read agent %s: %w", pcID, err)
	}
	groups, eff, warnings, err := h.resolve(ctx, pcID)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, AgentDetail{
		AgentRow:        toRow(a, h.clock.Now().Add(-storage.AliveWindow)),
		Groups:          groups,
		EffectiveConfig: eff,
		Warnings:        warnings,
	})
	return nil
}

// EffectiveConfigResponse is GET /api/agents/{pc_id}/effective_config.
type EffectiveConfigResponse struct {
	PcID      string                   `json:"pc_id"`
	Effective messages.EffectiveConfig `json:"effective"`
	Warnings  []string                 `json:"warnings"`
	// Groups are the PC's groups as the resolution saw them, so "which
	// group layers applied?" needs no second request.
	Groups []string `json:"groups"`
}

func (h *handlers) effectiveConfig(w http.ResponseWriter, r *http.Request) error {
	pcID, err := pathPC(r)
	if err != nil {
		return err
	}
	groups, eff, warnings, err := h.resolve(r.Context(), pcID)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, EffectiveConfigResponse{PcID: pcID, Effective: eff, Warnings: warnings, Groups: groups})
	return nil
}

// resolve reads the PC's groups and resolves its configuration, both from
// KV (the values agents themselves resolve from). It works for a PC that
// never sent a heartbeat: groups and scopes may be prepared in advance.
func (h *handlers) resolve(ctx context.Context, pcID string) ([]string, messages.EffectiveConfig, []string, error) {
	gkv, err := h.groups.Open(ctx)
	if err != nil {
		return nil, messages.EffectiveConfig{}, nil, err
	}
	ckv, err := h.config.Open(ctx)
	if err != nil {
		return nil, messages.EffectiveConfig{}, nil, err
	}
	groups, _, err := fleetkv.ReadGroups(ctx, gkv, pcID)
	if err != nil {
		return nil, messages.EffectiveConfig{}, nil, err
	}
	eff, warnings, err := fleetkv.Effective(ctx, ckv, pcID, groups)
	if err != nil {
		return nil, messages.EffectiveConfig{}, nil, err
	}
	return groups, eff, warnings, nil
}
