package messages

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Target selects the PCs a job runs on. A target is specified when All is
// set or either list is non-empty.
type Target struct {
	Groups []string `json:"groups"`
	Pcs    []string `json:"pcs"`
	All    bool     `json:"all"`
}

// MarshalJSON always emits all three fields, with nil lists as [] rather
// than null, because upstream readers index the lists without a null check.
func (t Target) MarshalJSON() ([]byte, error) {
	type alias Target
	a := alias(t)
	a.Groups = nonNil(a.Groups)
	a.Pcs = nonNil(a.Pcs)
	return json.Marshal(a)
}

// Specified reports whether the target selects anything.
func (t Target) Specified() bool {
	return t.All || len(t.Groups) > 0 || len(t.Pcs) > 0
}

// Subjects lists the command subjects that reach this target, in the order
// behaviour.md §2 publishes them: commands.all, then one per group, then
// one per pc. Tokens must have been validated first (FanoutPlan.Validate).
func (t Target) Subjects() []string {
	var out []string
	if t.All {
		out = append(out, SubjectCommandsAll)
	}
	for _, g := range t.Groups {
		out = append(out, CommandsGroupSubject(g))
	}
	for _, pc := range t.Pcs {
		out = append(out, CommandsPCSubject(pc))
	}
	return out
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// RolloutWave is the only rollout strategy.
const RolloutWave = "wave"

// Rollout publishes a job group by group with delays.
type Rollout struct {
	// Strategy defaults to "wave", the only value.
	Strategy string `json:"strategy"`
	Waves    []Wave `json:"waves"`
	// Gate, when set, makes every wave after the first wait for the
	// earlier waves' results: a wave whose gate is not met is held instead
	// of published (beyond upstream; omitted when absent, so an
	// upstream-shaped plan encodes exactly as before).
	Gate *Gate `json:"gate,omitempty"`
}

// Gate is what the earlier waves of a rollout must achieve before the next
// wave is published. At least one of MinSuccess and MaxFailed is set.
type Gate struct {
	// MinSuccess is the share (0 to 1) of the earlier waves' expected PCs
	// that must have succeeded.
	MinSuccess *float64 `json:"min_success,omitempty"`
	// MaxFailed is how many of the earlier waves' expected PCs may have
	// failed (a PC still silent when the wait is over counts as failed).
	MaxFailed *uint64 `json:"max_failed,omitempty"`
	// Wait is how long after the previous wave went out its answers are
	// awaited before judging; absent: the job's timeout plus the jitter.
	Wait *Duration `json:"wait,omitempty"`
}

// WaitDuration returns the gate's wait and whether it is set.
func (g *Gate) WaitDuration() (time.Duration, bool, error) {
	return optionalDuration(g.Wait)
}

// Validate checks the gate; the texts are the API's 400 messages.
func (g *Gate) Validate() error {
	if g.MinSuccess == nil && g.MaxFailed == nil {
		return errors.New("rollout.gate: set min_success (0 to 1) or max_failed (a count), or both")
	}
	if ms := g.MinSuccess; ms != nil && (*ms < 0 || *ms > 1 || *ms != *ms) {
		return fmt.Errorf("rollout.gate.min_success: %v is not a share between 0 and 1", *ms)
	}
	if _, _, err := g.WaitDuration(); err != nil {
		return fmt.Errorf("invalid rollout.gate.wait: %w", err)
	}
	return nil
}

// Wave publishes to one group Delay after the exec time.
type Wave struct {
	Group string   `json:"group"`
	Delay Duration `json:"delay"`
}

// DelayDuration returns the wave's delay; an empty delay means "now".
func (w Wave) DelayDuration() (time.Duration, error) {
	if w.Delay == "" {
		return 0, nil
	}
	return w.Delay.Parse()
}

// MarshalJSON emits the default strategy and [] for no waves.
func (r Rollout) MarshalJSON() ([]byte, error) {
	type alias Rollout
	a := alias(r)
	if a.Strategy == "" {
		a.Strategy = RolloutWave
	}
	a.Waves = nonNil(a.Waves)
	return json.Marshal(a)
}

// UnmarshalJSON fills the default strategy.
func (r *Rollout) UnmarshalJSON(b []byte) error {
	type alias Rollout
	var a alias
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	if a.Strategy == "" {
		a.Strategy = RolloutWave
	}
	*r = Rollout(a)
	return nil
}

// FanoutPlan says where and how a job is published: the body of
// POST /api/exec/{job_id}, and flattened into every Schedule.
//
// FanoutPlan deliberately has no JSON methods of its own: Schedule embeds
// it, and a promoted MarshalJSON would make a Schedule encode as its plan.
type FanoutPlan struct {
	Target  Target    `json:"target"`
	Rollout *Rollout  `json:"rollout,omitempty"`
	Jitter  *Duration `json:"jitter,omitempty"`
}

// ErrTargetUnspecified is returned by FanoutPlan.Validate when the plan
// reaches nobody; its text is the API's 400 message.
var ErrTargetUnspecified = errors.New("target must specify at least one of all / groups / pcs (or set rollout.waves)")

// Validate checks a plan before anything is published (behaviour.md §2):
// without rollout waves the target must be specified; the jitter and every
// wave delay must parse; every group and pc must be a valid subject token.
// The texts are the API's 400 messages.
func (p *FanoutPlan) Validate() error {
	if !p.Target.Specified() && !p.hasWaves() {
		return ErrTargetUnspecified
	}
	if _, err := p.JitterSecs(); err != nil {
		return err
	}
	if r := p.Rollout; r != nil {
		if r.Strategy != "" && r.Strategy != RolloutWave {
			return fmt.Errorf("invalid rollout.strategy: %q is not supported (only %q)", r.Strategy, RolloutWave)
		}
		for i, w := range r.Waves {
			if _, err := w.DelayDuration(); err != nil {
				return fmt.Errorf("invalid rollout.waves[%d].delay: %w", i, err)
			}
			if err := ValidateToken("group", w.Group); err != nil {
				return fmt.Errorf("rollout.waves[%d]: %w", i, err)
			}
		}
		if r.Gate != nil {
			if err := r.Gate.Validate(); err != nil {
				return err
			}
		}
	}
	for _, g := range p.Target.Groups {
		if err := ValidateToken("group", g); err != nil {
			return err
		}
	}
	for _, pc := range p.Target.Pcs {
		if err := ValidateToken("pc_id", pc); err != nil {
			return err
		}
	}
	return nil
}

func (p *FanoutPlan) hasWaves() bool {
	return p.Rollout != nil && len(p.Rollout.Waves) > 0
}

// JitterSecs converts the plan's jitter to the whole seconds carried in
// Command.jitter_secs (truncated); nil when the plan has no jitter.
func (p *FanoutPlan) JitterSecs() (*uint64, error) {
	d, set, err := optionalDuration(p.Jitter)
	if err != nil {
		return nil, fmt.Errorf("invalid jitter: %w", err)
	}
	if !set {
		return nil, nil
	}
	secs := uint64(d / time.Second)
	return &secs, nil
}
