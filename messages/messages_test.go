package messages

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestEncodingNullVsOmitted pins, for every type, which empty fields are
// emitted as null (or a default) and which are left out (wire.md §1).
func TestEncodingNullVsOmitted(t *testing.T) {
	at := time.Date(2026, 5, 20, 3, 0, 0, 120_000_000, time.UTC)
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"Command empty", Command{},
			`{"id":"","version":"","request_id":"","job_id":null,"shell":"","script":"","timeout_secs":0,"jitter_secs":null,"run_as":"system"}`},
		{"Command full", Command{ID: "j", Version: "1", RequestID: "r", JobID: ptr("e"), Shell: ShellCmd, Script: "x", TimeoutSecs: 5, JitterSecs: ptr(uint64(0)), RunAs: RunAsUser, Cwd: "C:\\"},
			`{"id":"j","version":"1","request_id":"r","job_id":"e","shell":"cmd","script":"x","timeout_secs":5,"jitter_secs":0,"run_as":"user","cwd":"C:\\"}`},
		{"ExecResult no manifest", ExecResult{RequestID: "r", PcID: "p", ExitCode: -1, StartedAt: at, FinishedAt: at},
			`{"request_id":"r","pc_id":"p","exit_code":-1,"stdout":"","stderr":"","started_at":"2026-05-20T03:00:00.12Z","finished_at":"2026-05-20T03:00:00.12Z"}`},
		{"ExecResult manifest", ExecResult{RequestID: "r", PcID: "p", StartedAt: at, FinishedAt: at, ManifestID: ptr("m")},
			`{"request_id":"r","pc_id":"p","exit_code":0,"stdout":"","stderr":"","started_at":"2026-05-20T03:00:00.12Z","finished_at":"2026-05-20T03:00:00.12Z","manifest_id":"m"}`},
		{"Heartbeat old agent", Heartbeat{PcID: "p", At: at, AgentVersion: "0.11.5"},
			`{"pc_id":"p","at":"2026-05-20T03:00:00.12Z","agent_version":"0.11.5"}`},
		{"Heartbeat full", Heartbeat{PcID: "p", At: at, AgentVersion: "1", Hostname: ptr("h"), OsFamily: ptr(OSWindows)},
			`{"pc_id":"p","at":"2026-05-20T03:00:00.12Z","agent_version":"1","hostname":"h","os_family":"windows"}`},
		{"Manifest empty", Manifest{},
			`{"id":"","version":"","description":null,"execute":{"shell":"","script":"","timeout":"","run_as":"system"},"require_approval":false,"inventory":null}`},
		{"Manifest inventory", Manifest{ID: "i", Version: "1", Description: ptr("d"), Execute: Execute{Shell: ShellCmd, Script: "s", Timeout: "1m", RunAs: RunAsSystemGUI, Cwd: "~"},
			Inventory: &InventoryHint{Display: []DisplayField{{Field: "f", Label: "F"}, {Field: "g", Label: "G", Type: DisplayBytes}}}},
			`{"id":"i","version":"1","description":"d","execute":{"shell":"cmd","script":"s","timeout":"1m","run_as":"system_gui","cwd":"~"},"require_approval":false,"inventory":{"display":[{"field":"f","label":"F"},{"field":"g","label":"G","type":"bytes"}]}}`},
		{"InventoryHint empty summary kept", InventoryHint{Display: []DisplayField{}, Summary: []DisplayField{}},
			`{"display":[],"summary":[]}`},
		{"FanoutPlan empty", FanoutPlan{},
			`{"target":{"groups":[],"pcs":[],"all":false}}`},
		{"FanoutPlan full", FanoutPlan{Target: Target{Pcs: []string{"a"}}, Rollout: &Rollout{Waves: []Wave{{Group: "g", Delay: "0s"}}}, Jitter: ptr(Duration("30s"))},
			`{"target":{"groups":[],"pcs":["a"],"all":false},"rollout":{"strategy":"wave","waves":[{"group":"g","delay":"0s"}]},"jitter":"30s"}`},
		{"Rollout empty", Rollout{}, `{"strategy":"wave","waves":[]}`},
		{"Schedule minimal", Schedule{ID: "s", Cron: "@hourly", JobID: "j", Enabled: true},
			`{"id":"s","cron":"@hourly","job_id":"j","target":{"groups":[],"pcs":[],"all":false},"mode":"every_tick","auto_disable_when_done":false,"enabled":true}`},
		{"Schedule full", Schedule{ID: "s", Cron: "@hourly", JobID: "j",
			FanoutPlan: FanoutPlan{Target: Target{Groups: []string{"g"}}, Rollout: &Rollout{Strategy: RolloutWave, Waves: []Wave{{Group: "g", Delay: "1m"}}}, Jitter: ptr(Duration("5s"))},
			Mode:       ModeOncePerTarget, Cooldown: ptr(Duration("1d")), AutoDisableWhenDone: true, Enabled: false, TZ: "Europe/Berlin", StartingDeadline: ptr(Duration("10m"))},
			`{"id":"s","cron":"@hourly","job_id":"j","target":{"groups":["g"],"pcs":[],"all":false},"rollout":{"strategy":"wave","waves":[{"group":"g","delay":"1m"}]},"jitter":"5s","mode":"once_per_target","cooldown":"1d","auto_disable_when_done":true,"enabled":false,"tz":"Europe/Berlin","starting_deadline":"10m"}`},
		{"ConfigScope empty", ConfigScope{}, `{}`},
		{"ConfigScope full", ConfigScope{TargetVersion: ptr("1.0"), TargetVersionJitter: ptr(Duration("30m")), HeartbeatInterval: ptr(Duration("30s"))},
			`{"target_version":"1.0","target_version_jitter":"30m","heartbeat_interval":"30s"}`},
		{"EffectiveConfig defaults", DefaultEffectiveConfig(),
			`{"target_version":null,"target_version_jitter":"0s","heartbeat_interval":"30s"}`},
		{"AgentGroups nil", AgentGroups{}, `{"groups":[]}`},
		{"AgentGroups unsorted", AgentGroups{Groups: []string{"b", "a", "b", ""}}, `{"groups":["a","b"]}`},
		{"AuditEvent empty", AuditEvent{Actor: ActorOperator, Action: ActionJobDelete, OccurredAt: at},
			`{"actor":"operator","action":"job_delete","target":null,"payload":{},"occurred_at":"2026-05-20T03:00:00.12Z"}`},
		{"ExecResponse empty", ExecResponse{},
			`{"exec_id":"","job_id":"","version":"","target_count":0,"subjects":[],"expected_pcs":0}`},
		{"LogsFetchRequest", LogsFetchRequest{TailLines: 200}, `{"tail_lines":200}`},
	}
	for _, tt := range tests {
		if got := mustJSON(t, tt.v); got != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, got, tt.want)
		}
	}
}

