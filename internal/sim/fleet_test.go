package sim_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"kanade-backend/cmd/kanade-backend/app"
	"kanade-backend/internal/apptest"
	"kanade-backend/internal/sim"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
)

// 50 agents against a running backend: a stock subscriber on heartbeat.>
// sees every pc_id within 3 s, with the fields the heartbeat projector
// needs. The backend requires a NATS token, as it does for real agents.
func TestHeartbeatsReachBackend(t *testing.T) {
	t.Parallel()
	const token = "agent-secret"
	b := apptest.Start(t, apptest.Options{Configure: func(c *app.Config) { c.NATS.Token = token }})

	nc, err := nats.Connect(b.NATSURL, nats.Token(token))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var mu sync.Mutex
	seen := map[string]map[string]any{}
	sub, err := nc.Subscribe(messages.SubjectHeartbeatAll, func(m *nats.Msg) {
		var hb map[string]any
		if err := json.Unmarshal(m.Data, &hb); err != nil {
			t.Errorf("undecodable heartbeat on %s: %v", m.Subject, err)
			return
		}
		mu.Lock()
		seen[strings.TrimPrefix(m.Subject, "heartbeat.")] = hb
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, err := sim.Start(ctx, sim.Config{NATSURL: b.NATSURL, Token: token, Agents: 50, Heartbeat: time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop(ctx)

	testsupport.Eventually(t, 3*time.Second-time.Since(start), func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) < 50 {
			return fmt.Errorf("%d distinct pc_ids", len(seen))
		}
		return nil
	})
	t.Logf("50 agents seen after %v", time.Since(start).Round(time.Millisecond))
	mu.Lock()
	defer mu.Unlock()
	for _, id := range f.PCIDs() {
		hb := seen[id]
		if hb == nil {
			t.Fatalf("no heartbeat from %s", id)
		}
		if hb["pc_id"] != id || hb["agent_version"] != sim.DefaultAgentVersion || hb["os_family"] != "windows" ||
			hb["hostname"] == nil || hb["at"] == nil {
			t.Fatalf("heartbeat of %s = %v", id, hb)
		}
		if _, err := time.Parse(time.RFC3339Nano, hb["at"].(string)); err != nil {
			t.Fatalf("heartbeat at: %v", err)
		}
	}
}

func TestCommandToOnePC(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	startFleet(t, b, sim.Config{Agents: 10})
	res := watchResults(t, b.Conn)

	t.Run("exit code", func(t *testing.T) {
		cmd := command("inv-hw", "1.0.0", "exit 3")
		publish(t, b.Conn, messages.CommandsPCSubject("SIM-0007"), cmd)
		r := res.next(t, 5*time.Second)
		if r.RequestID != cmd.RequestID || r.PcID != "SIM-0007" || r.ExitCode != 3 ||
			r.ManifestID == nil || *r.ManifestID != cmd.ID {
			t.Fatalf("result = %+v", r)
		}
		if r.StartedAt.IsZero() || r.FinishedAt.Before(r.StartedAt) {
			t.Fatalf("times: started %v finished %v", r.StartedAt, r.FinishedAt)
		}
		res.none(t, 200*time.Millisecond) // exactly one result
	})

	t.Run("timeout", func(t *testing.T) {
		cmd := command("slow", "1.0.0", "echo begin\nsleep 5s\necho never")
		cmd.TimeoutSecs = 1
		t0 := time.Now()
		publish(t, b.Conn, messages.CommandsPCSubject("SIM-0007"), cmd)
		r := res.next(t, 3*time.Second)
		took := time.Since(t0)
		if r.RequestID != cmd.RequestID || r.ExitCode != -1 || r.Stderr != "timeout after 1s" || r.Stdout != "begin\n" {
			t.Fatalf("result = %+v", r)
		}
		// The upper bound leaves room for a loaded CI machine.
		if took < time.Second || took > 3*time.Second {
			t.Fatalf("timed out after %v, want about 1s", took)
		}
	})

	t.Run("kill", func(t *testing.T) {
		cmd := command("long", "1.0.0", "sleep 30s")
		publish(t, b.Conn, messages.CommandsPCSubject("SIM-0007"), cmd)
		waitRunning(t, b.Conn, "SIM-0007", cmd.RequestID)
		t0 := time.Now()
		if err := b.Conn.Publish(messages.KillSubject(*cmd.JobID), nil); err != nil {
			t.Fatal(err)
		}
		r := res.next(t, time.Second)
		want := "killed by remote signal (kill." + *cmd.JobID + ")"
		if r.RequestID != cmd.RequestID || r.ExitCode != -1 || r.Stderr != want {
			t.Fatalf("result = %+v, want stderr %q", r, want)
		}
		t.Logf("killed result after %v", time.Since(t0).Round(time.Millisecond))
	})

	t.Run("kill of another exec", func(t *testing.T) {
		cmd := command("short", "1.0.0", "sleep 300ms\nexit 0")
		publish(t, b.Conn, messages.CommandsPCSubject("SIM-0007"), cmd)
		waitRunning(t, b.Conn, "SIM-0007", cmd.RequestID)
		if err := b.Conn.Publish(messages.KillSubject(uuid.NewString()), nil); err != nil {
			t.Fatal(err)
		}
		if r := res.next(t, 2*time.Second); r.ExitCode != 0 {
			t.Fatalf("result = %+v", r)
		}
	})

	t.Run("unknown pc", func(t *testing.T) {
		publish(t, b.Conn, messages.CommandsPCSubject("SIM-0011"), command("x", "1", "exit 0"))
		publish(t, b.Conn, messages.CommandsPCSubject("OTHER-1"), command("x", "1", "exit 0"))
		res.none(t, 200*time.Millisecond)
	})
}

// waitRunning waits until the agent's log says it received the request,
// read through logs.fetch as the backend would.
func waitRunning(t *testing.T, nc *nats.Conn, pcID, requestID string) {
	t.Helper()
	testsupport.Eventually(t, 2*time.Second, func() error {
		m, err := nc.Request(messages.LogsFetchSubject(pcID), []byte(`{"tail_lines":5}`), time.Second)
		if err != nil {
			return err
		}
		if !strings.Contains(string(m.Data), "received command") || !strings.Contains(string(m.Data), requestID) {
			return fmt.Errorf("log tail: %s", m.Data)
		}
		return nil
	})
}

// A revoked script and a version pinned to another version are dropped
// without any result. Commands to one agent are handled in order, so
// once a later probe's result is in, the earlier Command was surely
// dropped rather than slow.
func TestPinAndRevoke(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	f := startFleet(t, b, sim.Config{Agents: 3})
	res := watchResults(t, b.Conn)
	pc := messages.CommandsPCSubject("SIM-0002")
	probe := func() {
		t.Helper()
		p := command("probe", "1", "exit 0")
		publish(t, b.Conn, pc, p)
		if r := res.next(t, 5*time.Second); r.RequestID != p.RequestID {
			t.Fatalf("got result %+v before the probe's", r)
		}
	}

	// No pin: runs.
	cmd := command("patch", "1.0.0", "exit 0")
	publish(t, b.Conn, pc, cmd)
	if r := res.next(t, 5*time.Second); r.RequestID != cmd.RequestID {
		t.Fatalf("result = %+v", r)
	}

	putKV(t, b, messages.BucketScriptStatus, "patch", messages.ScriptStatusRevoked)
	publish(t, b.Conn, pc, command("patch", "1.0.0", "exit 0"))
	probe()

	putKV(t, b, messages.BucketScriptStatus, "patch", messages.ScriptStatusActive)
	putKV(t, b, messages.BucketScriptCurrent, "patch", "2.0.0")
	publish(t, b.Conn, pc, command("patch", "1.0.0", "exit 0"))
	probe()

	cmd = command("patch", "2.0.0", "exit 0")
	publish(t, b.Conn, pc, cmd)
	if r := res.next(t, 5*time.Second); r.RequestID != cmd.RequestID {
		t.Fatalf("pinned version did not run: %+v", r)
	}

	// A broadcast is dropped by every agent.
	putKV(t, b, messages.BucketScriptStatus, "patch", messages.ScriptStatusRevoked)
	publish(t, b.Conn, messages.SubjectCommandsAll, command("patch", "2.0.0", "exit 0"))
	probe()

	testsupport.Eventually(t, time.Second, func() error {
		if s := f.Stats(); s.DroppedRevoked != 4 || s.DroppedPin != 1 {
			return fmt.Errorf("stats %v", s)
		}
		return nil
	})
}

// The backend writes the pin and then publishes: the very next Command
// must see the new pin, every time.
func TestPinWrittenJustBeforePublish(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	startFleet(t, b, sim.Config{Agents: 2})
	res := watchResults(t, b.Conn)
	kv := b.KV(t, messages.BucketScriptCurrent)
	ctx := context.Background()
	for i := range 30 {
		v := fmt.Sprintf("1.0.%d", i)
		if _, err := kv.Put(ctx, "rolling", []byte(v)); err != nil {
			t.Fatal(err)
		}
		cmd := command("rolling", v, "exit 0")
		publish(t, b.Conn, messages.SubjectCommandsAll, cmd)
		for range 2 {
			if r := res.next(t, 5*time.Second); r.RequestID != cmd.RequestID {
				t.Fatalf("version %s: result %+v", v, r)
			}
		}
	}
}

// Group membership follows agent_groups live.
func TestGroupsFollowKV(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	putKV(t, b, messages.BucketAgentGroups, "SIM-0001", `{"groups":["wave1"]}`)
	startFleet(t, b, sim.Config{Agents: 5})
	res := watchResults(t, b.Conn)

	// Groups present at start are known before Start returns.
	cmd := command("g", "1", "exit 0")
	publish(t, b.Conn, messages.CommandsGroupSubject("wave1"), cmd)
	if r := res.next(t, 5*time.Second); r.PcID != "SIM-0001" || r.RequestID != cmd.RequestID {
		t.Fatalf("result = %+v", r)
	}

	// answers publishes a group Command, then a probe to the PC itself,
	// and reports whether the PC answered the group Command before the
	// probe (an agent handles its Commands in order).
	var probedAt time.Time // when the last probe's group Command went out
	// earlier holds the group Commands of the calls before: a call returns
	// on its own PC's probe, while other members may still be answering
	// its group Command, and the next call, for one of them, reads that
	// answer.
	earlier := map[string]bool{}
	answers := func(group, pcID string) bool {
		t.Helper()
		g := command("g", "1", "exit 0")
		defer func() { earlier[g.RequestID] = true }()
		probedAt = time.Now()
		publish(t, b.Conn, messages.CommandsGroupSubject(group), g)
		p := command("probe", "1", "exit 0")
		publish(t, b.Conn, messages.CommandsPCSubject(pcID), p)
		answered := false
		for {
			r := res.next(t, 5*time.Second)
			switch {
			case r.RequestID == g.RequestID && r.PcID == pcID:
				answered = true
			case earlier[r.RequestID]:
				// A late answer to an earlier call's group Command.
			case r.PcID != pcID:
				// Another member of the group, possibly answering an
				// earlier call; its result may come after the probe.
			case r.RequestID == p.RequestID:
				return answered
			default:
				t.Fatalf("unexpected result %+v", r)
			}
		}
	}

	// A group Command published at probedAt was already answered (or
	// ignored) as the new groups say: that moment must come within 1 s of
	// the change, which is what "answers within 1 s" asks.
	within1s := func(what string, changed time.Time) {
		t.Helper()
		if d := probedAt.Sub(changed); d > time.Second {
			t.Fatalf("%s only %v after its agent_groups key changed, want within 1 s", what, d.Round(time.Millisecond))
		}
		t.Logf("%s within %v", what, probedAt.Sub(changed).Round(time.Millisecond))
	}
	putKV(t, b, messages.BucketAgentGroups, "SIM-0003", `{"groups":["canary","wave1"]}`)
	t0 := time.Now()
	testsupport.Eventually(t, 5*time.Second, func() error {
		if !answers("canary", "SIM-0003") {
			return fmt.Errorf("SIM-0003 does not answer commands.group.canary")
		}
		return nil
	})
	within1s("SIM-0003 joined canary", t0)

	// A bare array (what upstream's scheduler expected) is tolerated.
	putKV(t, b, messages.BucketAgentGroups, "SIM-0003", `["wave1"]`)
	t0 = time.Now()
	testsupport.Eventually(t, 5*time.Second, func() error {
		if answers("canary", "SIM-0003") {
			return fmt.Errorf("SIM-0003 still answers commands.group.canary")
		}
		return nil
	})
	within1s("SIM-0003 left canary", t0)
	if !answers("wave1", "SIM-0003") {
		t.Fatal("SIM-0003 left wave1 too")
	}

	if err := b.KV(t, messages.BucketAgentGroups).Delete(context.Background(), "SIM-0001"); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	testsupport.Eventually(t, 5*time.Second, func() error {
		if answers("wave1", "SIM-0001") {
			return fmt.Errorf("SIM-0001 still answers after its key was deleted")
		}
		return nil
	})
	within1s("SIM-0001 left wave1 on the key's delete", t0)
	logs, err := b.Conn.Request(messages.LogsFetchSubject("SIM-0003"), []byte(`{"tail_lines":0}`), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logs.Data), "agent groups now [canary wave1]") {
		t.Fatalf("SIM-0003 log does not show its groups:\n%s", logs.Data)
	}
}

// commands.all reaches every agent; each answers once under the same
// request_id.
func TestBroadcast(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	f := startFleet(t, b, sim.Config{Agents: 20})
	res := watchResults(t, b.Conn)
	cmd := command("inventory", "1", `echo-json {"cpu":"x86_64","cores":8}`)
	publish(t, b.Conn, messages.SubjectCommandsAll, cmd)
	got := map[string]bool{}
	for range 20 {
		r := res.next(t, 5*time.Second)
		if r.RequestID != cmd.RequestID || r.ExitCode != 0 || r.Stdout != `{"cpu":"x86_64","cores":8}`+"\n" {
			t.Fatalf("result = %+v", r)
		}
		if got[r.PcID] {
			t.Fatalf("%s answered twice", r.PcID)
		}
		got[r.PcID] = true
	}
	res.none(t, 200*time.Millisecond)
	if s := f.Stats(); s.CommandsReceived != 20 || s.ResultsSent != 20 {
		t.Fatalf("stats %v", s)
	}
}

func TestScriptDirectives(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	startFleet(t, b, sim.Config{Agents: 1, RunTime: sim.Range{Min: 10 * time.Millisecond, Max: 20 * time.Millisecond}, FailRate: 1})
	res := watchResults(t, b.Conn)
	pc := messages.CommandsPCSubject("SIM-0001")
	run := func(id, script string) messages.ExecResult {
		t.Helper()
		cmd := command(id, "1", script)
		publish(t, b.Conn, pc, cmd)
		r := res.next(t, 5*time.Second)
		if r.RequestID != cmd.RequestID {
			t.Fatalf("result = %+v", r)
		}
		return r
	}
	cases := []struct {
		name, id, script string
		exit             int
		stdout, stderr   string
	}{
		{"fail-once first run", "flaky", "fail-once\necho-json {\"ok\":true}", 1, "", "fail-once: first run of flaky on this agent\n"},
		{"fail-once second run", "flaky", "fail-once\necho-json {\"ok\":true}", 0, "{\"ok\":true}\n", ""},
		{"lines in order", "seq", "echo one\nsleep 10ms\necho two\nexit 4\necho three", 4, "one\ntwo\n", ""},
		{"powershell lines ignored", "mixed", "$x = 1\r\necho hi\r\nWrite-Output $x", 0, "hi\n", ""},
		{"bad directive", "typo", "sleep forever", 2, "", "kanade-fleet: script line 1 \"sleep forever\": expected a number at \"forever\" in \"forever\"\n"},
		{"no directives: distribution", "real", "Get-Process | Select -First 1", 1, "", "simulated failure\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := run(c.id, c.script)
			if r.ExitCode != c.exit || r.Stdout != c.stdout || r.Stderr != c.stderr {
				t.Fatalf("got exit %d stdout %q stderr %q; want %d %q %q", r.ExitCode, r.Stdout, r.Stderr, c.exit, c.stdout, c.stderr)
			}
		})
	}
}

