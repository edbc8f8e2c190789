// Package targets tells an operator what a target reaches before anything
// is fired: GET /api/targets/preview counts the PCs of a target and how
// many are online, and names the groups and PCs nobody knows (a typo such
// as "canray", or a group no agent has joined yet). The same Preview makes
// http/executions refuse an exec that would reach nobody (400 "target
// matches no PCs") and makes http/schedules warn about a schedule saved
// with such a target, which may legitimately fill later.
//
// A PC is known when it has sent a heartbeat (a row in agents) or belongs
// to a group (KV agent_groups, mirrored in agent_group_members): groups are
// often assigned before the PCs are switched on. `all` counts agents that
// have sent a heartbeat; a group counts its members; a listed PC counts
// when it is known. Online is a heartbeat within storage.AliveWindow, the
// rule every other part of the backend uses.
package targets

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/actors/clock"
	"kanade-backend/http/httpx"
	"kanade-backend/http/server"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

// Preview is what a target reaches now.
type Preview struct {
	// PCs is the number of known PCs the target matches.
	PCs int `json:"pcs"`
	// Online is how many of them sent a heartbeat within the alive window:
	// the PCs an exec fired now would reach (Commands are core NATS; an
	// offline PC never sees them).
	Online int `json:"online"`
	// UnknownGroups are listed groups without a single member.
	UnknownGroups []string `json:"unknown_groups"`
	// UnknownPCs are listed PCs that never sent a heartbeat and belong to
	// no group.
	UnknownPCs []string `json:"unknown_pcs"`
	// all records that the target asked for every agent, for the texts.
	all bool
}

// ReachedTarget is the target a plan publishes to: with rollout waves the
// waves alone say who is reached (one group per wave, upstream semantics,
// as the exec engine publishes them); otherwise the plan's target.
func ReachedTarget(p messages.FanoutPlan) messages.Target {
	if p.Rollout == nil || len(p.Rollout.Waves) == 0 {
		return p.Target
	}
	t := messages.Target{}
	for _, w := range p.Rollout.Waves {
		t.Groups = append(t.Groups, w.Group)
	}
	return t
}

// inChunk bounds the ids of one IN (...) list, as the exec engine does.
const inChunk = 1000

// member is a PC found through a group or a listed pc_id.
type member struct {
	PcID      string `bun:"pc_id"`
	GroupName string `bun:"group_name"`
	// Agent is 1 when the PC has an agents row (it sent a heartbeat).
	Agent  int `bun:"agent"`
	Online int `bun:"online"`
}

