package sim

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"

	"kanade-backend/actors/clock"
	"kanade-backend/messages"
)

// publisher is what an agent needs from NATS: core publish, which is how
// real agents send heartbeats and results.
type publisher interface {
	Publish(subject string, data []byte) error
}

// env is what every agent shares: configuration, the connection, the
// clock, the counters. Agents only read it.
type env struct {
	cfg Config
	pub publisher
	// pubs, when set, are each agent's own connection (Config.Credentials).
	pubs  map[string]publisher
	clock clock.Clock
	root  *actor.RootContext
	stats *counters
	log   *slog.Logger
	// dispatch runs the agents' mailboxes (Fleet.workers).
	dispatch actor.Dispatcher
}

// publisher is the connection pcID publishes on.
func (e *env) publisher(pcID string) publisher {
	if p := e.pubs[pcID]; p != nil {
		return p
	}
	return e.pub
}

// Messages an agent receives. Timers send the *Due messages to the agent
// itself so that all of its state is touched only inside Receive.
type (
	// deliver hands the agent a Command addressed to it, with the pin
	// check's verdict: dropNone to run it, else why to drop it.
	deliver struct {
		cmd  *messages.Command // shared by every recipient; read only
		drop dropReason
	}
	// heartbeatDue comes from the heartbeat wheel with the tick time: the
	// heartbeat is stamped with it, not with whenever the mailbox got to
	// it.
	heartbeatDue struct{ at time.Time }
	stepDue      struct{ run uint64 }
	timeoutDue   struct{ run uint64 }
	killJob      struct{ jobID string }
	groupsSet    struct{ groups []string }
	logsFetch    struct{ msg *nats.Msg }
	// powerSet switches the agent on (a heartbeat stamped at goes out at
	// once) or off (runs lost, no heartbeats); quiet skips the log line.
	powerSet struct {
		on    bool
		at    time.Time
		quiet bool
	}
)

// runDone tells the router that one run of a job finished, so it stops
// routing kill.<job_id> to this agent for it.
type runDone struct{ pcID, jobID string }

// agent is one simulated kanade agent.
type agent struct {
	pcID string
	env  *env
	rng  *rand.Rand
	log  agentLog

	runs    map[uint64]*run
	lastRun uint64
	// off is set while the PC is switched off.
	off bool
	// started counts runs per job (manifest) id, for fail-once.
	started map[string]int
}

var _ actor.Actor = (*agent)(nil)

// run is one Command being executed: waiting for its jitter, or stepping
// through its plan.
type run struct {
	seq     uint64
	cmd     *messages.Command
	steps   []step
	next    int
	first   bool // first run of this job id on this agent
	started time.Time
	stdout  strings.Builder
	stderr  strings.Builder
	step    clock.Timer // pending jitter or sleep
	timeout clock.Timer
}

func newAgent(pcID string, e *env, seed uint64) *agent {
	return &agent{pcID: pcID, env: e, rng: rand.New(rand.NewPCG(seed, 0x6b616e616465))}
}

// Receive implements actor.Actor.
func (a *agent) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		a.start(c)
	case *actor.Stopping, *actor.Restarting:
		// A restarted agent is a new instance: the old one's timers must
		// not keep firing at the same PID.
		a.stop()
	case heartbeatDue:
		if !a.off {
			a.heartbeat(m.at)
		}
	case powerSet:
		a.setPower(m)
	case deliver:
		a.deliver(c, m)
	case stepDue:
		if r := a.runs[m.run]; r != nil {
			r.step = nil
			if r.started.IsZero() {
				a.begin(c, r)
			}
			a.advance(c, r)
		}
	case timeoutDue:
		if r := a.runs[m.run]; r != nil {
			r.timeout = nil
			r.stderr.Reset()
			r.stderr.WriteString("timeout after " + strconv.FormatUint(r.cmd.TimeoutSecs, 10) + "s")
			a.env.stats.timedOut.Add(1)
			a.finish(c, r, -1)
		}
	case killJob:
		a.kill(c, m.jobID)
	case groupsSet:
		a.log.add(a.env.clock.Now(), "INFO", "agent groups now %s", fmt.Sprint(m.groups)) // the slice is not the log's to keep
	case logsFetch:
		a.answerLogs(m.msg)
	}
}

func (a *agent) start(c actor.Context) {
	a.log.add(a.env.clock.Now(), "INFO", "kanade-agent %s started (simulated) pc_id=%s", a.env.cfg.AgentVersion, a.pcID)
}

func (a *agent) stop() {
	// Runs in flight are lost, as when a PC powers off.
	for _, r := range a.runs {
		r.stopTimers()
	}
	a.runs = nil
}

func (a *agent) setPower(m powerSet) {
	a.off = !m.on
	if !m.on {
		a.stop()
		if !m.quiet {
			a.log.add(a.env.clock.Now(), "INFO", "switched off")
		}
		return
	}
	a.log.add(m.at, "INFO", "kanade-agent %s started (simulated) pc_id=%s", a.env.cfg.AgentVersion, a.pcID)
	a.heartbeat(m.at)
}

func (a *agent) heartbeat(at time.Time) {
	hostname, os := strings.ToLower(a.pcID), a.env.cfg.OSFamily
	b, err := messages.Heartbeat{
		PcID: a.pcID, At: at, AgentVersion: a.env.cfg.AgentVersion,
		Hostname: &hostname, OsFamily: &os,
	}.MarshalJSON() // not json.Marshal, which would validate and compact its output again
	if err == nil {
		err = a.env.publisher(a.pcID).Publish(messages.HeartbeatSubject(a.pcID), b)
	}
	if err != nil {
		a.log.add(at, "WARN", "heartbeat failed: %v", err)
	} else {
		a.env.stats.heartbeats.Add(1)
	}
}