func TestLogsFetch(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	startFleet(t, b, sim.Config{Agents: 2})
	res := watchResults(t, b.Conn)
	for i := range 3 {
		publish(t, b.Conn, messages.CommandsPCSubject("SIM-0002"), command(fmt.Sprintf("job%d", i), "1", "exit 0"))
		res.next(t, 5*time.Second)
	}
	m, err := b.Conn.Request(messages.LogsFetchSubject("SIM-0002"), []byte(`{"tail_lines":2}`), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(m.Data), "\n"), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "received command id=job2") || !strings.Contains(lines[1], "command id=job2") ||
		!strings.Contains(lines[1], "finished exit_code=0") {
		t.Fatalf("tail = %q", m.Data)
	}
	if _, err := time.Parse(time.RFC3339Nano, strings.Fields(lines[0])[0]); err != nil {
		t.Fatalf("log line does not start with a timestamp: %q", lines[0])
	}
	// Nobody answers for a PC that is not in the fleet.
	if _, err := b.Conn.Request(messages.LogsFetchSubject("SIM-0003"), []byte(`{"tail_lines":2}`), 200*time.Millisecond); err == nil {
		t.Fatal("a missing agent answered logs.fetch")
	}
}

// A test may hand the fleet its own (in-process) connection; Stop leaves
// it open for the test.
func TestSharedConnection(t *testing.T) {
	t.Parallel()
	b := brokertestInProcess(t)
	res := watchResults(t, b.Conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, err := sim.Start(ctx, sim.Config{Conn: b.Conn, Agents: 2, Logger: testLogger(t), Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	cmd := command("shared", "1", "exit 0")
	publish(t, b.Conn, messages.CommandsPCSubject("SIM-0002"), cmd)
	if r := res.next(t, 5*time.Second); r.PcID != "SIM-0002" || r.RequestID != cmd.RequestID {
		t.Fatalf("result = %+v", r)
	}
	if err := f.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if !b.Conn.IsConnected() {
		t.Fatal("Stop closed the caller's connection")
	}
	// Stopped agents answer nothing.
	publish(t, b.Conn, messages.CommandsPCSubject("SIM-0002"), command("shared", "1", "exit 0"))
	res.none(t, 200*time.Millisecond)
}