// Resolve previews target t at now. Lists are taken as given (ids are
// expected to be validated tokens); duplicates count once.
func Resolve(ctx context.Context, db bun.IDB, t messages.Target, now time.Time) (Preview, error) {
	since := storage.T(now.Add(-storage.AliveWindow))
	p := Preview{UnknownGroups: []string{}, UnknownPCs: []string{}, all: t.All}
	if t.All {
		total, err := db.NewSelect().Model((*storage.Agent)(nil)).Count(ctx)
		if err != nil {
			return Preview{}, fmt.Errorf("count agents: %w", err)
		}
		online, err := db.NewSelect().Model((*storage.Agent)(nil)).Where("last_heartbeat >= ?", since).Count(ctx)
		if err != nil {
			return Preview{}, fmt.Errorf("count online agents: %w", err)
		}
		p.PCs, p.Online = int(total), int(online)
	}
	// extra holds the matched PCs that `all` did not count already: with
	// all, those without an agents row; without it, every one. The value
	// says whether the PC is online.
	extra := map[string]bool{}
	add := func(m member) {
		if t.All && m.Agent == 1 {
			return
		}
		extra[m.PcID] = extra[m.PcID] || m.Online == 1
	}

	groups := dedupe(t.Groups)
	var members []member
	for chunk := range slices.Chunk(groups, inChunk) {
		var rows []member
		err := db.NewSelect().TableExpr("agent_group_members AS m").
			ColumnExpr("m.pc_id, m.group_name").
			ColumnExpr("CASE WHEN a.pc_id IS NULL THEN 0 ELSE 1 END AS agent").
			ColumnExpr("CASE WHEN a.last_heartbeat >= ? THEN 1 ELSE 0 END AS online", since).
			Join("LEFT JOIN agents AS a ON a.pc_id = m.pc_id").
			Where("m.group_name IN (?)", bun.List(chunk)).
			Scan(ctx, &rows)
		if err != nil {
			return Preview{}, fmt.Errorf("members of groups %v: %w", chunk, err)
		}
		members = append(members, rows...)
	}
	withMembers := map[string]bool{}
	for _, m := range members {
		withMembers[m.GroupName] = true
		add(m)
	}
	for _, g := range groups {
		if !withMembers[g] {
			p.UnknownGroups = append(p.UnknownGroups, g)
		}
	}

	pcs := dedupe(t.Pcs)
	known := map[string]bool{}
	for chunk := range slices.Chunk(pcs, inChunk) {
		var agents []member
		err := db.NewSelect().Model((*storage.Agent)(nil)).
			ColumnExpr("pc_id, 1 AS agent").
			ColumnExpr("CASE WHEN last_heartbeat >= ? THEN 1 ELSE 0 END AS online", since).
			Where("pc_id IN (?)", bun.List(chunk)).
			Scan(ctx, &agents)
		if err != nil {
			return Preview{}, fmt.Errorf("listed agents: %w", err)
		}
		var grouped []string
		err = db.NewSelect().Model((*storage.GroupMember)(nil)).ColumnExpr("DISTINCT pc_id").
			Where("pc_id IN (?)", bun.List(chunk)).Scan(ctx, &grouped)
		if err != nil {
			return Preview{}, fmt.Errorf("listed PCs in groups: %w", err)
		}
		for _, a := range agents {
			known[a.PcID] = true
			add(a)
		}
		for _, pc := range grouped {
			if !known[pc] {
				known[pc] = true
				add(member{PcID: pc})
			}
		}
	}
	for _, pc := range pcs {
		if !known[pc] {
			p.UnknownPCs = append(p.UnknownPCs, pc)
		}
	}

	p.PCs += len(extra)
	for _, online := range extra {
		if online {
			p.Online++
		}
	}
	return p, nil
}

// Matches reports whether target t matches at least one known PC: the
// question an exec asks before it fires. It stops at the first PC found,
// so an exec to 10 000 listed PCs pays one indexed lookup, not a full
// preview (BenchmarkResolve); Resolve then explains a refusal.
func Matches(ctx context.Context, db bun.IDB, t messages.Target) (bool, error) {
	exists := func(q *bun.SelectQuery, what string) (bool, error) {
		ok, err := q.Exists(ctx)
		if err != nil {
			return false, fmt.Errorf("look up %s: %w", what, err)
		}
		return ok, nil
	}
	if t.All {
		if ok, err := exists(db.NewSelect().Model((*storage.Agent)(nil)), "agents"); ok || err != nil {
			return ok, err
		}
	}
	for chunk := range slices.Chunk(t.Groups, inChunk) {
		q := db.NewSelect().Model((*storage.GroupMember)(nil)).Where("group_name IN (?)", bun.List(chunk))
		if ok, err := exists(q, "group members"); ok || err != nil {
			return ok, err
		}
	}
	for chunk := range slices.Chunk(t.Pcs, inChunk) {
		q := db.NewSelect().Model((*storage.Agent)(nil)).Where("pc_id IN (?)", bun.List(chunk))
		if ok, err := exists(q, "listed agents"); ok || err != nil {
			return ok, err
		}
		q = db.NewSelect().Model((*storage.GroupMember)(nil)).Where("pc_id IN (?)", bun.List(chunk))
		if ok, err := exists(q, "listed PCs in groups"); ok || err != nil {
			return ok, err
		}
	}
	return false, nil
}

