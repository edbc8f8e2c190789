package messages

import (
	"encoding/json"
	"errors"
	"testing"
)

// TestDecodeErrorTexts checks that decoding errors name wire fields, not
// Go types or the alias helpers the decoders use internally.
func TestDecodeErrorTexts(t *testing.T) {
	tests := []struct {
		name    string
		parse   func([]byte) error
		in      string
		wantErr string
	}{
		{"manifest id", manifestErr, `{"id":5}`, `invalid id: expected a string, got number`},
		{"manifest array", manifestErr, `[1]`, `expected an object, got array`},
		{"manifest execute", manifestErr, `{"id":"j","execute":"x"}`, `invalid execute: expected an object, got string`},
		{"manifest shell", manifestErr, `{"id":"j","execute":{"shell":5}}`, `invalid execute.shell: expected a string, got number`},
		{"manifest approval", manifestErr, `{"id":"j","require_approval":"yes"}`, `invalid require_approval: expected true or false, got string`},
		{"manifest syntax", manifestErr, `{"id":`, `malformed JSON at offset 6: unexpected end of JSON input`},
		{"manifest empty", manifestErr, ` `, `empty body`},
		{"schedule target", scheduleErr, `{"target":{"all":"yes"}}`, `invalid target.all: expected true or false, got string`},
		{"schedule wave", scheduleErr, `{"rollout":{"waves":[{"group":1}]}}`, `invalid rollout.waves.group: expected a string, got number`},
		{"plan pcs", planErr, `{"target":{"pcs":"PC-1"}}`, `invalid target.pcs: expected an array, got string`},
		{"scope interval", scopeErr, `{"heartbeat_interval":30}`, `expected a duration string such as "30s" or "5m", got 30`},
		{"groups", groupsErr, `{"groups":"a"}`, `invalid groups: expected an array, got string`},
	}
	for _, tt := range tests {
		err := tt.parse([]byte(tt.in))
		if err == nil || err.Error() != tt.wantErr {
			t.Errorf("%s: %s: error %v\nwant %q", tt.name, tt.in, err, tt.wantErr)
		}
	}
	var te *json.UnmarshalTypeError
	if err := DecodeJSON([]byte(`{"id":5}`), &Manifest{}); !errors.As(err, &te) {
		t.Errorf("the original error is not reachable: %v", err)
	}
}

func manifestErr(b []byte) error { _, err := ParseManifestJSON(b); return err }
func scheduleErr(b []byte) error { _, err := ParseScheduleJSON(b); return err }
func planErr(b []byte) error     { _, err := parsePlan(b); return err }

// parsePlan decodes and validates a POST /api/exec body as the exec
// handler does.
func parsePlan(b []byte) (FanoutPlan, error) {
	var p FanoutPlan
	if err := DecodeJSON(b, &p); err != nil {
		return FanoutPlan{}, err
	}
	return p, p.Validate()
}
func scopeErr(b []byte) error  { _, err := ParseConfigScopeJSON(b); return err }
func groupsErr(b []byte) error { _, err := ParseAgentGroups(b); return err }

func TestParseFanoutPlanAndConfigScope(t *testing.T) {
	p, err := parsePlan([]byte(`{"target":{"groups":["canary"]},"jitter":"30s"}`))
	if err != nil || len(p.Target.Groups) != 1 || p.Jitter == nil {
		t.Errorf("plan %+v, %v", p, err)
	}
	_, err = parsePlan([]byte(`{}`))
	if !errors.Is(err, ErrTargetUnspecified) {
		t.Errorf("empty plan: %v", err)
	}
	c, err := ParseConfigScopeJSON([]byte(`{"heartbeat_interval":"1m","inventory_interval":"1h"}`))
	if err != nil || c.HeartbeatInterval == nil || *c.HeartbeatInterval != "1m" {
		t.Errorf("scope %+v, %v", c, err)
	}
	if _, err := ParseConfigScopeJSON([]byte(`{"heartbeat_interval":"1 parsec"}`)); err == nil ||
		err.Error() != `invalid heartbeat_interval: unknown unit "parsec" in "1 parsec"` {
		t.Errorf("bad scope: %v", err)
	}
}
