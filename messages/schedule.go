package messages

import (
	"encoding/json"
	"fmt"
	"time"

	"kanade-backend/messages/cron"
)

// Schedule is a KV schedules value: a cron expression that execs a job
// with a fan-out plan. Unknown fields are ignored.
//
// The field order is the wire's emitted key order (wire.md §4); the
// embedded plan is flattened in place, so target, rollout and jitter come
// right after job_id.
type Schedule struct {
	ID    string `json:"id"`
	Cron  string `json:"cron"`
	JobID string `json:"job_id"`
	FanoutPlan
	// Mode defaults to every_tick.
	Mode ScheduleMode `json:"mode"`
	// Cooldown absent means a PC (or target) that succeeded is never fired
	// again.
	Cooldown            *Duration `json:"cooldown,omitempty"`
	AutoDisableWhenDone bool      `json:"auto_disable_when_done"`
	// Enabled defaults to true when absent on input.
	Enabled bool `json:"enabled"`
	// TZ is the IANA zone the cron expression is read in (default UTC).
	// Omitted when unset so that upstream readers keep working.
	TZ string `json:"tz,omitempty"`
	// StartingDeadline bounds catch-up after downtime: a tick later than
	// this is not fired and is recorded as missed. Absent means no
	// catch-up at all.
	StartingDeadline *Duration `json:"starting_deadline,omitempty"`
}

// MarshalJSON emits the default mode when unset.
func (s Schedule) MarshalJSON() ([]byte, error) {
	type alias Schedule
	a := alias(s)
	a.Mode = a.Mode.orDefault()
	return json.Marshal(a)
}

// UnmarshalJSON fills the defaults: enabled = true, mode = every_tick,
// rollout strategy = wave.
func (s *Schedule) UnmarshalJSON(b []byte) error {
	type alias Schedule
	a := alias{Enabled: true}
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	a.Mode = a.Mode.orDefault()
	*s = Schedule(a)
	return nil
}

// ParseScheduleJSON decodes and validates a schedule. On a validation
// error the decoded schedule is returned alongside the error, so that the
// scheduler can keep an invalid schedule visible with its reason.
func ParseScheduleJSON(b []byte) (Schedule, error) {
	var s Schedule
	if err := DecodeJSON(b, &s); err != nil {
		return Schedule{}, err
	}
	return s, s.Validate()
}

// ParseScheduleYAML reads a schedule posted as YAML through the same JSON
// decoder as ParseScheduleJSON.
func ParseScheduleYAML(b []byte) (Schedule, error) {
	j, err := yamlToJSON(b)
	if err != nil {
		return Schedule{}, err
	}
	return ParseScheduleJSON(j)
}

// Validate returns the reason a schedule cannot run, without the
// "invalid schedule: " prefix the HTTP layer adds. It does not check that
// the job exists; that needs the catalog.
func (s *Schedule) Validate() error {
	_, err := s.ValidateExpr()
	return err
}

// ValidateExpr is Validate that also returns the parsed cron expression
// (nil on error), so that a scheduler which validates a schedule and then
// runs it parses the expression once: parsing dominates the cost of
// loading thousands of schedules.
func (s *Schedule) ValidateExpr() (*cron.Expr, error) {
	if err := ValidateToken("schedule id", s.ID); err != nil {
		return nil, err
	}
	if err := ValidateToken("job id", s.JobID); err != nil {
		return nil, err
	}
	expr, err := s.CronExpr()
	if err != nil {
		return nil, err
	}
	if s.Mode != "" && !s.Mode.Valid() {
		return nil, fmt.Errorf("unknown mode %q (want every_tick, once_per_pc or once_per_target)", string(s.Mode))
	}
	if _, _, err := s.CooldownDuration(); err != nil {
		return nil, err
	}
	if _, _, err := s.StartingDeadlineDuration(); err != nil {
		return nil, err
	}
	if err := s.FanoutPlan.Validate(); err != nil {
		return nil, err
	}
	return expr, nil
}

// CronExpr parses the schedule's cron expression in its zone. Each call
// returns a new Expr, so an actor can own one.
func (s *Schedule) CronExpr() (*cron.Expr, error) {
	return cron.Parse(s.Cron, s.TZ)
}

// CooldownDuration returns the cooldown and whether one is set.
func (s *Schedule) CooldownDuration() (d time.Duration, set bool, err error) {
	d, set, err = optionalDuration(s.Cooldown)
	if err != nil {
		return 0, false, fmt.Errorf("invalid cooldown: %w", err)
	}
	return d, set, nil
}

// StartingDeadlineDuration returns the catch-up window and whether one is
// set.
func (s *Schedule) StartingDeadlineDuration() (d time.Duration, set bool, err error) {
	d, set, err = optionalDuration(s.StartingDeadline)
	if err != nil {
		return 0, false, fmt.Errorf("invalid starting_deadline: %w", err)
	}
	return d, set, nil
}

// EffectiveMode returns the mode, with the default applied to a
// Go-constructed schedule that left it unset.
func (s *Schedule) EffectiveMode() ScheduleMode { return s.Mode.orDefault() }