func (a *agent) deliver(c actor.Context, m deliver) {
	cmd := m.cmd
	now := a.env.clock.Now()
	a.env.stats.received.Add(1)
	if m.drop != dropNone {
		// Like the real agent: log it, publish nothing.
		a.env.stats.dropped(m.drop)
		a.log.add(now, "WARN", "dropping command id=%s version=%s request_id=%s: %s", cmd.ID, cmd.Version, cmd.RequestID, m.drop)
		return
	}
	a.log.add(now, "INFO", "received command id=%s version=%s request_id=%s", cmd.ID, cmd.Version, cmd.RequestID)
	if a.runs == nil {
		a.runs = make(map[uint64]*run)
	}
	a.lastRun++
	r := &run{seq: a.lastRun, cmd: cmd}
	a.runs[r.seq] = r
	if cmd.JitterSecs != nil && *cmd.JitterSecs > 0 {
		if j := a.rng.Uint64N(*cmd.JitterSecs); j > 0 {
			a.after(c, &r.step, time.Duration(j)*time.Second, stepDue{run: r.seq})
			return
		}
	}
	a.begin(c, r)
	a.advance(c, r)
}

// begin starts the run proper, after its jitter: the timeout counts from
// here, as it does for the real agent's child process.
func (a *agent) begin(c actor.Context, r *run) {
	r.started = a.env.clock.Now()
	if a.started == nil {
		a.started = make(map[string]int)
	}
	a.started[r.cmd.ID]++
	r.first = a.started[r.cmd.ID] == 1
	if steps, ok := parseScript(r.cmd.Script); ok {
		r.steps = steps
	} else {
		r.steps = randomPlan(a.rng, a.env.cfg.RunTime, a.env.cfg.FailRate)
	}
	if r.cmd.TimeoutSecs > 0 {
		a.after(c, &r.timeout, time.Duration(r.cmd.TimeoutSecs)*time.Second, timeoutDue{run: r.seq})
	}
}

// advance executes steps until the run sleeps or ends.
func (a *agent) advance(c actor.Context, r *run) {
	for r.next < len(r.steps) {
		s := r.steps[r.next]
		r.next++
		switch s.kind {
		case stepSleep:
			a.after(c, &r.step, s.d, stepDue{run: r.seq})
			return
		case stepStdout:
			r.stdout.WriteString(s.text + "\n")
		case stepStderr:
			r.stderr.WriteString(s.text + "\n")
		case stepExit:
			a.finish(c, r, s.code)
			return
		case stepFailOnce:
			if r.first {
				r.stderr.WriteString("fail-once: first run of " + r.cmd.ID + " on this agent\n")
				a.finish(c, r, 1)
				return
			}
		}
	}
	a.finish(c, r, 0)
}

func (a *agent) kill(c actor.Context, jobID string) {
	for _, r := range a.runs {
		if r.cmd.JobID != nil && *r.cmd.JobID == jobID {
			r.stderr.Reset()
			r.stderr.WriteString("killed by remote signal (" + messages.KillSubject(jobID) + ")")
			a.env.stats.killed.Add(1)
			a.finish(c, r, -1)
		}
	}
}

// finish publishes the run's ExecResult and forgets the run.
func (a *agent) finish(c actor.Context, r *run, code int) {
	r.stopTimers()
	delete(a.runs, r.seq)
	now := a.env.clock.Now()
	if r.started.IsZero() {
		r.started = now // killed during its jitter
	}
	id := r.cmd.ID
	res := messages.ExecResult{
		RequestID: r.cmd.RequestID, PcID: a.pcID, ExitCode: code,
		Stdout: r.stdout.String(), Stderr: r.stderr.String(),
		StartedAt: r.started, FinishedAt: now, ManifestID: &id,
	}
	b, err := res.MarshalJSON() // not json.Marshal, which would validate and compact its output again
	if err == nil {
		err = a.env.publisher(a.pcID).Publish(messages.ResultsSubject(r.cmd.RequestID), b)
	}
	if err != nil {
		a.log.add(now, "ERROR", "publish result request_id=%s: %v", r.cmd.RequestID, err)
	} else {
		a.env.stats.results.Add(1)
		a.log.add(now, "INFO", "command id=%s request_id=%s finished exit_code=%d", id, r.cmd.RequestID, code)
	}
	if r.cmd.JobID != nil {
		c.Send(c.Parent(), runDone{pcID: a.pcID, jobID: *r.cmd.JobID})
	}
}

// after arms *slot to send msg to the agent itself after d.
func (a *agent) after(c actor.Context, slot *clock.Timer, d time.Duration, msg any) {
	self, root := c.Self(), a.env.root
	*slot = a.env.clock.AfterFunc(d, func() { root.Send(self, msg) })
}

func (r *run) stopTimers() {
	if r.step != nil {
		r.step.Stop()
		r.step = nil
	}
	if r.timeout != nil {
		r.timeout.Stop()
		r.timeout = nil
	}
}

func (a *agent) answerLogs(m *nats.Msg) {
	var req messages.LogsFetchRequest
	// A malformed body still gets the default tail: the caller wants logs.
	_ = json.Unmarshal(m.Data, &req)
	if m.Reply == "" {
		return
	}
	if err := m.Respond([]byte(a.log.tail(req.TailLines))); err != nil {
		a.env.log.Debug("answer logs.fetch", "pc_id", a.pcID, "err", err)
	}
}
