package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"

	"kanade-backend/actors/actorsys"
	"kanade-backend/actors/clock"
)

// Messages the router receives from the fleet's NATS subscriptions and
// KV watch.
type (
	// killReq asks the agents running jobID to kill it; with pcID set
	// (an agent's own connection heard it), only that agent.
	killReq struct{ jobID, pcID string }
	logsReq struct {
		pcID string
		msg  *nats.Msg
	}
	groupsUpdate struct {
		pcID   string
		groups []string
	}
	// readyQuery asks how many agents the router spawned; the answer
	// comes only after they all exist.
	readyQuery struct{}
	wheelTick  struct {
		slot int
		at   time.Time
	}
	// power switches one agent on or off; the router answers with an
	// error (nil: done). byRamp marks the ramp's own switch-on, which
	// leaves an agent switched off explicitly alone.
	power struct {
		pcID   string
		on     bool
		byRamp bool
		// at is the ramp's instant for this agent (zero: now).
		at time.Time
	}
	powerDone struct{ err error }
)

// router is the parent of every agent and the one place that knows who
// is addressed by what: pc_id → agent, group → members (from the
// agent_groups watch), running job → agents (so kill.<job_id> reaches
// only the agents running it). It stands in for the per-agent
// subscriptions real agents hold, which the backend cannot tell apart.
type router struct {
	env   *env
	pcIDs []string
	seed  uint64

	agents map[string]*actor.PID
	order  []*actor.PID // pc_id order, for commands.all
	// slots are the agents of each heartbeat wheel slot (their phase).
	slots   [][]*actor.PID
	groupOf map[string][]string
	members map[string]map[string]*actor.PID
	// off are the agents switched off (not yet on in a ramp, or by
	// Fleet.SwitchOff): nothing is delivered to them. held are those
	// switched off explicitly, which the ramp does not switch on.
	off  map[string]bool
	held map[string]bool
	ramp []clock.Timer
	// running counts, per job_id (exec id), the runs each agent has not
	// finished yet. Registered when the router hands out a Command it
	// knows will run, so a kill published right after the Command is not
	// missed while the agent is still setting up.
	running map[string]map[string]int
}

var _ actor.Actor = (*router)(nil)

func routerProps(e *env, pcIDs []string, seed uint64) *actor.Props {
	// An agent that panics is restarted alone (it loses its runs, as a
	// crashed agent service would); one that keeps panicking is stopped
	// rather than spinning.
	strategy := actorsys.RestartLimited(3, 10*time.Second, func(child *actor.PID, reason any) {
		e.log.Error("simulated agent failed", "agent", child.Id, "reason", reason)
	})
	return actor.PropsFromProducer(func() actor.Actor {
		return &router{env: e, pcIDs: pcIDs, seed: seed}
	}, actor.WithSupervisor(strategy))
}

// Receive implements actor.Actor.
func (r *router) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		r.spawnAgents(c)
		r.startRamp(c)
	case *actor.Stopping:
		for _, t := range r.ramp {
			t.Stop()
		}
	case power:
		err := r.switchPower(c, m)
		if c.Sender() != nil {
			c.Respond(powerDone{err: err})
		}
	case inbound:
		r.dispatch(c, m)
	case killReq:
		for pcID := range r.running[m.jobID] {
			if m.pcID == "" || m.pcID == pcID {
				c.Send(r.agents[pcID], killJob{jobID: m.jobID})
			}
		}
	case runDone:
		r.finished(m)
	case logsReq:
		// An unknown pc_id gets no answer, like a PC that is not there:
		// the requester times out.
		if pid := r.agents[m.pcID]; pid != nil && !r.off[m.pcID] {
			c.Send(pid, logsFetch{msg: m.msg})
		}
	case groupsUpdate:
		r.setGroups(c, m)
	case readyQuery:
		c.Respond(len(r.agents))
	case wheelTick:
		for _, pid := range r.slots[m.slot] {
			c.Send(pid, heartbeatDue{at: m.at})
		}
	}
}

