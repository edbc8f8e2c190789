package schedule

import (
	"fmt"
	"time"

	"kanade-backend/messages"
)

// Action is what a tick does after the dedup policy has looked at it.
type Action int

const (
	// Skip fires nothing.
	Skip Action = iota
	// FireWholeTarget execs the schedule's original plan (target, rollout
	// and jitter as written).
	FireWholeTarget
	// FirePcs execs at the listed PCs only: target {pcs: list}, rollout
	// dropped (the waves address groups, not these PCs), jitter kept.
	FirePcs
)

func (a Action) String() string {
	switch a {
	case Skip:
		return "Skip"
	case FireWholeTarget:
		return "FireWholeTarget"
	case FirePcs:
		return "FirePcs"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Policy is the part of a schedule the dedup decision depends on.
type Policy struct {
	Mode messages.ScheduleMode
	// Cooldown is meaningful only when HasCooldown is set; a schedule
	// without a cooldown never re-arms a PC (or target) after a success.
	Cooldown    time.Duration
	HasCooldown bool
	// AutoDisable is the schedule's auto_disable_when_done flag.
	AutoDisable bool
}

// PolicyOf extracts the policy of a validated schedule.
func PolicyOf(s *messages.Schedule) (Policy, error) {
	cd, set, err := s.CooldownDuration()
	if err != nil {
		return Policy{}, err
	}
	return Policy{Mode: s.EffectiveMode(), Cooldown: cd, HasCooldown: set, AutoDisable: s.AutoDisableWhenDone}, nil
}

// Decision is the outcome of DecideKnown.
type Decision struct {
	Action Action
	// Pcs lists the PCs to fire at for FirePcs, in expected order.
	Pcs []string
	// AutoDisable asks the caller to disable the schedule: it has nothing
	// left to do and never will (only ever set together with Skip).
	AutoDisable bool
	// Reason says why a Skip skipped, for the tick record.
	Reason string
}

// DecideKnown is the scheduler's dedup policy (behaviour.md §3), a pure
// function of its inputs, with "done" judged over the known fleet (changed
// from upstream). last holds the newest success per PC, the form a
// schedule actor keeps, so that no tick rebuilds a map of the whole fleet.
// expected are the PCs a fire reaches now (alive ones, listed ones), known
// every PC that counts for the schedule being done, alive or not
// (expected ⊆ known). Fires go to expected PCs only; once_per_pc is done,
// and may auto-disable, only when no known PC remains without a success;
// once_per_target is done once a known PC succeeded, even one that is
// offline now. Entries of last for PCs outside known are ignored (a
// decommissioned PC neither blocks nor counts).
func DecideKnown(p Policy, expected, known []string, last map[string]time.Time, now time.Time) Decision {
	switch p.Mode {
	case messages.ModeEveryTick, "":
		return Decision{Action: FireWholeTarget}
	case messages.ModeOncePerPC:
		return decideOncePerPC(p, expected, known, last, now)
	case messages.ModeOncePerTarget:
		return decideOncePerTarget(p, expected, known, last, now)
	}
	return Decision{Action: Skip, Reason: fmt.Sprintf("unknown mode %q", string(p.Mode))}
}

// rearmed reports whether a PC (or target) whose newest success is at t may
// run again at now: only with a cooldown, and only once it has fully
// elapsed (the boundary is inclusive).
func (p Policy) rearmed(t, now time.Time) bool {
	return p.HasCooldown && now.Sub(t) >= p.Cooldown
}

func decideOncePerPC(p Policy, expected, known []string, last map[string]time.Time, now time.Time) Decision {
	if len(known) == 0 {
		return Decision{Action: Skip, Reason: "target resolves to no PC"}
	}
	// Sized for the worst case: one allocation instead of a dozen
	// re-growths when most of a large fleet is eligible.
	eligible := make([]string, 0, len(expected))
	for _, pc := range expected {
		t, done := last[pc]
		if !done || p.rearmed(t, now) {
			eligible = append(eligible, pc)
		}
	}
	if len(eligible) > 0 {
		return Decision{Action: FirePcs, Pcs: eligible}
	}
	// Nothing to fire now. PCs that are known but offline may still be
	// waiting for their run: they switch on later.
	remaining := 0
	for _, pc := range known {
		if t, done := last[pc]; !done || p.rearmed(t, now) {
			remaining++
		}
	}
	if remaining > 0 {
		return Decision{Action: Skip, Reason: fmt.Sprintf("%d of %d known PCs have not run it yet and are offline", remaining, len(known))}
	}
	// Without a cooldown every known PC has succeeded, and nothing will
	// ever re-arm them: the schedule is done. With a cooldown the PCs come
	// back later, so it never is.
	if p.HasCooldown {
		return Decision{Action: Skip, Reason: fmt.Sprintf("all %d PCs succeeded within the cooldown of %s", len(known), p.Cooldown)}
	}
	return Decision{Action: Skip, AutoDisable: p.AutoDisable, Reason: fmt.Sprintf("all %d PCs already succeeded", len(known))}
}

func decideOncePerTarget(p Policy, expected, known []string, last map[string]time.Time, now time.Time) Decision {
	var latest time.Time
	found := false
	for _, pc := range known {
		if t, ok := last[pc]; ok && (!found || t.After(latest)) {
			latest, found = t, true
		}
	}
	if !found || p.rearmed(latest, now) {
		switch {
		case len(known) == 0:
			return Decision{Action: Skip, Reason: "target resolves to no PC"}
		case len(expected) == 0:
			return Decision{Action: Skip, Reason: fmt.Sprintf("all %d known PCs of the target are offline", len(known))}
		}
		return Decision{Action: FireWholeTarget}
	}
	if p.HasCooldown {
		return Decision{Action: Skip, Reason: fmt.Sprintf("target succeeded at %s, within the cooldown of %s", latest.UTC().Format(time.RFC3339), p.Cooldown)}
	}
	return Decision{Action: Skip, AutoDisable: p.AutoDisable, Reason: fmt.Sprintf("target already succeeded at %s", latest.UTC().Format(time.RFC3339))}
}

// MaxRemainingListed bounds the remaining PCs a progress lists by name.
const MaxRemainingListed = 100

// Progress is how far a once_per_pc or once_per_target schedule has come
// over the known PCs of its target (DecideKnown's rule).
type Progress struct {
	// Known is how many PCs count for the schedule being done.
	Known int `json:"known"`
	// Done are the known PCs with a success that keeps them from being
	// fired (within the cooldown when one is set).
	Done int `json:"done"`
	// Remaining are the known PCs the schedule still has to run on: for
	// once_per_target every known PC until the target has succeeded, then
	// none.
	Remaining int `json:"remaining"`
	// Offline is how many of the remaining PCs have no heartbeat within
	// the alive window: they run it when they come back.
	Offline int `json:"offline"`
	// RemainingPCs names the first MaxRemainingListed remaining PCs in
	// target order.
	RemainingPCs []RemainingPC `json:"remaining_pcs"`
	// At is when this was computed: the last tick or result.
	At time.Time `json:"at"`
}

// RemainingPC is one PC a schedule still has to run on.
type RemainingPC struct {
	PcID   string `json:"pc_id"`
	Online bool   `json:"online"`
}

// ProgressOf computes the progress of a schedule with policy p over the
// known PCs of its target (online[i]: known[i] is alive now).
func ProgressOf(p Policy, known []string, online []bool, last map[string]time.Time, now time.Time) Progress {
	pr := Progress{Known: len(known), RemainingPCs: []RemainingPC{}, At: now}
	targetDone := false
	if p.Mode == messages.ModeOncePerTarget {
		var latest time.Time
		found := false
		for _, pc := range known {
			if t, ok := last[pc]; ok && (!found || t.After(latest)) {
				latest, found = t, true
			}
		}
		targetDone = found && !p.rearmed(latest, now)
	}
	for i, pc := range known {
		t, ok := last[pc]
		if ok && !p.rearmed(t, now) {
			pr.Done++
			continue
		}
		if targetDone {
			continue
		}
		pr.Remaining++
		if !online[i] {
			pr.Offline++
		}
		if len(pr.RemainingPCs) < MaxRemainingListed {
			pr.RemainingPCs = append(pr.RemainingPCs, RemainingPC{PcID: pc, Online: online[i]})
		}
	}
	return pr
}
