package schedule

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"kanade-backend/messages"
	"kanade-backend/storage"
)

// knownCase is a decision over the known fleet: expected are the PCs a
// fire reaches now, known every PC that counts for done.
type knownCase struct {
	name        string
	mode        messages.ScheduleMode
	cooldown    time.Duration // 0 = none
	expected    string
	known       string
	completions string
	action      Action
	fire        string
	auto        bool
	reason      string // a substring of the reason, for Skips
}

// Done is judged over every known PC of the target, not only the alive
// ones (behaviour.md §3, changed from upstream): fires reach the alive PCs,
// auto-disable waits for the offline ones.
func TestDecideKnown(t *testing.T) {
	const (
		perPC  = messages.ModeOncePerPC
		perTgt = messages.ModeOncePerTarget
	)
	cases := []knownCase{
		{"per pc: fires the alive, not the offline", perPC, 0, "a", "a,b,c", "", FirePcs, "a", false, ""},
		{"per pc: alive done, offline remain: no auto-disable", perPC, 0, "a", "a,b,c", "a@0", Skip, "", false, "2 of 3 known PCs have not run it yet and are offline"},
		{"per pc: everything offline, nothing done", perPC, 0, "", "a,b", "", Skip, "", false, "2 of 2 known PCs"},
		{"per pc: every known PC done, all offline now", perPC, 0, "", "a,b", "a@0 b@5", Skip, "", true, "all 2 PCs already succeeded"},
		{"per pc: a newcomer comes online", perPC, 0, "c", "a,b,c", "a@0 b@5", FirePcs, "c", false, ""},
		{"per pc: completions outside known ignored", perPC, 0, "", "a", "gone@0", Skip, "", false, "1 of 1"},
		{"per pc: cooldown never auto-disables", perPC, time.Hour, "", "a", "a@90", Skip, "", false, "cooldown"},
		{"per pc: nothing known", perPC, 0, "", "", "", Skip, "", false, "no PC"},
		{"per target: a success on a PC now offline completes it", perTgt, 0, "b", "a,b", "a@0", Skip, "", true, "already succeeded"},
		{"per target: all offline, nothing done", perTgt, 0, "", "a,b", "", Skip, "", false, "all 2 known PCs of the target are offline"},
		{"per target: fires the alive part", perTgt, 0, "b", "a,b", "", FireWholeTarget, "", false, ""},
		{"per target: cooldown elapsed, all offline", perTgt, time.Minute, "", "a,b", "a@0", Skip, "", false, "offline"},
		{"per target: decommissioned success does not count", perTgt, 0, "a", "a", "gone@0", FireWholeTarget, "", false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := Policy{Mode: c.mode, AutoDisable: true, Cooldown: c.cooldown, HasCooldown: c.cooldown > 0}
			got := DecideKnown(p, pcs(c.expected), pcs(c.known), comps(c.completions), at(100))
			if got.Action != c.action || got.AutoDisable != c.auto || !slices.Equal(got.Pcs, pcs(c.fire)) {
				t.Fatalf("DecideKnown = {%v %v auto=%v reason=%q}, want {%v %v auto=%v}",
					got.Action, got.Pcs, got.AutoDisable, got.Reason, c.action, pcs(c.fire), c.auto)
			}
			if !strings.Contains(got.Reason, c.reason) {
				t.Fatalf("reason %q, want it to say %q", got.Reason, c.reason)
			}
		})
	}
}

