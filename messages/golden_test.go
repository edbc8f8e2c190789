package messages

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const vectorDir = "testdata/vectors"

// vectorKind says how a golden file is decoded.
type vectorKind string

const (
	kindDoc         vectorKind = "doc"
	kindCommand     vectorKind = "Command"
	kindResult      vectorKind = "ExecResult"
	kindHeartbeat   vectorKind = "Heartbeat"
	kindManifest    vectorKind = "Manifest"
	kindPlan        vectorKind = "FanoutPlan"
	kindSchedule    vectorKind = "Schedule"
	kindConfigScope vectorKind = "ConfigScope"
	kindAgentGroups vectorKind = "AgentGroups"
	kindAudit       vectorKind = "AuditEvent"
)

// vectors maps every file of testdata/vectors to its type. A new vector
// that is not listed here fails TestVectorTableCoversDirectory, so it
// cannot be forgotten.
var vectors = map[string]vectorKind{
	"README.md":                     kindDoc,
	"agentgroups-pc.json":           kindAgentGroups,
	"audit-exec.json":               kindAudit,
	"bad-manifest-target.json":      kindManifest,
	"command-adhoc.json":            kindCommand,
	"command-exec-all.json":         kindCommand,
	"command-user-cwd.json":         kindCommand,
	"configscope-global.json":       kindConfigScope,
	"heartbeat-full.json":           kindHeartbeat,
	"heartbeat-old.json":            kindHeartbeat,
	"in-command-legacy.json":        kindCommand,
	"in-plan-all.json":              kindPlan,
	"in-plan-waves.json":            kindPlan,
	"job-restart-spooler.yaml":      kindManifest,
	"manifest-echo.json":            kindManifest,
	"manifest-inventory.json":       kindManifest,
	"manifest-user-cwd.json":        kindManifest,
	"plan-groups-jitter.json":       kindPlan,
	"plan-waves-gate.json":          kindPlan,
	"result-adhoc-nomanifest.json":  kindResult,
	"result-success-inventory.json": kindResult,
	"result-timeout.json":           kindResult,
	"schedule-compliance.json":      kindSchedule,
	"schedule-hourly.json":          kindSchedule,
	"schedule-minimal.yaml":         kindSchedule,
}

func TestVectorTableCoversDirectory(t *testing.T) {
	entries, err := os.ReadDir(vectorDir)
	if err != nil {
		t.Fatal(err)
	}
	onDisk := map[string]bool{}
	for _, e := range entries {
		onDisk[e.Name()] = true
		if _, ok := vectors[e.Name()]; !ok {
			t.Errorf("vector %s is not in the test table: add it with its type", e.Name())
		}
	}
	for name := range vectors {
		if !onDisk[name] {
			t.Errorf("test table lists %s, which is not in %s", name, vectorDir)
		}
	}
}

// decodeVector decodes (and validates, where the type has rules) one file
// the way the backend reads that payload.
func decodeVector(t *testing.T, name string, kind vectorKind, b []byte) (any, error) {
	t.Helper()
	isYAML := strings.HasSuffix(name, ".yaml")
	switch kind {
	case kindManifest:
		var m Manifest
		var err error
		if isYAML {
			m, err = ParseManifestYAML(b)
		} else {
			m, err = ParseManifestJSON(b)
		}
		return &m, err
	case kindSchedule:
		var s Schedule
		var err error
		if isYAML {
			s, err = ParseScheduleYAML(b)
		} else {
			s, err = ParseScheduleJSON(b)
		}
		return &s, err
	case kindPlan:
		var p FanoutPlan
		if err := json.Unmarshal(b, &p); err != nil {
			return nil, err
		}
		return &p, p.Validate()
	case kindConfigScope:
		var c ConfigScope
		if err := json.Unmarshal(b, &c); err != nil {
			return nil, err
		}
		return &c, c.Validate()
	case kindCommand:
		var c Command
		if err := json.Unmarshal(b, &c); err != nil {
			return nil, err
		}
		return &c, c.Validate()
	case kindResult:
		var r ExecResult
		return &r, json.Unmarshal(b, &r)
	case kindHeartbeat:
		var h Heartbeat
		return &h, json.Unmarshal(b, &h)
	case kindAgentGroups:
		g, err := ParseAgentGroups(b)
		return &g, err
	case kindAudit:
		var e AuditEvent
		return &e, json.Unmarshal(b, &e)
	}
	t.Fatalf("no decoder for %s (%s)", name, kind)
	return nil, nil
}