// TestDecodeAcceptsNullAndOmitted checks that both forms of an empty field
// are read the same way (wire.md §1).
func TestDecodeAcceptsNullAndOmitted(t *testing.T) {
	pairs := []struct {
		name       string
		a, b       string
		newV       func() any
		normalised string
	}{
		{"Command", `{"id":"j","version":"1","request_id":"r","shell":"cmd","script":"x","timeout_secs":1}`,
			`{"id":"j","version":"1","request_id":"r","job_id":null,"shell":"cmd","script":"x","timeout_secs":1,"jitter_secs":null,"run_as":null,"cwd":null}`,
			func() any { return new(Command) },
			`{"id":"j","version":"1","request_id":"r","job_id":null,"shell":"cmd","script":"x","timeout_secs":1,"jitter_secs":null,"run_as":"system"}`},
		{"ExecResult", `{"request_id":"r","pc_id":"p","exit_code":0,"stdout":"","stderr":"","started_at":"2026-05-20T03:00:00Z","finished_at":"2026-05-20T03:00:00Z"}`,
			`{"request_id":"r","pc_id":"p","exit_code":0,"stdout":"","stderr":"","started_at":"2026-05-20T03:00:00Z","finished_at":"2026-05-20T03:00:00Z","manifest_id":null}`,
			func() any { return new(ExecResult) },
			`{"request_id":"r","pc_id":"p","exit_code":0,"stdout":"","stderr":"","started_at":"2026-05-20T03:00:00Z","finished_at":"2026-05-20T03:00:00Z"}`},
		{"Heartbeat", `{"pc_id":"p","at":"2026-05-20T03:00:00Z","agent_version":"1"}`,
			`{"pc_id":"p","at":"2026-05-20T03:00:00Z","agent_version":"1","hostname":null,"os_family":null}`,
			func() any { return new(Heartbeat) },
			`{"pc_id":"p","at":"2026-05-20T03:00:00Z","agent_version":"1"}`},
		{"Manifest", `{"id":"j","version":"1","execute":{"shell":"cmd","script":"x","timeout":"1s"}}`,
			`{"id":"j","version":"1","description":null,"execute":{"shell":"cmd","script":"x","timeout":"1s","run_as":null,"cwd":null},"require_approval":null,"inventory":null}`,
			func() any { return new(Manifest) },
			`{"id":"j","version":"1","description":null,"execute":{"shell":"cmd","script":"x","timeout":"1s","run_as":"system"},"require_approval":false,"inventory":null}`},
		{"InventoryHint", `{"display":[{"field":"f","label":"F"}]}`,
			`{"display":[{"field":"f","label":"F","type":null}],"summary":null}`,
			func() any { return new(InventoryHint) },
			`{"display":[{"field":"f","label":"F"}]}`},
		{"FanoutPlan", `{"target":{"all":true}}`,
			`{"target":{"groups":null,"pcs":null,"all":true},"rollout":null,"jitter":null}`,
			func() any { return new(FanoutPlan) },
			`{"target":{"groups":[],"pcs":[],"all":true}}`},
		{"Schedule", `{"id":"s","cron":"@hourly","job_id":"j","target":{"all":true}}`,
			`{"id":"s","cron":"@hourly","job_id":"j","target":{"all":true},"rollout":null,"jitter":null,"mode":null,"cooldown":null,"auto_disable_when_done":null,"enabled":null,"tz":null,"starting_deadline":null}`,
			func() any { return new(Schedule) },
			`{"id":"s","cron":"@hourly","job_id":"j","target":{"groups":[],"pcs":[],"all":true},"mode":"every_tick","auto_disable_when_done":false,"enabled":true}`},
		{"ConfigScope", `{}`, `{"target_version":null,"target_version_jitter":null,"heartbeat_interval":null,"inventory_interval":"1h"}`,
			func() any { return new(ConfigScope) }, `{}`},
		{"AuditEvent", `{"actor":"operator","action":"exec","occurred_at":"2026-05-20T03:00:00Z"}`,
			`{"actor":"operator","action":"exec","target":null,"payload":null,"occurred_at":"2026-05-20T03:00:00Z"}`,
			func() any { return new(AuditEvent) },
			`{"actor":"operator","action":"exec","target":null,"payload":{},"occurred_at":"2026-05-20T03:00:00Z"}`},
	}
	for _, p := range pairs {
		for _, in := range []string{p.a, p.b} {
			v := p.newV()
			if err := json.Unmarshal([]byte(in), v); err != nil {
				t.Errorf("%s: decode %s: %v", p.name, in, err)
				continue
			}
			if got := mustJSON(t, v); got != p.normalised {
				t.Errorf("%s: %s re-encoded\n got %s\nwant %s", p.name, in, got, p.normalised)
			}
		}
	}
}

