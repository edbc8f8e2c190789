package messages

import (
	"bytes"
	"encoding/json"
	"slices"
)

// AgentGroups is a KV agent_groups value: the groups one PC belongs to.
type AgentGroups struct {
	Groups []string `json:"groups"`
}

// MarshalJSON emits the groups sorted and de-duplicated, never null, as
// every write must.
func (g AgentGroups) MarshalJSON() ([]byte, error) {
	type alias AgentGroups
	return json.Marshal(alias{Groups: NormalizeGroups(g.Groups)})
}

// UnmarshalJSON reads the {"groups": [...]} wrapper and also tolerates a
// bare array. Upstream 0.21.2's scheduler decoded only a bare array and so
// never resolved group targets; accepting both means neither form can be
// misread. null or a missing list reads as no groups.
func (g *AgentGroups) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '[' {
		var list []string
		if err := json.Unmarshal(b, &list); err != nil {
			return err
		}
		g.Groups = NormalizeGroups(list)
		return nil
	}
	type alias AgentGroups
	var a alias
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	g.Groups = NormalizeGroups(a.Groups)
	return nil
}

// ParseAgentGroups decodes a KV value; an empty value (missing key, delete
// marker) means no groups.
func ParseAgentGroups(b []byte) (AgentGroups, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return AgentGroups{Groups: []string{}}, nil
	}
	var g AgentGroups
	if err := DecodeJSON(b, &g); err != nil {
		return AgentGroups{}, err
	}
	return g, nil
}

// Contains reports whether the PC is in group.
func (g AgentGroups) Contains(group string) bool {
	return slices.Contains(g.Groups, group)
}

// NormalizeGroups returns a sorted copy without duplicates or empty names
// (an empty name can never be a valid group). The result is never nil.
func NormalizeGroups(groups []string) []string {
	out := make([]string, 0, len(groups))
	for _, g := range groups {
		if g != "" {
			out = append(out, g)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
