package sim

import (
	"fmt"
	"sync/atomic"
)

// dropReason says why an agent dropped a Command without running it.
type dropReason uint8

const (
	dropNone dropReason = iota
	// dropPin: script_current[id] names another version.
	dropPin
	// dropRevoked: script_status[id] is REVOKED.
	dropRevoked
)

func (d dropReason) String() string {
	switch d {
	case dropPin:
		return "version differs from script_current"
	case dropRevoked:
		return "script revoked"
	}
	return "run"
}

// counters are the fleet's running totals, updated by every agent.
type counters struct {
	heartbeats, received, results atomic.Int64
	droppedPin, droppedRevoked    atomic.Int64
	killed, timedOut              atomic.Int64
}

func (c *counters) dropped(r dropReason) {
	switch r {
	case dropPin:
		c.droppedPin.Add(1)
	case dropRevoked:
		c.droppedRevoked.Add(1)
	}
}

// Stats is a snapshot of the fleet's totals. Commands count once per
// agent that received them: a commands.all Command to 50 agents counts 50.
type Stats struct {
	Agents           int
	Heartbeats       int64
	CommandsReceived int64
	ResultsSent      int64
	// DroppedPin and DroppedRevoked are Commands dropped without a result
	// because of the version pin or a revocation.
	DroppedPin     int64
	DroppedRevoked int64
	// Killed and TimedOut are runs that ended with exit -1.
	Killed   int64
	TimedOut int64
}

func (c *counters) snapshot(agents int) Stats {
	return Stats{
		Agents:           agents,
		Heartbeats:       c.heartbeats.Load(),
		CommandsReceived: c.received.Load(),
		ResultsSent:      c.results.Load(),
		DroppedPin:       c.droppedPin.Load(),
		DroppedRevoked:   c.droppedRevoked.Load(),
		Killed:           c.killed.Load(),
		TimedOut:         c.timedOut.Load(),
	}
}

// String is the summary line the command prints at exit.
func (s Stats) String() string {
	return fmt.Sprintf("agents=%d heartbeats=%d commands_received=%d results_sent=%d dropped_pin_revoke=%d (pin=%d revoked=%d) killed=%d timed_out=%d",
		s.Agents, s.Heartbeats, s.CommandsReceived, s.ResultsSent, s.DroppedPin+s.DroppedRevoked,
		s.DroppedPin, s.DroppedRevoked, s.Killed, s.TimedOut)
}