func TestScheduleEnabledDefault(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{`{"id":"s"}`, true},
		{`{"id":"s","enabled":null}`, true},
		{`{"id":"s","enabled":true}`, true},
		{`{"id":"s","enabled":false}`, false},
	}
	for _, tt := range tests {
		var s Schedule
		if err := json.Unmarshal([]byte(tt.in), &s); err != nil {
			t.Fatal(err)
		}
		if s.Enabled != tt.want {
			t.Errorf("%s: enabled = %v, want %v", tt.in, s.Enabled, tt.want)
		}
	}
	// Unknown fields are ignored in schedules (unlike manifests).
	var s Schedule
	if err := json.Unmarshal([]byte(`{"id":"s","future_field":1}`), &s); err != nil {
		t.Errorf("unknown schedule field rejected: %v", err)
	}
}

func TestTimestampsNormalisedToUTC(t *testing.T) {
	var r ExecResult
	in := `{"request_id":"r","pc_id":"p","exit_code":0,"stdout":"","stderr":"","started_at":"2026-05-20T12:00:00.5+09:00","finished_at":"2026-05-19T23:00:01-04:00"}`
	if err := json.Unmarshal([]byte(in), &r); err != nil {
		t.Fatal(err)
	}
	if r.StartedAt.Location() != time.UTC || r.FinishedAt.Location() != time.UTC {
		t.Errorf("locations %v %v, want UTC", r.StartedAt.Location(), r.FinishedAt.Location())
	}
	if got := mustJSON(t, r); !strings.Contains(got, `"started_at":"2026-05-20T03:00:00.5Z","finished_at":"2026-05-20T03:00:01Z"`) {
		t.Errorf("encoded %s", got)
	}

	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	local := time.Date(2026, 5, 20, 5, 0, 0, 1, berlin)
	for _, v := range []any{
		Heartbeat{At: local},
		AuditEvent{OccurredAt: local},
		ExecResult{StartedAt: local, FinishedAt: local},
	} {
		got := mustJSON(t, v)
		if !strings.Contains(got, `"2026-05-20T03:00:00.000000001Z"`) {
			t.Errorf("%T encoded %s, want UTC with nanoseconds", v, got)
		}
	}

	var h Heartbeat
	if err := json.Unmarshal([]byte(`{"pc_id":"p","at":"2026-05-20T05:00:00+02:00","agent_version":"1"}`), &h); err != nil {
		t.Fatal(err)
	}
	if h.At.Location() != time.UTC || h.At.Hour() != 3 {
		t.Errorf("heartbeat at = %v", h.At)
	}
	var e AuditEvent
	if err := json.Unmarshal([]byte(`{"actor":"a","action":"b","target":null,"payload":{},"occurred_at":"2026-05-20T05:00:00+02:00"}`), &e); err != nil {
		t.Fatal(err)
	}
	if e.OccurredAt.Location() != time.UTC || e.OccurredAt.Hour() != 3 {
		t.Errorf("audit occurred_at = %v", e.OccurredAt)
	}
	if err := json.Unmarshal([]byte(`{"pc_id":"p","at":"2026-05-20 05:00:00","agent_version":"1"}`), &h); err == nil {
		t.Errorf("non-RFC 3339 timestamp accepted")
	}
}

func TestManifestUnknownFields(t *testing.T) {
	base := `"id":"j","version":"1","execute":{"shell":"cmd","script":"x","timeout":"1s"}`
	tests := []struct {
		in, wantErr string
	}{
		{`{` + base + `,"target":{"all":true}}`, `unknown field "target"`},
		{`{` + base + `,"zeta":1,"alpha":2}`, `unknown field "alpha"`},
		{`{` + base + `,"Description":"x"}`, `unknown field "Description"`},
	}
	for _, tt := range tests {
		_, err := ParseManifestJSON([]byte(tt.in))
		if err == nil || err.Error() != tt.wantErr {
			t.Errorf("%s: error %v, want %q", tt.in, err, tt.wantErr)
		}
		if !errors.Is(err, ErrUnknownField) {
			t.Errorf("%s: error does not match ErrUnknownField", tt.in)
		}
		// The rule holds for plain json.Unmarshal too (KV readers).
		var m Manifest
		if err := json.Unmarshal([]byte(tt.in), &m); !errors.Is(err, ErrUnknownField) {
			t.Errorf("json.Unmarshal(%s) = %v, want ErrUnknownField", tt.in, err)
		}
	}
	// Unknown fields inside execute are ignored.
	m, err := ParseManifestJSON([]byte(`{"id":"j","version":"1","execute":{"shell":"cmd","script":"x","timeout":"1s","elevate":true}}`))
	if err != nil {
		t.Fatalf("unknown execute field rejected: %v", err)
	}
	if m.Execute.Shell != ShellCmd {
		t.Errorf("decoded %+v", m)
	}
}

