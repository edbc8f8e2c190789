package fleet

import (
	"bytes"
	"context"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/actors/projector/mirror"
	"kanade-backend/http/httpx"
	"kanade-backend/http/internal/fleetkv"
	"kanade-backend/http/internal/opaudit"
	"kanade-backend/messages"
)

// errEmptyGroup is the upstream text for a blank group name.
const errEmptyGroup = "group name must not be empty"

// validGroup trims a group name and checks it is a subject token (it
// becomes commands.group.<g> and the agent_config key groups.<g>).
func validGroup(g string) (string, error) {
	g = strings.TrimSpace(g)
	if g == "" {
		return "", messages.Invalidf(errEmptyGroup)
	}
	if err := messages.ValidateToken("group", g); err != nil {
		return "", err
	}
	return g, nil
}

func writeGroups(w http.ResponseWriter, groups []string) {
	httpx.WriteJSON(w, http.StatusOK, messages.AgentGroups{Groups: groups})
}

func (h *handlers) getGroups(w http.ResponseWriter, r *http.Request) error {
	pcID, err := pathPC(r)
	if err != nil {
		return err
	}
	kv, err := h.groups.Open(r.Context())
	if err != nil {
		return err
	}
	groups, _, err := fleetkv.ReadGroups(r.Context(), kv, pcID)
	if err != nil {
		return err
	}
	writeGroups(w, groups)
	return nil
}

// decodeGroupList reads a PUT body: {"groups": [...]} (a bare array is
// tolerated, like the KV value). A body without the list is refused rather
// than read as "no groups": a typo such as {"group": [...]} must not
// silently remove the PC from every group.
func decodeGroupList(w http.ResponseWriter, r *http.Request) ([]string, error) {
	b, err := httpx.ReadBody(w, r, httpx.MaxBodyBytes)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSpace(b)
	var list *[]string
	if len(b) > 0 && b[0] == '[' {
		var l []string
		if err := httpx.Decode(b, &l); err != nil {
			return nil, err
		}
		list = &l
	} else {
		var body struct {
			Groups *[]string `json:"groups"`
		}
		if err := httpx.Decode(b, &body); err != nil {
			return nil, err
		}
		list = body.Groups
	}
	if list == nil {
		return nil, messages.Invalidf(`body must be {"groups": [...]} (an empty list removes the PC from every group)`)
	}
	out := make([]string, 0, len(*list))
	for _, g := range *list {
		g, err := validGroup(g)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, nil
}

func (h *handlers) putGroups(w http.ResponseWriter, r *http.Request) error {
	pcID, err := pathPC(r)
	if err != nil {
		return err
	}
	want, err := decodeGroupList(w, r)
	if err != nil {
		return err
	}
	groups, err := h.updateGroups(r, pcID, func([]string) []string { return want },
		map[string]any{"op": "replace"})
	if err != nil {
		return err
	}
	writeGroups(w, groups)
	return nil
}

func (h *handlers) addGroup(w http.ResponseWriter, r *http.Request) error {
	pcID, err := pathPC(r)
	if err != nil {
		return err
	}
	var body struct {
		Group string `json:"group"`
	}
	if err := httpx.DecodeJSON(w, r, &body); err != nil {
		return err
	}
	g, err := validGroup(body.Group)
	if err != nil {
		return err
	}
	groups, err := h.updateGroups(r, pcID, func(cur []string) []string { return append(cur, g) },
		map[string]any{"op": "add", "group": g})
	if err != nil {
		return err
	}
	writeGroups(w, groups)
	return nil
}

func (h *handlers) removeGroup(w http.ResponseWriter, r *http.Request) error {
	pcID, err := pathPC(r)
	if err != nil {
		return err
	}
	g := r.PathValue("group")
	if err := messages.ValidateToken("group", g); err != nil {
		return err
	}
	groups, err := h.updateGroups(r, pcID,
		func(cur []string) []string { return slices.DeleteFunc(cur, func(x string) bool { return x == g }) },
		map[string]any{"op": "remove", "group": g})
	if err != nil {
		return err
	}
	writeGroups(w, groups)
	return nil
}

// updateGroups changes the PC's groups with compare-and-set (so parallel
// adds and removes all survive), refreshes the mirror rows and records
// the groups_put audit event. An edit that changes nothing (adding a
// member, removing a non-member) writes nothing and records nothing.
func (h *handlers) updateGroups(r *http.Request, pcID string, mutate func([]string) []string, payload map[string]any) ([]string, error) {
	ctx := r.Context()
	kv, err := h.groups.Open(ctx)
	if err != nil {
		return nil, err
	}
	var before []string
	groups, rev, err := fleetkv.UpdateGroups(ctx, kv, pcID, func(cur []string) []string {
		before = slices.Clone(cur)
		return mutate(cur)
	})
	if err != nil {
		return nil, err
	}
	if slices.Equal(before, groups) {
		return groups, nil
	}
	if err := mirrorGroups(ctx, h.writer, pcID, groups, rev, h.clock.Now()); err != nil {
		// KV holds the change; the mirror projector repairs the rows from
		// the watch, so this only delays read-your-writes for targeting.
		h.log.WarnContext(ctx, "agent_group_members mirror not updated; the projector will catch up",
			"pc_id", pcID, "revision", rev, "err", err)
	}
	payload["pc_id"] = pcID
	payload["groups"] = groups
	payload["previous"] = before
	h.recordAudit(r, messages.ActionGroupsPut, pcID, payload)
	return groups, nil
}

// mirrorGroups writes the PC's agent_group_members rows right after a KV
// write at revision rev, so that targets resolved after the edit see it. It
// shares mirror.Groups with the projector's watch: a row only moves to a
// newer revision, so the two writers converge in either order.
func mirrorGroups(ctx context.Context, w TxRunner, pcID string, groups []string, rev uint64, now time.Time) error {
	if w == nil {
		return nil
	}
	return w.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		return mirror.Groups(ctx, tx, pcID, groups, rev, now)
	})
}

// recordAudit publishes an operator audit event for this request.
func (h *handlers) recordAudit(r *http.Request, action, target string, payload map[string]any) {
	opaudit.Record(r.Context(), h.audit, h.log, action, target, payload)
}