// asValue decodes JSON into a generic value so that two documents compare
// field by field, whatever their key order.
func asValue(t *testing.T, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

// TestVectors runs every golden file: bad-* must be rejected, in-* and
// YAML inputs must be accepted, all others must re-encode to the same JSON
// value.
func TestVectors(t *testing.T) {
	for name, kind := range vectors {
		if kind == kindDoc {
			continue
		}
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(vectorDir, name))
			if err != nil {
				t.Fatal(err)
			}
			v, err := decodeVector(t, name, kind, b)
			switch {
			case strings.HasPrefix(name, "bad-"):
				if err == nil {
					t.Fatalf("%s was accepted, must be rejected", name)
				}
				return
			case err != nil:
				t.Fatalf("%s rejected: %v", name, err)
			case strings.HasPrefix(name, "in-"), strings.HasSuffix(name, ".yaml"):
				// Inputs: defaults are asserted in the dedicated tests.
				return
			}
			out, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := asValue(t, out), asValue(t, b); !reflect.DeepEqual(got, want) {
				t.Errorf("%s does not round-trip:\n got %s\nwant %s", name, out, bytes.TrimSpace(b))
			}
		})
	}
}

func readVector(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectorDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVectorBadManifestTargetNamesField(t *testing.T) {
	_, err := ParseManifestJSON(readVector(t, "bad-manifest-target.json"))
	if err == nil || err.Error() != `unknown field "target"` {
		t.Fatalf("error = %v, want unknown field \"target\"", err)
	}
	if !errors.Is(err, ErrUnknownField) {
		t.Errorf("error does not match ErrUnknownField")
	}
}

func TestVectorInCommandLegacyDefaults(t *testing.T) {
	var c Command
	if err := json.Unmarshal(readVector(t, "in-command-legacy.json"), &c); err != nil {
		t.Fatal(err)
	}
	if c.RunAs != RunAsSystem {
		t.Errorf("run_as = %q, want system", c.RunAs)
	}
	if c.JobID != nil || c.JitterSecs != nil {
		t.Errorf("job_id = %v, jitter_secs = %v, want nil", c.JobID, c.JitterSecs)
	}
	if c.ID != "echo-test" || c.Version != "0.0.1" || c.RequestID != "r-1" || c.Shell != ShellPowerShell ||
		c.Script != "echo 'kanade'" || c.TimeoutSecs != 30 || c.Cwd != "" {
		t.Errorf("decoded %+v", c)
	}
	out, _ := json.Marshal(c)
	want := `{"id":"echo-test","version":"0.0.1","request_id":"r-1","job_id":null,"shell":"powershell","script":"echo 'kanade'","timeout_secs":30,"jitter_secs":null,"run_as":"system"}`
	if string(out) != want {
		t.Errorf("re-encoded\n got %s\nwant %s", out, want)
	}
}

func TestVectorInPlanAllDefaults(t *testing.T) {
	var p FanoutPlan
	if err := json.Unmarshal(readVector(t, "in-plan-all.json"), &p); err != nil {
		t.Fatal(err)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if !p.Target.All || len(p.Target.Groups) != 0 || len(p.Target.Pcs) != 0 || p.Rollout != nil || p.Jitter != nil {
		t.Errorf("decoded %+v", p)
	}
	if js, err := p.JitterSecs(); err != nil || js != nil {
		t.Errorf("JitterSecs = %v, %v; want nil", js, err)
	}
	out, _ := json.Marshal(p)
	if want := `{"target":{"groups":[],"pcs":[],"all":true}}`; string(out) != want {
		t.Errorf("re-encoded\n got %s\nwant %s", out, want)
	}
}

func TestVectorInPlanWavesDefaults(t *testing.T) {
	var p FanoutPlan
	if err := json.Unmarshal(readVector(t, "in-plan-waves.json"), &p); err != nil {
		t.Fatal(err)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if p.Rollout == nil || p.Rollout.Strategy != RolloutWave || len(p.Rollout.Waves) != 3 {
		t.Fatalf("rollout = %+v", p.Rollout)
	}
	wantWaves := []struct {
		group string
		delay time.Duration
	}{{"canary", 0}, {"wave1", 30 * time.Minute}, {"wave2", 2 * time.Hour}}
	for i, w := range p.Rollout.Waves {
		d, err := w.DelayDuration()
		if err != nil || w.Group != wantWaves[i].group || d != wantWaves[i].delay {
			t.Errorf("wave %d = %+v (%v, %v), want %+v", i, w, d, err, wantWaves[i])
		}
	}
	js, err := p.JitterSecs()
	if err != nil || js == nil || *js != 300 {
		t.Errorf("JitterSecs = %v, %v; want 300", js, err)
	}
	out, _ := json.Marshal(p)
	want := `{"target":{"groups":["canary","wave1","wave2"],"pcs":[],"all":false},"rollout":{"strategy":"wave","waves":[{"group":"canary","delay":"0s"},{"group":"wave1","delay":"30m"},{"group":"wave2","delay":"2h"}]},"jitter":"5m"}`
	if string(out) != want {
		t.Errorf("re-encoded\n got %s\nwant %s", out, want)
	}
}

func TestVectorJobRestartSpoolerYAML(t *testing.T) {
	m, err := ParseManifestYAML(readVector(t, "job-restart-spooler.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := Manifest{
		ID:      "restart-spooler",
		Version: "1.2.0",
		Execute: Execute{
			Shell:   ShellCmd,
			Script:  "net stop spooler && net start spooler",
			Timeout: "2m",
			RunAs:   RunAsSystem,
		},
		RequireApproval: true,
	}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("decoded\n got %+v\nwant %+v", m, want)
	}
	if secs, err := m.Execute.TimeoutSecs(); err != nil || secs != 120 {
		t.Errorf("TimeoutSecs = %d, %v; want 120", secs, err)
	}
	out, _ := json.Marshal(m)
	wantJSON := `{"id":"restart-spooler","version":"1.2.0","description":null,"execute":{"shell":"cmd","script":"net stop spooler \u0026\u0026 net start spooler","timeout":"2m","run_as":"system"},"require_approval":true,"inventory":null}`
	if string(out) != wantJSON {
		t.Errorf("encoded\n got %s\nwant %s", out, wantJSON)
	}
}

func TestVectorScheduleMinimalYAML(t *testing.T) {
	s, err := ParseScheduleYAML(readVector(t, "schedule-minimal.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if s.ID != "every-10s" || s.Cron != "*/10 * * * * *" || s.JobID != "scheduled-echo" {
		t.Errorf("decoded %+v", s)
	}
	if !s.Target.All || len(s.Target.Groups) != 0 || len(s.Target.Pcs) != 0 {
		t.Errorf("target = %+v", s.Target)
	}
	if s.Rollout != nil || s.Jitter != nil || s.Cooldown != nil || s.StartingDeadline != nil || s.TZ != "" {
		t.Errorf("optional fields set: %+v", s)
	}
	if s.Mode != ModeEveryTick || !s.Enabled || s.AutoDisableWhenDone {
		t.Errorf("defaults: mode=%q enabled=%v auto_disable=%v", s.Mode, s.Enabled, s.AutoDisableWhenDone)
	}
	e, err := s.CronExpr()
	if err != nil {
		t.Fatal(err)
	}
	from := time.Date(2026, 5, 20, 3, 0, 0, 0, time.UTC)
	if got := e.Next(from); !got.Equal(from.Add(10 * time.Second)) {
		t.Errorf("next tick = %v, want every 10 s", got)
	}
	out, _ := json.Marshal(s)
	want := `{"id":"every-10s","cron":"*/10 * * * * *","job_id":"scheduled-echo","target":{"groups":[],"pcs":[],"all":true},"mode":"every_tick","auto_disable_when_done":false,"enabled":true}`
	if string(out) != want {
		t.Errorf("encoded\n got %s\nwant %s", out, want)
	}
}

// TestVectorSchedulesKeyOrder checks the emitted key order of wire.md §4,
// which the schedule vectors follow byte for byte.
func TestVectorSchedulesKeyOrder(t *testing.T) {
	for _, name := range []string{"schedule-compliance.json", "schedule-hourly.json"} {
		b := bytes.TrimSpace(readVector(t, name))
		s, err := ParseScheduleJSON(b)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := json.Marshal(s)
		if !bytes.Equal(out, b) {
			t.Errorf("%s re-encoded\n got %s\nwant %s", name, out, b)
		}
	}
}