func TestManifestVersionLiteral(t *testing.T) {
	exec := `"execute":{"shell":"cmd","script":"x","timeout":"1s"}`
	tests := []struct {
		json, yaml, want string
	}{
		{`{"id":"j","version":1.0,` + exec + `}`, "version: 1.0", "1.0"},
		{`{"id":"j","version":1,` + exec + `}`, "version: 1", "1"},
		{`{"id":"j","version":1.10,` + exec + `}`, "version: 1.10", "1.10"},
		{`{"id":"j","version":"1.0",` + exec + `}`, `version: "1.0"`, "1.0"},
		{`{"id":"j","version":"1.2.0",` + exec + `}`, "version: 1.2.0", "1.2.0"},
		{`{"id":"j","version":"1e3",` + exec + `}`, "version: 1e3", "1e3"},
	}
	yamlRest := "\nid: j\nexecute:\n  shell: cmd\n  script: x\n  timeout: 1s\n"
	for _, tt := range tests {
		m, err := ParseManifestJSON([]byte(tt.json))
		if err != nil || m.Version != tt.want {
			t.Errorf("JSON %s: version %q, %v; want %q", tt.json, m.Version, err, tt.want)
		}
		m, err = ParseManifestYAML([]byte(tt.yaml + yamlRest))
		if err != nil || m.Version != tt.want {
			t.Errorf("YAML %q: version %q, %v; want %q", tt.yaml, m.Version, err, tt.want)
		}
	}
	if _, err := ParseManifestJSON([]byte(`{"id":"j","version":true,` + exec + `}`)); err == nil ||
		!strings.Contains(err.Error(), "version must be a string, got true") {
		t.Errorf("boolean version: %v", err)
	}
}

func TestManifestValidate(t *testing.T) {
	valid := func() Manifest {
		return Manifest{ID: "job-1", Version: "1", Execute: Execute{Shell: ShellPowerShell, Script: "echo", Timeout: "30s"}}
	}
	tests := []struct {
		name    string
		mutate  func(*Manifest)
		wantErr string
	}{
		{"valid", func(*Manifest) {}, ""},
		{"valid run_as and inventory", func(m *Manifest) {
			m.Execute.RunAs = RunAsSystemGUI
			m.Inventory = &InventoryHint{Display: []DisplayField{{Field: "a", Label: "A", Type: DisplayTimestamp}}, Summary: []DisplayField{{Field: "a", Label: "A"}}}
		}, ""},
		{"empty id", func(m *Manifest) { m.ID = "" }, `invalid job id "": must not be empty`},
		{"dotted id", func(m *Manifest) { m.ID = "a.b" }, `invalid job id "a.b": must match [A-Za-z0-9_=-]+ (no spaces, '.', '*', '>')`},
		{"no version", func(m *Manifest) { m.Version = " " }, `version is required`},
		{"no shell", func(m *Manifest) { m.Execute.Shell = "" }, `execute.shell is required ("powershell" or "cmd")`},
		{"bad shell", func(m *Manifest) { m.Execute.Shell = "bash" }, `unknown shell "bash"`},
		{"uppercase shell", func(m *Manifest) { m.Execute.Shell = "PowerShell" }, `unknown shell "PowerShell"`},
		{"no script", func(m *Manifest) { m.Execute.Script = "\n" }, `execute.script is required`},
		{"no timeout", func(m *Manifest) { m.Execute.Timeout = "" }, `invalid timeout: empty duration (expected e.g. "30s", "5m", "1h 30m")`},
		{"bad timeout", func(m *Manifest) { m.Execute.Timeout = "5x" }, `invalid timeout: unknown unit "x" in "5x"`},
		{"zero timeout", func(m *Manifest) { m.Execute.Timeout = "0s" }, `invalid timeout: "0s" is shorter than 1s`},
		{"bad run_as", func(m *Manifest) { m.Execute.RunAs = "admin" }, `unknown run_as "admin"`},
		{"empty display", func(m *Manifest) { m.Inventory = &InventoryHint{} }, `inventory.display must not be empty`},
		{"display without field", func(m *Manifest) { m.Inventory = &InventoryHint{Display: []DisplayField{{Label: "x"}}} }, `inventory.display[0].field is required`},
		{"bad display type", func(m *Manifest) {
			m.Inventory = &InventoryHint{Display: []DisplayField{{Field: "a"}}, Summary: []DisplayField{{Field: "a", Type: "date"}}}
		}, `inventory.summary[0].type: unknown type "date" (want number, bytes or timestamp)`},
	}
	for _, tt := range tests {
		m := valid()
		tt.mutate(&m)
		err := m.Validate()
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: unexpected error %v", tt.name, err)
		case tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr):
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.wantErr)
		}
	}
}

func TestManifestNewCommand(t *testing.T) {
	m := Manifest{ID: "inventory-hw", Version: "0.1.0", Execute: Execute{Shell: ShellPowerShell, Script: "s", Timeout: "1m 30s", Cwd: "~"}}
	c, err := m.NewCommand("req", ptr("exec"), ptr(uint64(30)))
	if err != nil {
		t.Fatal(err)
	}
	want := Command{ID: "inventory-hw", Version: "0.1.0", RequestID: "req", JobID: ptr("exec"), Shell: ShellPowerShell, Script: "s", TimeoutSecs: 90, JitterSecs: ptr(uint64(30)), RunAs: RunAsSystem, Cwd: "~"}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("NewCommand\n got %+v\nwant %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("command invalid: %v", err)
	}
	m.Execute.Timeout = "soon"
	if _, err := m.NewCommand("req", nil, nil); err == nil || !strings.HasPrefix(err.Error(), "invalid timeout: ") {
		t.Errorf("bad timeout: %v", err)
	}
}

