package messages

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ConfigScope is a KV agent_config value (key global, groups.<g> or
// pcs.<pc_id>). Every field is optional and omitted when unset; unknown
// fields (legacy inventory_*) are ignored.
type ConfigScope struct {
	TargetVersion       *string   `json:"target_version,omitempty"`
	TargetVersionJitter *Duration `json:"target_version_jitter,omitempty"`
	HeartbeatInterval   *Duration `json:"heartbeat_interval,omitempty"`
}

// Validate checks that the durations parse. A zero heartbeat interval is
// refused because agents would publish in a busy loop.
func (c *ConfigScope) Validate() error {
	if c.TargetVersion != nil && strings.TrimSpace(*c.TargetVersion) == "" {
		return errors.New("invalid target_version: must not be empty (omit it to unset)")
	}
	if _, _, err := optionalDuration(c.TargetVersionJitter); err != nil {
		return fmt.Errorf("invalid target_version_jitter: %w", err)
	}
	d, set, err := optionalDuration(c.HeartbeatInterval)
	if err != nil {
		return fmt.Errorf("invalid heartbeat_interval: %w", err)
	}
	if set && d < time.Second {
		return fmt.Errorf("invalid heartbeat_interval: %q is shorter than 1s", *c.HeartbeatInterval)
	}
	return nil
}

// IsEmpty reports whether the scope sets nothing.
func (c *ConfigScope) IsEmpty() bool {
	return c.TargetVersion == nil && c.TargetVersionJitter == nil && c.HeartbeatInterval == nil
}

// Built-in configuration defaults (wire.md §4).
const (
	DefaultTargetVersionJitter Duration = "0s"
	DefaultHeartbeatInterval   Duration = "30s"
)

// EffectiveConfig is the configuration an agent ends up with once every
// scope is applied.
type EffectiveConfig struct {
	// TargetVersion is null when no scope pins a version.
	TargetVersion       *string  `json:"target_version"`
	TargetVersionJitter Duration `json:"target_version_jitter"`
	HeartbeatInterval   Duration `json:"heartbeat_interval"`
}

// DefaultEffectiveConfig returns the built-ins.
func DefaultEffectiveConfig() EffectiveConfig {
	return EffectiveConfig{
		TargetVersionJitter: DefaultTargetVersionJitter,
		HeartbeatInterval:   DefaultHeartbeatInterval,
	}
}

// ResolveEffectiveConfig applies built-ins, then global, then the scope of
// each of the PC's groups in alphabetical order (later wins), then the
// PC's own scope. groups holds only the PC's groups that have a scope; nil
// scopes are skipped. When several groups set the same field the result
// depends on group names alone, which is rarely what an operator meant, so
// a warning names the field, the groups and the winner. Warnings is never
// nil, so it encodes as [].
func ResolveEffectiveConfig(global *ConfigScope, groups map[string]ConfigScope, pc *ConfigScope) (EffectiveConfig, []string) {
	eff := DefaultEffectiveConfig()
	eff.apply(global)

	names := make([]string, 0, len(groups))
	for g := range groups {
		names = append(names, g)
	}
	slices.Sort(names)
	var setters [3][]string // by field, in the order of fieldNames below
	for _, g := range names {
		scope := groups[g]
		if scope.TargetVersion != nil {
			setters[0] = append(setters[0], g)
		}
		if scope.TargetVersionJitter != nil {
			setters[1] = append(setters[1], g)
		}
		if scope.HeartbeatInterval != nil {
			setters[2] = append(setters[2], g)
		}
		eff.apply(&scope)
	}
	warnings := []string{}
	fieldNames := [3]string{"target_version", "target_version_jitter", "heartbeat_interval"}
	for i, gs := range setters {
		if len(gs) > 1 {
			warnings = append(warnings, fmt.Sprintf("%s is set by several groups (%s); %q wins as the last in alphabetical order",
				fieldNames[i], strings.Join(gs, ", "), gs[len(gs)-1]))
		}
	}
	eff.apply(pc)
	return eff, warnings
}

// apply overlays the fields s sets. Values are copied so that the result
// never aliases a caller's scope.
func (e *EffectiveConfig) apply(s *ConfigScope) {
	if s == nil {
		return
	}
	if s.TargetVersion != nil {
		v := *s.TargetVersion
		e.TargetVersion = &v
	}
	if s.TargetVersionJitter != nil {
		e.TargetVersionJitter = *s.TargetVersionJitter
	}
	if s.HeartbeatInterval != nil {
		e.HeartbeatInterval = *s.HeartbeatInterval
	}
}