func dedupe(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// Empty reports whether the target matches no known PC.
func (p Preview) Empty() bool { return p.PCs == 0 }

// ErrNoPCs is the text of the refusal of an exec whose target matches no
// PC; Refusal adds what was not found.
const ErrNoPCs = "target matches no PCs"

// Refusal is the 400 message for an empty target: ErrNoPCs, then what the
// operator can act on (the unknown names, or that no agent has reported).
func (p Preview) Refusal() string {
	if d := p.unknown(); d != "" {
		return ErrNoPCs + " (" + d + ")"
	}
	if p.all {
		return ErrNoPCs + " (no agent has sent a heartbeat yet)"
	}
	return ErrNoPCs
}

// Warning says what an operator should know before firing at this target,
// "" when nothing: that it matches no PC, names nobody knows, or that none
// of its PCs is online.
func (p Preview) Warning() string {
	if p.Empty() {
		return p.Refusal()
	}
	var parts []string
	if d := p.unknown(); d != "" {
		parts = append(parts, d)
	}
	if p.Online == 0 {
		parts = append(parts, "none of them is online now")
	}
	if len(parts) == 0 {
		return ""
	}
	return fmt.Sprintf("target reaches %d %s (%d online); %s", p.PCs, plural(p.PCs, "PC"), p.Online, strings.Join(parts, "; "))
}

func (p Preview) unknown() string {
	var parts []string
	if len(p.UnknownGroups) > 0 {
		parts = append(parts, "unknown "+plural(len(p.UnknownGroups), "group")+" "+quoted(p.UnknownGroups)+" (no PC is a member)")
	}
	if len(p.UnknownPCs) > 0 {
		parts = append(parts, "unknown "+plural(len(p.UnknownPCs), "PC")+" "+quoted(p.UnknownPCs)+" (no heartbeat, no group)")
	}
	return strings.Join(parts, "; ")
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// quoted lists names as 'a', 'b', … keeping a long list short.
func quoted(names []string) string {
	const show = 10
	var b strings.Builder
	for i, n := range names {
		if i == show {
			fmt.Fprintf(&b, " and %d more", len(names)-show)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("'" + n + "'")
	}
	return b.String()
}

// Deps is what the preview route needs.
type Deps struct {
	DB    bun.IDB
	Clock clock.Clock
}

// Register adds GET /api/targets/preview.
func Register(r *server.Router, d Deps) {
	if d.Clock == nil {
		d.Clock = clock.Real{}
	}
	r.API("GET /api/targets/preview", func(w http.ResponseWriter, r *http.Request) error {
		t, err := parseTarget(r)
		if err != nil {
			return err
		}
		p, err := Resolve(r.Context(), d.DB, t, d.Clock.Now())
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, p)
		return nil
	})
}

// parseTarget reads ?all=&groups=&pcs=. A list may be repeated or
// comma-separated (groups=a,b and groups=a&groups=b are the same); every
// name must be a valid subject token, as in an exec.
func parseTarget(r *http.Request) (messages.Target, error) {
	q := r.URL.Query()
	var t messages.Target
	if s := q.Get("all"); s != "" {
		v, err := strconv.ParseBool(s)
		if err != nil {
			return t, messages.Invalidf("invalid all %q: must be true or false", s)
		}
		t.All = v
	}
	list := func(name, what string) ([]string, error) {
		var out []string
		for _, v := range q[name] {
			for _, id := range strings.Split(v, ",") {
				if id = strings.TrimSpace(id); id == "" {
					continue
				}
				if err := messages.ValidateToken(what, id); err != nil {
					return nil, err
				}
				out = append(out, id)
			}
		}
		return out, nil
	}
	var err error
	if t.Groups, err = list("groups", "group"); err != nil {
		return t, err
	}
	if t.Pcs, err = list("pcs", "pc_id"); err != nil {
		return t, err
	}
	return t, nil
}