func TestCommandValidate(t *testing.T) {
	tests := []struct {
		c       Command
		wantErr string
	}{
		{Command{ID: AdhocJobID, Version: AdhocVersion, RequestID: "r", Shell: ShellCmd}, ""},
		{Command{ID: "a b", RequestID: "r", Shell: ShellCmd}, `invalid job id "a b": must match [A-Za-z0-9_=-]+ (no spaces, '.', '*', '>')`},
		{Command{ID: "j", Shell: ShellCmd}, `request_id is required`},
		{Command{ID: "j", RequestID: "r", Shell: "sh"}, `unknown shell "sh"`},
		{Command{ID: "j", RequestID: "r", Shell: ShellCmd, RunAs: "root"}, `unknown run_as "root"`},
	}
	for _, tt := range tests {
		err := tt.c.Validate()
		if (tt.wantErr == "" && err != nil) || (tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr)) {
			t.Errorf("%+v: error %v, want %q", tt.c, err, tt.wantErr)
		}
	}
}

func TestFanoutPlanValidate(t *testing.T) {
	tests := []struct {
		name    string
		plan    FanoutPlan
		wantErr string
	}{
		{"all", FanoutPlan{Target: Target{All: true}}, ""},
		{"groups", FanoutPlan{Target: Target{Groups: []string{"canary", "dept=eng"}}}, ""},
		{"waves only", FanoutPlan{Rollout: &Rollout{Waves: []Wave{{Group: "canary"}, {Group: "rest", Delay: "1h"}}}}, ""},
		{"nothing", FanoutPlan{}, `target must specify at least one of all / groups / pcs (or set rollout.waves)`},
		{"empty lists", FanoutPlan{Target: Target{Groups: []string{}, Pcs: []string{}}}, `target must specify at least one of all / groups / pcs (or set rollout.waves)`},
		{"rollout without waves", FanoutPlan{Rollout: &Rollout{Strategy: RolloutWave}}, `target must specify at least one of all / groups / pcs (or set rollout.waves)`},
		{"bad jitter", FanoutPlan{Target: Target{All: true}, Jitter: ptr(Duration("5 minutes later"))}, `invalid jitter: expected a number at "later" in "5 minutes later"`},
		{"empty jitter", FanoutPlan{Target: Target{All: true}, Jitter: ptr(Duration(""))}, `invalid jitter: empty duration (expected e.g. "30s", "5m", "1h 30m")`},
		{"bad delay", FanoutPlan{Rollout: &Rollout{Waves: []Wave{{Group: "a", Delay: "0s"}, {Group: "b", Delay: "-5m"}}}}, `invalid rollout.waves[1].delay: negative duration "-5m" is not allowed`},
		{"bad strategy", FanoutPlan{Target: Target{All: true}, Rollout: &Rollout{Strategy: "canary"}}, `invalid rollout.strategy: "canary" is not supported (only "wave")`},
		{"bad wave group", FanoutPlan{Rollout: &Rollout{Waves: []Wave{{Group: "a.b"}}}}, `rollout.waves[0]: invalid group "a.b": must match [A-Za-z0-9_=-]+ (no spaces, '.', '*', '>')`},
		{"bad group", FanoutPlan{Target: Target{Groups: []string{"a b"}}}, `invalid group "a b": must match [A-Za-z0-9_=-]+ (no spaces, '.', '*', '>')`},
		{"wildcard pc", FanoutPlan{Target: Target{Pcs: []string{"PC-1", "*"}}}, `invalid pc_id "*": must match [A-Za-z0-9_=-]+ (no spaces, '.', '*', '>')`},
		{"empty pc", FanoutPlan{Target: Target{Pcs: []string{""}}}, `invalid pc_id "": must not be empty`},
	}
	for _, tt := range tests {
		err := tt.plan.Validate()
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: unexpected error %v", tt.name, err)
		case tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr):
			t.Errorf("%s: error %v\nwant %q", tt.name, err, tt.wantErr)
		}
	}
	if err := (&FanoutPlan{}).Validate(); !errors.Is(err, ErrTargetUnspecified) {
		t.Errorf("unspecified target does not match ErrTargetUnspecified")
	}
	if err := (&FanoutPlan{Target: Target{Pcs: []string{"a.b"}}}).Validate(); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("bad pc does not match ErrInvalidToken")
	}
}

func TestJitterSecsTruncates(t *testing.T) {
	p := FanoutPlan{Jitter: ptr(Duration("1m 30s 999ms"))}
	js, err := p.JitterSecs()
	if err != nil || js == nil || *js != 90 {
		t.Errorf("JitterSecs = %v, %v; want 90", js, err)
	}
}

func TestTargetSubjects(t *testing.T) {
	tg := Target{All: true, Groups: []string{"canary", "wave1"}, Pcs: []string{"PC-1"}}
	want := []string{"commands.all", "commands.group.canary", "commands.group.wave1", "commands.pc.PC-1"}
	if got := tg.Subjects(); !reflect.DeepEqual(got, want) {
		t.Errorf("Subjects = %v, want %v", got, want)
	}
	if (Target{}).Specified() || !(Target{Pcs: []string{"a"}}).Specified() || !(Target{All: true}).Specified() {
		t.Errorf("Specified is wrong")
	}
}