func TestProgressOf(t *testing.T) {
	perPC := Policy{Mode: messages.ModeOncePerPC}
	last := map[string]time.Time{"a": at(0), "c": at(10), "gone": at(0)}
	known := []string{"a", "b", "c", "d"}
	online := []bool{true, true, false, false}
	pr := ProgressOf(perPC, known, online, last, at(100))
	want := []RemainingPC{{PcID: "b", Online: true}, {PcID: "d", Online: false}}
	if pr.Known != 4 || pr.Done != 2 || pr.Remaining != 2 || pr.Offline != 1 || !slices.Equal(pr.RemainingPCs, want) || !pr.At.Equal(at(100)) {
		t.Fatalf("once_per_pc progress %+v", pr)
	}
	// A cooldown re-arms c: it remains again.
	cd := Policy{Mode: messages.ModeOncePerPC, Cooldown: 50 * time.Second, HasCooldown: true}
	if pr := ProgressOf(cd, known, online, last, at(100)); pr.Done != 0 || pr.Remaining != 4 || pr.Offline != 2 {
		t.Fatalf("cooldown progress %+v", pr)
	}
	// Once the target succeeded nothing remains; before, every PC does.
	perTgt := Policy{Mode: messages.ModeOncePerTarget}
	if pr := ProgressOf(perTgt, known, online, last, at(100)); pr.Done != 2 || pr.Remaining != 0 || len(pr.RemainingPCs) != 0 {
		t.Fatalf("done target progress %+v", pr)
	}
	if pr := ProgressOf(perTgt, known, online, nil, at(100)); pr.Done != 0 || pr.Remaining != 4 || pr.Offline != 2 {
		t.Fatalf("target progress %+v", pr)
	}
	// The list is bounded; the counts are not.
	many := make([]string, 3*MaxRemainingListed)
	for i := range many {
		many[i] = string(rune('A'+i%26)) + strings.Repeat("x", i/26)
	}
	if pr := ProgressOf(perPC, many, make([]bool, len(many)), nil, at(0)); pr.Remaining != len(many) || len(pr.RemainingPCs) != MaxRemainingListed {
		t.Fatalf("%d remaining, %d listed", pr.Remaining, len(pr.RemainingPCs))
	}
}

// The known part of a target: offline PCs count until the horizon or a
// decommission; a heartbeat flushed late does not undo a decommission, a
// newer one does.
func TestFleetViewKnownPCs(t *testing.T) {
	v := newFleetView(nil)
	v.horizon = 14 * 24 * time.Hour
	now := t0
	v.load(&FleetSnapshot{
		Agents: map[string]time.Time{
			"alive": now.Add(-time.Minute), "asleep": now.Add(-10 * time.Hour),
			"holiday": now.Add(-13 * 24 * time.Hour), "gone-long": now.Add(-15 * 24 * time.Hour),
			"retired": now.Add(-time.Hour),
		},
		Groups: map[string]SnapshotGroups{
			"asleep": {Groups: []string{"lab"}, Rev: 1}, "kitted": {Groups: []string{"lab"}, Rev: 2},
			"retired": {Groups: []string{"lab"}, Rev: 3}, "alive": {Groups: []string{"lab"}, Rev: 4},
		},
		Decommissioned: map[string]time.Time{"retired": now.Add(-time.Hour)},
	})
	check := func(name string, target messages.Target, fire, known, offline string) {
		t.Helper()
		kt := v.resolveKnown(target, now)
		var off []string
		for i, pc := range kt.known {
			if !kt.online[i] {
				off = append(off, pc)
			}
		}
		if !slices.Equal(kt.fire, pcs(fire)) || !slices.Equal(kt.known, pcs(known)) || !slices.Equal(off, pcs(offline)) || len(kt.online) != len(kt.known) {
			t.Fatalf("%s: fire %v known %v offline %v; want %s / %s / %s", name, kt.fire, kt.known, off, fire, known, offline)
		}
		// The fire part is what resolve gives, less what no longer counts.
		for _, pc := range kt.fire {
			if !slices.Contains(v.resolve(target, now), pc) {
				t.Fatalf("%s: %s fired but not resolved", name, pc)
			}
		}
	}
	check("all", messages.Target{All: true}, "alive", "alive,asleep,holiday", "asleep,holiday")
	check("group", messages.Target{Groups: []string{"lab"}}, "alive", "alive,asleep,kitted", "asleep,kitted")
	check("listed", messages.Target{Pcs: []string{"gone-long", "retired", "asleep", "typo"}}, "asleep,typo", "asleep,typo", "asleep,typo")

	// A decommission through the event, then a heartbeat older than the
	// PC's last one (flushed late): still gone. A newer one: back.
	v.apply(&messages.AgentDecommissioned{PcID: "asleep", LastHeartbeat: now.Add(-10 * time.Hour)})
	v.apply(&messages.AgentsSeen{Agents: []messages.AgentSeen{{PcID: "asleep", At: now.Add(-10 * time.Hour)}}})
	check("asleep decommissioned", messages.Target{All: true, Groups: []string{"lab"}}, "alive", "alive,holiday,kitted", "holiday,kitted")
	v.apply(&messages.AgentsSeen{Agents: []messages.AgentSeen{{PcID: "asleep", At: now}}})
	check("asleep back", messages.Target{All: true}, "alive,asleep", "alive,asleep,holiday", "holiday")
	// An older decommission event cannot undo the newer heartbeat.
	v.apply(&messages.AgentDecommissioned{PcID: "asleep", LastHeartbeat: now.Add(-10 * time.Hour)})
	check("stale decommission", messages.Target{All: true}, "alive,asleep", "alive,asleep,holiday", "holiday")
	// The horizon moves with time: two days on, "holiday" has been silent
	// for 15 days and no longer counts.
	later := now.Add(2 * 24 * time.Hour)
	if kt := v.resolveKnown(messages.Target{All: true}, later); !slices.Equal(kt.known, []string{"alive", "asleep"}) || len(kt.fire) != 0 {
		t.Fatalf("two days later: fire %v known %v", kt.fire, kt.known)
	}
	if !isFleetEvent(&messages.AgentDecommissioned{}) {
		t.Fatal("the view does not follow decommissions")
	}
}

