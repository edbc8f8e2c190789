package sim

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"kanade-backend/actors/clock"
)

func TestParseScript(t *testing.T) {
	cases := []struct {
		script string
		ok     bool
		steps  []step
	}{
		{"", false, nil},
		{"Get-Process\nWrite-Output 1", false, nil},
		{"exit 3", true, []step{{kind: stepExit, code: 3}}},
		{"exit", true, []step{{kind: stepExit}}},
		{"exit -1", true, []step{{kind: stepExit, code: -1}}},
		{"sleep 2s", true, []step{{kind: stepSleep, d: 2 * time.Second}}},
		{"sleep 5", true, []step{{kind: stepSleep, d: 5 * time.Second}}},
		{"sleep\t1m 30s", true, []step{{kind: stepSleep, d: 90 * time.Second}}},
		{"  echo   hello world  \r", true, []step{{kind: stepStdout, text: "hello world"}}},
		{"echo", true, []step{{kind: stepStdout, text: ""}}},
		{`echo-json {"a": 1}`, true, []step{{kind: stepStdout, text: `{"a": 1}`}}},
		{"fail-once\n# comment\nexit 0", true, []step{{kind: stepFailOnce}, {kind: stepExit}}},
		{"exit three", true, []step{
			{kind: stepStderr, text: `kanade-fleet: script line 1 "exit three": exit code must be an integer`},
			{kind: stepExit, code: 2}}},
		{"echo ok\nsleep 1x", true, []step{
			{kind: stepStderr, text: `kanade-fleet: script line 2 "sleep 1x": unknown unit "x" in "1x"`},
			{kind: stepExit, code: 2}}},
		{"echoes\nsleeping 1s", false, nil},
	}
	for _, c := range cases {
		steps, ok := parseScript(c.script)
		if ok != c.ok || !reflect.DeepEqual(steps, c.steps) {
			t.Errorf("parseScript(%q) = %+v, %v; want %+v, %v", c.script, steps, ok, c.steps, c.ok)
		}
	}
}

func TestRandomPlan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	rt := Range{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	fails := 0
	for range 1000 {
		p := randomPlan(rng, rt, 0.25)
		if p[0].kind != stepSleep || p[0].d < rt.Min || p[0].d > rt.Max {
			t.Fatalf("plan %+v", p)
		}
		if p[len(p)-1].kind == stepExit && p[len(p)-1].code == 1 {
			fails++
		}
	}
	if fails < 200 || fails > 300 {
		t.Fatalf("%d failures of 1000 at fail rate 0.25", fails)
	}
	if p := randomPlan(rng, Range{Min: time.Second, Max: time.Second}, 0); p[0].d != time.Second || len(p) != 2 || p[1].kind != stepStdout {
		t.Fatalf("fixed plan %+v", p)
	}
}