func TestScheduleValidate(t *testing.T) {
	valid := func() Schedule {
		return Schedule{ID: "daily", Cron: "0 0 * * * *", JobID: "job", FanoutPlan: FanoutPlan{Target: Target{All: true}}, Enabled: true}
	}
	tests := []struct {
		name    string
		mutate  func(*Schedule)
		wantErr string
	}{
		{"valid", func(*Schedule) {}, ""},
		{"valid everything", func(s *Schedule) {
			s.TZ, s.Mode, s.Cooldown, s.StartingDeadline = "America/New_York", ModeOncePerPC, ptr(Duration("1d")), ptr(Duration("5m"))
		}, ""},
		{"bad id", func(s *Schedule) { s.ID = "my schedule" }, `invalid schedule id "my schedule": must match [A-Za-z0-9_=-]+ (no spaces, '.', '*', '>')`},
		{"bad job id", func(s *Schedule) { s.JobID = "" }, `invalid job id "": must not be empty`},
		{"bad cron", func(s *Schedule) { s.Cron = "x" }, `cron "x": expected 5, 6 or 7 fields, got 1 (seconds-first: sec min hour day-of-month month day-of-week [year])`},
		{"no cron", func(s *Schedule) { s.Cron = "" }, `cron "": empty expression (expected e.g. "0 0 * * * *" or "@hourly")`},
		{"bad tz", func(s *Schedule) { s.TZ = "Mars/Olympus" }, `unknown time zone "Mars/Olympus"`},
		{"bad mode", func(s *Schedule) { s.Mode = "once" }, `unknown mode "once" (want every_tick, once_per_pc or once_per_target)`},
		{"bad cooldown", func(s *Schedule) { s.Cooldown = ptr(Duration("1 fortnight")) }, `invalid cooldown: unknown unit "fortnight" in "1 fortnight"`},
		{"bad deadline", func(s *Schedule) { s.StartingDeadline = ptr(Duration("10")) }, `invalid starting_deadline: missing unit after "10" in "10" (e.g. "10s")`},
		{"no target", func(s *Schedule) { s.Target = Target{} }, `target must specify at least one of all / groups / pcs (or set rollout.waves)`},
		{"bad jitter", func(s *Schedule) { s.Jitter = ptr(Duration("1.5m")) }, `invalid jitter: fractions are not allowed in "1.5m": use a smaller unit (e.g. "1m 30s" for 1.5m)`},
	}
	for _, tt := range tests {
		s := valid()
		tt.mutate(&s)
		err := s.Validate()
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: unexpected error %v", tt.name, err)
		case tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr):
			t.Errorf("%s: error %v\nwant %q", tt.name, err, tt.wantErr)
		}
	}
}

func TestParseScheduleKeepsInvalidValue(t *testing.T) {
	s, err := ParseScheduleJSON([]byte(`{"id":"s","cron":"bad","job_id":"j","target":{"all":true}}`))
	if err == nil {
		t.Fatal("invalid cron accepted")
	}
	if s.ID != "s" || s.Cron != "bad" {
		t.Errorf("decoded schedule not returned with the validation error: %+v", s)
	}
	if _, err := ParseScheduleJSON([]byte(`{"id":`)); err == nil || !strings.HasPrefix(err.Error(), "malformed JSON") {
		t.Errorf("syntax error: %v", err)
	}
	if _, err := ParseScheduleJSON(nil); err == nil || err.Error() != "empty body" {
		t.Errorf("empty body: %v", err)
	}
}

func TestScheduleDurations(t *testing.T) {
	s := Schedule{Cooldown: ptr(Duration("1h"))}
	if d, set, err := s.CooldownDuration(); d != time.Hour || !set || err != nil {
		t.Errorf("CooldownDuration = %v %v %v", d, set, err)
	}
	if d, set, err := s.StartingDeadlineDuration(); d != 0 || set || err != nil {
		t.Errorf("StartingDeadlineDuration = %v %v %v", d, set, err)
	}
	if (&Schedule{}).EffectiveMode() != ModeEveryTick {
		t.Errorf("EffectiveMode default")
	}
	// The flattened plan's helpers are reachable on the schedule.
	s.Jitter = ptr(Duration("2m"))
	if js, err := s.JitterSecs(); err != nil || *js != 120 {
		t.Errorf("JitterSecs = %v %v", js, err)
	}
}

func TestConfigScopeValidate(t *testing.T) {
	tests := []struct {
		c       ConfigScope
		wantErr string
	}{
		{ConfigScope{}, ""},
		{ConfigScope{TargetVersion: ptr("0.21.2"), TargetVersionJitter: ptr(Duration("0s")), HeartbeatInterval: ptr(Duration("1m"))}, ""},
		{ConfigScope{HeartbeatInterval: ptr(Duration("fast"))}, `invalid heartbeat_interval: expected a number at "fast" in "fast"`},
		{ConfigScope{HeartbeatInterval: ptr(Duration("0s"))}, `invalid heartbeat_interval: "0s" is shorter than 1s`},
		{ConfigScope{TargetVersionJitter: ptr(Duration("5"))}, `invalid target_version_jitter: missing unit after "5" in "5" (e.g. "5s")`},
		{ConfigScope{TargetVersion: ptr("")}, `invalid target_version: must not be empty (omit it to unset)`},
	}
	for _, tt := range tests {
		err := tt.c.Validate()
		if (tt.wantErr == "" && err != nil) || (tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr)) {
			t.Errorf("%+v: error %v, want %q", tt.c, err, tt.wantErr)
		}
	}
}

