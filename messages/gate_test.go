package messages

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// A plan or schedule without a gate encodes byte for byte as before the
// gate existed: the upstream-shaped vectors re-encode to their exact bytes
// (compacted), with no "gate" key anywhere.
func TestPlanWithoutGateEncodesAsBefore(t *testing.T) {
	for _, name := range []string{"plan-groups-jitter.json", "schedule-compliance.json", "schedule-hourly.json"} {
		raw := readVector(t, name)
		var want bytes.Buffer
		if err := json.Compact(&want, raw); err != nil {
			t.Fatal(err)
		}
		var out []byte
		var err error
		if name == "plan-groups-jitter.json" {
			var p FanoutPlan
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatal(err)
			}
			out, err = json.Marshal(p)
		} else {
			s, perr := ParseScheduleJSON(raw)
			if perr != nil {
				t.Fatal(perr)
			}
			out, err = json.Marshal(s)
		}
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(out, []byte("gate")) {
			t.Errorf("%s: encoding grew a gate: %s", name, out)
		}
		if name == "plan-groups-jitter.json" && !bytes.Equal(out, want.Bytes()) {
			t.Errorf("%s re-encoded\n got %s\nwant %s", name, out, want.Bytes())
		}
	}
	r := Rollout{Waves: []Wave{{Group: "canary", Delay: "0s"}}}
	out, _ := json.Marshal(FanoutPlan{Rollout: &r})
	if want := `{"target":{"groups":[],"pcs":[],"all":false},"rollout":{"strategy":"wave","waves":[{"group":"canary","delay":"0s"}]}}`; string(out) != want {
		t.Errorf("rollout without gate\n got %s\nwant %s", out, want)
	}
}

func TestVectorPlanWavesGate(t *testing.T) {
	raw := readVector(t, "plan-waves-gate.json")
	p, err := parsePlan(raw)
	if err != nil {
		t.Fatal(err)
	}
	g := p.Rollout.Gate
	if g == nil || g.MinSuccess == nil || *g.MinSuccess != 0.9 || g.MaxFailed == nil || *g.MaxFailed != 1 {
		t.Fatalf("gate = %+v", g)
	}
	if d, set, err := g.WaitDuration(); err != nil || !set || d != 10*time.Minute {
		t.Fatalf("wait = %v %v %v", d, set, err)
	}
	out, _ := json.Marshal(p)
	if string(out) != string(bytes.TrimSpace(raw)) {
		t.Errorf("re-encoded\n got %s\nwant %s", out, bytes.TrimSpace(raw))
	}
	// Only what is set is emitted.
	out, _ = json.Marshal(Gate{MaxFailed: ptr(uint64(0))})
	if string(out) != `{"max_failed":0}` {
		t.Errorf("max_failed only = %s", out)
	}
}

// A schedule keeps its plan's gate through its own JSON (every_tick plans
// with a rollout stay gated when the scheduler fires them).
func TestScheduleKeepsTheGate(t *testing.T) {
	in := `{"id":"s1","cron":"0 0 * * * *","job_id":"j","target":{},"rollout":{"waves":[{"group":"canary"},{"group":"rest","delay":"1h"}],"gate":{"max_failed":0}}}`
	s, err := ParseScheduleJSON([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if s.Rollout == nil || s.Rollout.Gate == nil || s.Rollout.Gate.MaxFailed == nil || *s.Rollout.Gate.MaxFailed != 0 {
		t.Fatalf("schedule rollout = %+v", s.Rollout)
	}
	out, _ := json.Marshal(s)
	if !bytes.Contains(out, []byte(`"gate":{"max_failed":0}`)) {
		t.Fatalf("schedule re-encoded without its gate: %s", out)
	}
}

func TestGateValidate(t *testing.T) {
	for _, c := range []struct {
		gate Gate
		want string
	}{
		{Gate{MaxFailed: ptr(uint64(0))}, ""},
		{Gate{MinSuccess: ptr(1.0), Wait: ptr(Duration("5m"))}, ""},
		{Gate{}, "rollout.gate: set min_success (0 to 1) or max_failed (a count), or both"},
		{Gate{MinSuccess: ptr(1.5)}, "rollout.gate.min_success: 1.5 is not a share between 0 and 1"},
		{Gate{MinSuccess: ptr(-0.1)}, "rollout.gate.min_success: -0.1 is not a share between 0 and 1"},
		{Gate{MaxFailed: ptr(uint64(1)), Wait: ptr(Duration("soon"))}, `invalid rollout.gate.wait: expected a number at "soon" in "soon"`},
	} {
		p := FanoutPlan{Rollout: &Rollout{Waves: []Wave{{Group: "canary"}}, Gate: &c.gate}}
		err := p.Validate()
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != c.want {
			t.Errorf("%+v: got %q, want %q", c.gate, got, c.want)
		}
	}
	if _, err := parsePlan([]byte(`{"rollout":{"waves":[{"group":"g"}],"gate":{"max_failed":-1}}}`)); err == nil ||
		err.Error() != "invalid rollout.gate.max_failed: expected a non-negative integer, got number -1" {
		t.Errorf("negative max_failed: %v", err)
	}
}