func TestParseRange(t *testing.T) {
	good := map[string]Range{
		"100ms..2s": {100 * time.Millisecond, 2 * time.Second},
		"1s":        {time.Second, time.Second},
		"0s..1m":    {0, time.Minute},
		"1s .. 1s":  {time.Second, time.Second},
	}
	for in, want := range good {
		if got, err := ParseRange(in); err != nil || got != want {
			t.Errorf("ParseRange(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "2s..1s", "1s..", "fast", "1.5s"} {
		if _, err := ParseRange(in); err == nil {
			t.Errorf("ParseRange(%q) accepted", in)
		}
	}
	if s := (Range{100 * time.Millisecond, 2 * time.Second}).String(); s != "100ms..2s" {
		t.Errorf("String = %q", s)
	}
}

func TestPCIDs(t *testing.T) {
	if got := PCIDs("SIM-", 3); !reflect.DeepEqual(got, []string{"SIM-0001", "SIM-0002", "SIM-0003"}) {
		t.Fatalf("PCIDs = %v", got)
	}
	big := PCIDs("pc", 10000)
	if big[0] != "pc00001" || big[9999] != "pc10000" {
		t.Fatalf("PCIDs(10000) = %s … %s", big[0], big[9999])
	}
}

func TestGroupSpec(t *testing.T) {
	spec, err := ParseGroupSpec("canary=5%, wave1=45%,pilot=2")
	if err != nil {
		t.Fatal(err)
	}
	want := []GroupShare{{Group: "canary", Percent: 5}, {Group: "wave1", Percent: 45}, {Group: "pilot", Count: 2}}
	if !reflect.DeepEqual(spec, want) {
		t.Fatalf("spec = %+v", spec)
	}
	plan, err := Plan(PCIDs("SIM-", 100), spec)
	if err != nil {
		t.Fatal(err)
	}
	if got := plan["canary"]; len(got) != 5 || got[0] != "SIM-0001" || got[4] != "SIM-0005" {
		t.Fatalf("canary = %v", got)
	}
	if got := plan["wave1"]; len(got) != 45 || got[0] != "SIM-0006" || got[44] != "SIM-0050" {
		t.Fatalf("wave1 = %v", got)
	}
	if got := plan["pilot"]; !reflect.DeepEqual(got, []string{"SIM-0051", "SIM-0052"}) {
		t.Fatalf("pilot = %v", got)
	}
	// A small fleet still gets one canary.
	if plan, err := Plan(PCIDs("SIM-", 10), spec[:1]); err != nil || len(plan["canary"]) != 1 {
		t.Fatalf("plan of 10 = %v, %v", plan, err)
	}
	if _, err := Plan(PCIDs("SIM-", 10), []GroupShare{{Group: "a", Percent: 60}, {Group: "b", Percent: 50}}); err == nil {
		t.Fatal("110% accepted")
	}
	for _, bad := range []string{"", "canary", "canary=0%", "canary=101%", "canary=-1", "a.b=5%", "x=1,x=2", "x=abc"} {
		if _, err := ParseGroupSpec(bad); err == nil {
			t.Errorf("ParseGroupSpec(%q) accepted", bad)
		}
	}
}

func TestAgentLogTail(t *testing.T) {
	var l agentLog
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if l.tail(10) != "" {
		t.Fatal("empty log has lines")
	}
	for i := range logLines + 10 {
		l.add(at, "INFO", "line %d", i)
	}
	all := strings.Split(strings.TrimSuffix(l.tail(0), "\n"), "\n")
	if len(all) != logLines || !strings.HasSuffix(all[0], "line 10") || !strings.HasSuffix(all[logLines-1], "line 73") {
		t.Fatalf("ring = %q … %q (%d lines)", all[0], all[len(all)-1], len(all))
	}
	if got := l.tail(2); got != "2026-01-02T03:04:05Z INFO kanade_agent: line 72\n2026-01-02T03:04:05Z INFO kanade_agent: line 73\n" {
		t.Fatalf("tail(2) = %q", got)
	}
}

func TestWheel(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fake := clock.NewFake(start)
	type tick struct {
		slot int
		at   time.Duration
	}
	var ticks []tick
	w := startWheel(fake, time.Second, func(slot int, at time.Time) { ticks = append(ticks, tick{slot, at.Sub(start)}) })
	fake.Advance(2 * time.Second)
	if len(ticks) != 20 || ticks[0] != (tick{1, 100 * time.Millisecond}) || ticks[8] != (tick{9, 900 * time.Millisecond}) ||
		ticks[9] != (tick{0, time.Second}) || ticks[19] != (tick{0, 2 * time.Second}) {
		t.Fatalf("ticks = %v", ticks)
	}
	w.stop()
	fake.Advance(time.Minute)
	if len(ticks) != 20 || fake.Pending() != 0 {
		t.Fatalf("wheel ticked after stop: %v", ticks[20:])
	}

	// A stall of several rounds (a suspended machine: the timer fires
	// late) passes each slot once, not once per missed round.
	stalled := &lateClock{now: start}
	ticks = nil
	startWheel(stalled, time.Second, func(slot int, at time.Time) { ticks = append(ticks, tick{slot, at.Sub(start)}) })
	stalled.now = start.Add(time.Hour)
	stalled.fire()
	if len(ticks) != 10 || ticks[0].at != time.Hour {
		t.Fatalf("%d ticks after a stall: %v", len(ticks), ticks)
	}
	if want := start.Add(time.Hour + 100*time.Millisecond); !stalled.due.Equal(want) {
		t.Fatalf("next tick at %v, want %v", stalled.due, want)
	}
	if n := wheelSlots(time.Hour); n != maxWheelSlots {
		t.Fatalf("slots of 1h = %d", n)
	}
	if n := wheelSlots(10 * time.Millisecond); n != 1 {
		t.Fatalf("slots of 10ms = %d", n)
	}
}

// lateClock fires its one timer only when told, whatever the time.
type lateClock struct {
	now time.Time
	due time.Time
	fn  func()
}

func (c *lateClock) Now() time.Time { return c.now }
func (c *lateClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	c.due, c.fn = c.now.Add(d), f
	return stopNothing{}
}
func (c *lateClock) fire() { c.fn() }

type stopNothing struct{}

func (stopNothing) Stop() bool { return false }
