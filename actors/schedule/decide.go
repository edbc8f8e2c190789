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

// Completion is one successful run of the schedule's job on a PC.
type Completion struct {
	PC string
	At time.Time
}

// Decision is the outcome of Decide.
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

// Decide is the scheduler's dedup policy (behaviour.md §3), a pure
// function of its inputs: expected is the resolved target at now (unique
// pc_ids), completions the successful runs of the job (any number per PC,
// any PCs). It reduces completions to the newest per PC and applies
// DecideLatest.
func Decide(p Policy, expected []string, completions []Completion, now time.Time) Decision {
	if p.Mode == messages.ModeEveryTick || p.Mode == "" {
		return Decision{Action: FireWholeTarget}
	}
	last := make(map[string]time.Time, len(completions))
	for _, c := range completions {
		if t, ok := last[c.PC]; !ok || c.At.After(t) {
			last[c.PC] = c.At
		}
	}
	return DecideLatest(p, expected, last, now)
}

// DecideLatest is Decide over completions already reduced to the newest
// success per PC, which is the form a schedule actor keeps: it avoids
// rebuilding a map of the whole fleet on every tick. Entries of last for
// PCs outside expected are ignored.
func DecideLatest(p Policy, expected []string, last map[string]time.Time, now time.Time) Decision {
	switch p.Mode {
	case messages.ModeEveryTick, "":
		return Decision{Action: FireWholeTarget}
	case messages.ModeOncePerPC:
		return decideOncePerPC(p, expected, last, now)
	case messages.ModeOncePerTarget:
		return decideOncePerTarget(p, expected, last, now)
	}
	return Decision{Action: Skip, Reason: fmt.Sprintf("unknown mode %q", string(p.Mode))}
}

// rearmed reports whether a PC (or target) whose newest success is at t may
// run again at now: only with a cooldown, and only once it has fully
// elapsed (the boundary is inclusive).
func (p Policy) rearmed(t, now time.Time) bool {
	return p.HasCooldown && now.Sub(t) >= p.Cooldown
}

func decideOncePerPC(p Policy, expected []string, last map[string]time.Time, now time.Time) Decision {
	if len(expected) == 0 {
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
	// Nothing eligible. Without a cooldown that means every expected PC has
	// succeeded, and nothing will ever re-arm them: the schedule is done.
	// With a cooldown the PCs come back later, so it never is.
	if p.HasCooldown {
		return Decision{Action: Skip, Reason: fmt.Sprintf("all %d PCs succeeded within the cooldown of %s", len(expected), p.Cooldown)}
	}
	return Decision{Action: Skip, AutoDisable: p.AutoDisable, Reason: fmt.Sprintf("all %d PCs already succeeded", len(expected))}
}

func decideOncePerTarget(p Policy, expected []string, last map[string]time.Time, now time.Time) Decision {
	if len(expected) == 0 {
		return Decision{Action: Skip, Reason: "target resolves to no PC"}
	}
	var latest time.Time
	found := false
	for _, pc := range expected {
		if t, ok := last[pc]; ok && (!found || t.After(latest)) {
			latest, found = t, true
		}
	}
	if !found || p.rearmed(latest, now) {
		return Decision{Action: FireWholeTarget}
	}
	if p.HasCooldown {
		return Decision{Action: Skip, Reason: fmt.Sprintf("target succeeded at %s, within the cooldown of %s", latest.UTC().Format(time.RFC3339), p.Cooldown)}
	}
	return Decision{Action: Skip, AutoDisable: p.AutoDisable, Reason: fmt.Sprintf("target already succeeded at %s", latest.UTC().Format(time.RFC3339))}
}