// BenchmarkKnownTick measures what a once_per_pc tick adds for the known
// fleet over 10 000 agents (a third offline, half done): resolveKnown,
// DecideKnown and ProgressOf, next to the alive-only resolve and a decision
// over it alone, as before (the raw ceiling of the same work):
//
//	go test -run '^$' -bench KnownTick -benchmem ./actors/schedule/
func BenchmarkKnownTick(b *testing.B) {
	v := newFleetView(nil)
	v.horizon = DefaultDecommissionAfter
	now := t0
	last := map[string]time.Time{}
	for i := range 10_000 {
		pc := fmt.Sprintf("pc-%05d", i)
		seen := now
		if i%3 == 0 {
			seen = now.Add(-time.Hour)
		}
		v.sawAgent(pc, seen)
		if i%2 == 0 {
			last[pc] = now.Add(-time.Minute)
		}
	}
	p := Policy{Mode: messages.ModeOncePerPC, AutoDisable: true}
	all := messages.Target{All: true}
	b.Run("known_fleet_10000", func(b *testing.B) {
		for b.Loop() {
			kt := v.resolveKnown(all, now)
			DecideKnown(p, kt.fire, kt.known, last, now)
			ProgressOf(p, kt.known, kt.online, last, now)
		}
	})
	b.Run("raw_ceiling_alive_only_10000", func(b *testing.B) {
		for b.Loop() {
			alive := v.resolve(all, now)
			DecideKnown(p, alive, alive, last, now)
		}
	})
}

// After a restart the view reads the tombstones: a decommissioned PC whose
// row a late heartbeat flush re-created (same last heartbeat) stays out,
// one that sent a newer heartbeat since is known again.
func TestLoadFleetReadsDecommissions(t *testing.T) {
	onBothDialects(t, testLoadFleetReadsDecommissions)
}

func testLoadFleetReadsDecommissions(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	last := t0.Add(-time.Hour)
	var agents []storage.Agent
	for pc, seen := range map[string]time.Time{"late-flush": last, "came-back": t0, "kept": last} {
		agents = append(agents, storage.Agent{PcID: pc, AgentVersion: "1", LastHeartbeat: storage.T(seen), UpdatedAt: storage.T(seen)})
	}
	if err := storage.InsertChunked(ctx, st.W, agents, false); err != nil {
		t.Fatal(err)
	}
	lh := storage.T(last)
	gone := []storage.DecommissionedPC{
		{PcID: "late-flush", LastHeartbeat: &lh, DecommissionedAt: storage.T(t0), DecommissionedBy: "operator:admin"},
		{PcID: "came-back", LastHeartbeat: &lh, DecommissionedAt: storage.T(t0), DecommissionedBy: "operator:admin"},
		{PcID: "kitted", DecommissionedAt: storage.T(t0), DecommissionedBy: "operator:admin"},
	}
	if err := storage.InsertChunked(ctx, st.W, gone, false); err != nil {
		t.Fatal(err)
	}
	snap, err := NewBackend(st, nil).LoadFleet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Decommissioned) != 3 || !snap.Decommissioned["kitted"].IsZero() || !snap.Decommissioned["late-flush"].Equal(last) {
		t.Fatalf("decommissioned %v", snap.Decommissioned)
	}
	v := newFleetView(nil)
	v.load(snap)
	kt := v.resolveKnown(messages.Target{All: true, Pcs: []string{"kitted"}}, t0)
	if !slices.Equal(kt.known, []string{"came-back", "kept"}) || !slices.Equal(kt.fire, []string{"came-back"}) {
		t.Fatalf("after a restart: known %v fire %v", kt.known, kt.fire)
	}
}