func TestResolveEffectiveConfig(t *testing.T) {
	tests := []struct {
		name         string
		global       *ConfigScope
		groups       map[string]ConfigScope
		pc           *ConfigScope
		want         EffectiveConfig
		wantWarnings []string
	}{
		{
			name: "built-ins",
			want: EffectiveConfig{TargetVersionJitter: "0s", HeartbeatInterval: "30s"},
		},
		{
			name:   "global overrides built-ins",
			global: &ConfigScope{TargetVersion: ptr("1.0"), HeartbeatInterval: ptr(Duration("1m"))},
			want:   EffectiveConfig{TargetVersion: ptr("1.0"), TargetVersionJitter: "0s", HeartbeatInterval: "1m"},
		},
		{
			name:   "group overrides global, pc overrides group",
			global: &ConfigScope{TargetVersion: ptr("1.0"), TargetVersionJitter: ptr(Duration("10m"))},
			groups: map[string]ConfigScope{"canary": {TargetVersion: ptr("1.1")}},
			pc:     &ConfigScope{TargetVersionJitter: ptr(Duration("0s"))},
			want:   EffectiveConfig{TargetVersion: ptr("1.1"), TargetVersionJitter: "0s", HeartbeatInterval: "30s"},
		},
		{
			name: "later group in alphabetical order wins, with a warning",
			groups: map[string]ConfigScope{
				"zeta":  {HeartbeatInterval: ptr(Duration("3m"))},
				"alpha": {HeartbeatInterval: ptr(Duration("1m")), TargetVersion: ptr("2.0")},
				"mid":   {HeartbeatInterval: ptr(Duration("2m"))},
			},
			want: EffectiveConfig{TargetVersion: ptr("2.0"), TargetVersionJitter: "0s", HeartbeatInterval: "3m"},
			wantWarnings: []string{
				`heartbeat_interval is set by several groups (alpha, mid, zeta); "zeta" wins as the last in alphabetical order`,
			},
		},
		{
			name: "pc still wins over conflicting groups",
			groups: map[string]ConfigScope{
				"a": {TargetVersion: ptr("1")},
				"b": {TargetVersion: ptr("2")},
			},
			pc:   &ConfigScope{TargetVersion: ptr("3")},
			want: EffectiveConfig{TargetVersion: ptr("3"), TargetVersionJitter: "0s", HeartbeatInterval: "30s"},
			wantWarnings: []string{
				`target_version is set by several groups (a, b); "b" wins as the last in alphabetical order`,
			},
		},
		{
			name:   "empty group scopes set nothing",
			global: &ConfigScope{HeartbeatInterval: ptr(Duration("45s"))},
			groups: map[string]ConfigScope{"a": {}, "b": {}},
			want:   EffectiveConfig{TargetVersionJitter: "0s", HeartbeatInterval: "45s"},
		},
	}
	for _, tt := range tests {
		got, warnings := ResolveEffectiveConfig(tt.global, tt.groups, tt.pc)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, mustJSON(t, got), mustJSON(t, tt.want))
		}
		if warnings == nil {
			t.Errorf("%s: warnings is nil, want a non-nil slice", tt.name)
		}
		if len(warnings) != len(tt.wantWarnings) || (len(warnings) > 0 && !reflect.DeepEqual(warnings, tt.wantWarnings)) {
			t.Errorf("%s: warnings\n got %q\nwant %q", tt.name, warnings, tt.wantWarnings)
		}
	}
	// The result does not alias the caller's scopes.
	global := &ConfigScope{TargetVersion: ptr("1.0")}
	got, _ := ResolveEffectiveConfig(global, nil, nil)
	*global.TargetVersion = "changed"
	if *got.TargetVersion != "1.0" {
		t.Errorf("effective config aliases the global scope")
	}
}

func TestAgentGroupsDecode(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{`{"groups":["canary","dept-eng"]}`, []string{"canary", "dept-eng"}},
		{`{"groups":["b","a","b"]}`, []string{"a", "b"}},
		{`["wave1","canary","canary"]`, []string{"canary", "wave1"}},
		{` [ ] `, []string{}},
		{`{"groups":null}`, []string{}},
		{`{}`, []string{}},
		{`null`, []string{}},
		{``, []string{}},
		{`{"groups":[""," x"]}`, []string{" x"}},
	}
	for _, tt := range tests {
		g, err := ParseAgentGroups([]byte(tt.in))
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if g.Groups == nil || !reflect.DeepEqual(g.Groups, tt.want) {
			t.Errorf("%q: groups %#v, want %#v", tt.in, g.Groups, tt.want)
		}
	}
	if _, err := ParseAgentGroups([]byte(`"canary"`)); err == nil {
		t.Errorf("a bare string was accepted")
	}
	g := AgentGroups{Groups: []string{"a", "b"}}
	if !g.Contains("b") || g.Contains("c") {
		t.Errorf("Contains is wrong")
	}
	if got := NormalizeGroups(nil); got == nil || len(got) != 0 {
		t.Errorf("NormalizeGroups(nil) = %#v", got)
	}
	in := []string{"b", "a"}
	NormalizeGroups(in)
	if in[0] != "b" {
		t.Errorf("NormalizeGroups modified its argument")
	}
}

func TestAuditEventSubject(t *testing.T) {
	tests := []struct {
		e    AuditEvent
		want string
	}{
		{AuditEvent{Actor: ActorOperator, Action: ActionExec, Target: ptr("inventory-hw")}, "audit.operator.exec.inventory-hw"},
		{AuditEvent{Actor: ActorScheduler, Action: ActionScheduleCompleted}, "audit.scheduler.schedule_completed"},
		{AuditEvent{Actor: ActorOperator, Action: ActionConfigPut, Target: ptr("")}, "audit.operator.config_put"},
		{AuditEvent{Actor: ActorOperator, Action: ActionReleaseDelete, Target: ptr("1.2.0")}, "audit.operator.release_delete.1_2_0"},
		{AuditEvent{Actor: ActorOperator, Action: ActionConfigPut, Target: ptr("groups.canary")}, "audit.operator.config_put.groups_canary"},
		{AuditEvent{Actor: ActorOperator, Action: ActionGroupsPut, Target: ptr("a b*>\tc")}, "audit.operator.groups_put.a_b___c"},
		{AuditEvent{Actor: ActorOperator, Action: ActionJobUpsert, Target: ptr("ジョブ=1")}, "audit.operator.job_upsert.___=1"},
		{AuditEvent{}, "audit._._"},
	}
	for _, tt := range tests {
		if got := tt.e.Subject(); got != tt.want {
			t.Errorf("Subject(%v/%v/%v) = %q, want %q", tt.e.Actor, tt.e.Action, tt.e.Target, got, tt.want)
		}
	}
}

