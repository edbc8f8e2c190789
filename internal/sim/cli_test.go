package sim_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"kanade-backend/internal/sim"
	"kanade-backend/messages"
)

func noEnv(string) string { return "" }

// --assign-groups writes agent_groups as an operator would (wrapper form,
// merged with what is there) and exits without running agents.
func TestAssignGroupsCommand(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	putKV(t, b, messages.BucketAgentGroups, "SIM-0001", `{"groups":["pilot"]}`)
	putKV(t, b, messages.BucketAgentGroups, "SIM-0002", `["legacy"]`)
	args := []string{"--nats-url", b.ClientURL(), "--agents", "20", "--assign-groups", "canary=5%,wave1=45%"}

	var out, errOut bytes.Buffer
	if code := sim.Run(context.Background(), args, noEnv, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if want := "canary: 1 PCs (SIM-0001..SIM-0001)\nwave1: 9 PCs (SIM-0002..SIM-0010)\n"; out.String() != want {
		t.Fatalf("stdout = %q, want %q", out.String(), want)
	}
	kv := b.KV(t, messages.BucketAgentGroups)
	ctx := context.Background()
	want := map[string]string{
		"SIM-0001": `{"groups":["canary","pilot"]}`,
		"SIM-0002": `{"groups":["legacy","wave1"]}`,
		"SIM-0010": `{"groups":["wave1"]}`,
	}
	revs := map[string]uint64{}
	for key, v := range want {
		e, err := kv.Get(ctx, key)
		if err != nil {
			t.Fatalf("get %s: %v", key, err)
		}
		if string(e.Value()) != v {
			t.Fatalf("agent_groups[%s] = %s, want %s", key, e.Value(), v)
		}
		revs[key] = e.Revision()
	}
	if _, err := kv.Get(ctx, "SIM-0011"); err == nil {
		t.Fatal("SIM-0011 got a group")
	}

	// Running it again changes nothing.
	out.Reset()
	if code := sim.Run(context.Background(), args, noEnv, &out, &errOut); code != 0 {
		t.Fatalf("second run: exit %d: %s", code, errOut.String())
	}
	for key, rev := range revs {
		if e, _ := kv.Get(ctx, key); e.Revision() != rev {
			t.Fatalf("agent_groups[%s] rewritten by an idempotent run", key)
		}
	}
}

func TestRunUntilCancelled(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(1500*time.Millisecond, cancel)
	var out, errOut bytes.Buffer
	code := sim.Run(ctx, []string{"--agents", "3", "--heartbeat", "200ms", "--prefix", "LAB-", "--seed", "7"},
		func(k string) string {
			if k == sim.EnvNATSURL {
				return b.ClientURL()
			}
			return ""
		}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	line := out.String()
	if !strings.HasPrefix(line, "kanade-fleet: agents=3 heartbeats=") || strings.HasPrefix(line, "kanade-fleet: agents=3 heartbeats=0 ") ||
		!strings.Contains(line, "commands_received=0 results_sent=0 dropped_pin_revoke=0") {
		t.Fatalf("summary = %q", line)
	}
	if !strings.Contains(errOut.String(), "first=LAB-0001") || !strings.Contains(errOut.String(), "seed=7") {
		t.Fatalf("log = %s", errOut.String())
	}
}

func TestStopAfter(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	var out, errOut bytes.Buffer
	t0 := time.Now()
	code := sim.Run(context.Background(), []string{"--nats-url", b.ClientURL(), "--agents", "2", "--stop-after", "300ms"}, noEnv, &out, &errOut)
	if code != 0 || !strings.HasPrefix(out.String(), "kanade-fleet: agents=2 ") {
		t.Fatalf("exit %d, stdout %q, stderr %s", code, out.String(), errOut.String())
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestParseArgs(t *testing.T) {
	env := map[string]string{sim.EnvNATSToken: "s3cret"}
	o, err := sim.ParseArgs([]string{"--agents", "5", "--run-time", "1s..3s", "--heartbeat", "1m", "--fail-rate", "0.1",
		"--os-family", "linux", "--agent-version", "0.22.0", "--log-level", "debug"}, func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.NATSURL != "nats://127.0.0.1:4222" || o.Token != "s3cret" || o.Agents != 5 || o.Heartbeat != time.Minute ||
		o.RunTime != (sim.Range{Min: time.Second, Max: 3 * time.Second}) || o.FailRate != 0.1 || o.OSFamily != "linux" ||
		o.AgentVersion != "0.22.0" || o.LogLevel.String() != "DEBUG" || o.Prefix != "SIM-" || o.ConnectTimeout != 10*time.Second {
		t.Fatalf("options = %+v", o)
	}
	bad := [][]string{
		{"--agents", "0"},
		{"--run-time", "2s..1s"},
		{"--heartbeat", "0s"},
		{"--os-family", "beos"},
		{"--fail-rate", "2"},
		{"--assign-groups", "canary"},
		{"--prefix", "a.b"},
		{"--log-level", "loud"},
		{"--connect-timeout", "0s"},
		{"--connect-timeout", "soon"},
		{"extra"},
	}
	for _, args := range bad {
		var errOut bytes.Buffer
		if code := sim.Run(context.Background(), args, noEnv, &bytes.Buffer{}, &errOut); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errOut.String())
		}
	}
}