func (r *router) spawnAgents(c actor.Context) {
	r.agents = make(map[string]*actor.PID, len(r.pcIDs))
	r.order = make([]*actor.PID, 0, len(r.pcIDs))
	r.groupOf = make(map[string][]string)
	r.members = make(map[string]map[string]*actor.PID)
	r.running = make(map[string]map[string]int)
	r.slots = make([][]*actor.PID, wheelSlots(r.env.cfg.Heartbeat))
	phases := rand.New(rand.NewPCG(r.seed, 0x706861736573))
	for i, id := range r.pcIDs {
		// Each agent gets its own stream of randomness derived from the
		// fleet seed, so a run is reproducible whatever the scheduling.
		seed := r.seed + uint64(i)*0x9e3779b97f4a7c15
		pid, err := c.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return newAgent(id, r.env, seed) },
			actor.WithDispatcher(r.env.dispatch)), id)
		if err != nil {
			r.env.log.Error("spawn simulated agent", "pc_id", id, "err", err)
			continue
		}
		r.agents[id] = pid
		r.order = append(r.order, pid)
		slot := phases.IntN(len(r.slots))
		r.slots[slot] = append(r.slots[slot], pid)
	}
}

func (r *router) dispatch(c actor.Context, in inbound) {
	send := func(pcID string, pid *actor.PID) {
		if r.off[pcID] {
			return // a switched-off PC never sees a Command
		}
		if in.drop == dropNone && in.cmd.JobID != nil {
			runs := r.running[*in.cmd.JobID]
			if runs == nil {
				runs = make(map[string]int)
				r.running[*in.cmd.JobID] = runs
			}
			runs[pcID]++
		}
		c.Send(pid, deliver{cmd: in.cmd, drop: in.drop})
	}
	switch in.to {
	case toAll:
		for i, pid := range r.order {
			send(r.pcIDs[i], pid)
		}
	case toGroup:
		for pcID, pid := range r.members[in.token] {
			send(pcID, pid)
		}
	case toPC:
		if pid := r.agents[in.token]; pid != nil {
			send(in.token, pid)
		}
	}
}

// startRamp switches every agent off and arms the timers that switch them
// on one after another over Config.Ramp.
func (r *router) startRamp(c actor.Context) {
	r.off, r.held = map[string]bool{}, map[string]bool{}
	ramp := r.env.cfg.Ramp
	if ramp <= 0 {
		return
	}
	root, self, start := r.env.root, c.Self(), r.env.clock.Now()
	for k, id := range r.pcIDs {
		r.off[id] = true
		c.Send(r.agents[id], powerSet{on: false, quiet: true})
		after := ramp * time.Duration(k) / time.Duration(len(r.pcIDs))
		msg := power{pcID: id, on: true, byRamp: true, at: start.Add(after)}
		if k == 0 {
			c.Send(self, msg)
			continue
		}
		r.ramp = append(r.ramp, r.env.clock.AfterFunc(after, func() { root.Send(self, msg) }))
	}
}

// switchPower switches one agent on (it announces itself with a heartbeat
// at once) or off (its runs are lost, as when a PC powers off).
func (r *router) switchPower(c actor.Context, m power) error {
	pid := r.agents[m.pcID]
	if pid == nil {
		return fmt.Errorf("no simulated agent %q", m.pcID)
	}
	switch {
	case m.on && m.byRamp && r.held[m.pcID]:
		return nil
	case m.on:
		delete(r.held, m.pcID)
		if !r.off[m.pcID] {
			return nil
		}
		delete(r.off, m.pcID)
	default:
		r.held[m.pcID] = true
		if r.off[m.pcID] {
			return nil
		}
		r.off[m.pcID] = true
	}
	at := m.at
	if at.IsZero() {
		at = r.env.clock.Now()
	}
	c.Send(pid, powerSet{on: m.on, at: at})
	return nil
}

func (r *router) finished(m runDone) {
	runs := r.running[m.jobID]
	if runs == nil {
		return
	}
	if runs[m.pcID]--; runs[m.pcID] <= 0 {
		delete(runs, m.pcID)
	}
	if len(runs) == 0 {
		delete(r.running, m.jobID)
	}
}

func (r *router) setGroups(c actor.Context, m groupsUpdate) {
	pid := r.agents[m.pcID]
	if pid == nil {
		return // a PC of another fleet, or a real one
	}
	old := r.groupOf[m.pcID]
	if slices.Equal(old, m.groups) {
		return
	}
	for _, g := range old {
		delete(r.members[g], m.pcID)
		if len(r.members[g]) == 0 {
			delete(r.members, g)
		}
	}
	for _, g := range m.groups {
		if r.members[g] == nil {
			r.members[g] = make(map[string]*actor.PID)
		}
		r.members[g][m.pcID] = pid
	}
	if len(m.groups) == 0 {
		delete(r.groupOf, m.pcID)
	} else {
		r.groupOf[m.pcID] = m.groups
	}
	c.Send(pid, groupsSet{groups: m.groups})
}