func TestAuditEventPayload(t *testing.T) {
	var e AuditEvent
	in := `{"actor":"operator","action":"exec","target":null,"payload":{"seq":12345678901234567890,"sub":"alice"},"occurred_at":"2026-05-20T03:00:00Z"}`
	if err := json.Unmarshal([]byte(in), &e); err != nil {
		t.Fatal(err)
	}
	if got := mustJSON(t, e); !strings.Contains(got, `"seq":12345678901234567890`) {
		t.Errorf("payload number lost precision: %s", got)
	}
	e.SetPayloadDefault("sub", "bob")
	e.SetPayloadDefault("source", "cli")
	if e.Payload["sub"] != "alice" || e.Payload["source"] != "cli" {
		t.Errorf("SetPayloadDefault: %v", e.Payload)
	}
	var empty AuditEvent
	empty.SetPayloadDefault("k", 1)
	if empty.Payload["k"] != 1 {
		t.Errorf("SetPayloadDefault on nil payload: %v", empty.Payload)
	}
}

func TestValidateToken(t *testing.T) {
	tests := []struct {
		kind, s, wantErr string
	}{
		{"job id", "inventory-hw", ""},
		{"pc_id", "PC-0042", ""},
		{"group", "dept=eng_1", ""},
		{"job id", strings.Repeat("a", MaxTokenLen), ""},
		{"job id", "", `invalid job id "": must not be empty`},
		{"job id", "a.b", `invalid job id "a.b": must match [A-Za-z0-9_=-]+ (no spaces, '.', '*', '>')`},
		{"group", "a b", `invalid group "a b": must match [A-Za-z0-9_=-]+ (no spaces, '.', '*', '>')`},
		{"pc_id", "pc>", `invalid pc_id "pc>": must match [A-Za-z0-9_=-]+ (no spaces, '.', '*', '>')`},
		{"pc_id", "*", `invalid pc_id "*": must match [A-Za-z0-9_=-]+ (no spaces, '.', '*', '>')`},
		{"schedule id", "é", `invalid schedule id "é": must match [A-Za-z0-9_=-]+ (no spaces, '.', '*', '>')`},
		{"job id", strings.Repeat("a", MaxTokenLen+1), `invalid job id "` + strings.Repeat("a", 32) + `...": longer than 200 bytes`},
	}
	for _, tt := range tests {
		err := ValidateToken(tt.kind, tt.s)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("ValidateToken(%q, %q): %v", tt.kind, tt.s, err)
			}
			continue
		}
		if err == nil || err.Error() != tt.wantErr {
			t.Errorf("ValidateToken(%q, %q) = %v, want %q", tt.kind, tt.s, err, tt.wantErr)
		}
		if !errors.Is(err, ErrInvalidToken) {
			t.Errorf("ValidateToken(%q, %q) error does not match ErrInvalidToken", tt.kind, tt.s)
		}
	}
}

func TestSubjectsAndKeys(t *testing.T) {
	tests := []struct{ got, want string }{
		{SubjectCommandsAll, "commands.all"},
		{CommandsGroupSubject("canary"), "commands.group.canary"},
		{CommandsPCSubject("PC-1"), "commands.pc.PC-1"},
		{ResultsSubject("r-1"), "results.r-1"},
		{HeartbeatSubject("PC-1"), "heartbeat.PC-1"},
		{KillSubject("e-1"), "kill.e-1"},
		{LogsFetchSubject("PC-1"), "logs.fetch.PC-1"},
		{SubjectHeartbeatAll, "heartbeat.>"},
		{SubjectResultsAll, "results.>"},
		{SubjectAuditAll, "audit.>"},
		{ConfigKeyGlobal, "global"},
		{ConfigKeyGroup("canary"), "groups.canary"},
		{ConfigKeyPC("PC-1"), "pcs.PC-1"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestDurationJSON(t *testing.T) {
	var e Execute
	err := json.Unmarshal([]byte(`{"shell":"cmd","script":"x","timeout":30}`), &e)
	if err == nil || !strings.Contains(err.Error(), `expected a duration string such as "30s" or "5m", got 30`) {
		t.Errorf("numeric timeout: %v", err)
	}
	if d, err := Duration("2w").Parse(); err != nil || d != 14*24*time.Hour {
		t.Errorf("Parse = %v, %v", d, err)
	}
}

func TestEnums(t *testing.T) {
	for _, s := range []Shell{ShellPowerShell, ShellCmd} {
		if !s.Valid() {
			t.Errorf("%q invalid", s)
		}
	}
	for _, r := range []RunAs{RunAsSystem, RunAsUser, RunAsSystemGUI} {
		if !r.Valid() {
			t.Errorf("%q invalid", r)
		}
	}
	for _, m := range []ScheduleMode{ModeEveryTick, ModeOncePerPC, ModeOncePerTarget} {
		if !m.Valid() {
			t.Errorf("%q invalid", m)
		}
	}
	if Shell("").Valid() || Shell("bash").Valid() || RunAs("").Valid() || ScheduleMode("").Valid() {
		t.Errorf("empty or unknown values must be invalid")
	}
}
