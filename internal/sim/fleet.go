package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/actors/actorsys"
	"kanade-backend/messages"
	"kanade-backend/storage/broker"
)

// Fleet is a running simulated fleet.
type Fleet struct {
	cfg     Config
	ids     []string
	nc      *nats.Conn
	ownConn bool
	stats   counters

	sys     *actor.ActorSystem
	workers *actorsys.WorkerPool // the agents' dispatcher
	router  *actor.PID
	wheel   *heartbeatWheel
	groups  *groupWatch
	checker *pinChecker
	subs    []*nats.Subscription
	// links are the agents' own connections (Config.Credentials).
	links []*link

	stopOnce sync.Once
	stopErr  error
}

// agentThroughput is how many messages an agent handles before its worker
// moves on to the next agent (the library's default).
const agentThroughput = 300

// Wildcard subscriptions of the whole fleet (see the package doc).
const (
	subjectCommands  = "commands.>"
	subjectKill      = "kill.*"
	subjectLogsFetch = "logs.fetch.*"
)

// Start connects, spawns cfg.Agents agents and returns once they listen:
// a Command published after Start returns reaches them. ctx bounds the
// start only; the fleet runs until Stop.
func Start(ctx context.Context, cfg Config) (*Fleet, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("fleet config: %w", err)
	}
	if cfg.Seed == 0 {
		cfg.Seed = rand.Uint64()
	}
	f := &Fleet{cfg: cfg, ids: cfg.pcIDs()}
	if err := f.start(ctx); err != nil {
		_ = f.Stop(context.WithoutCancel(ctx))
		return nil, err
	}
	cfg.Logger.Info("simulated fleet started", "agents", cfg.Agents, "first", f.ids[0], "last", f.ids[len(f.ids)-1],
		"heartbeat", cfg.Heartbeat, "agent_version", cfg.AgentVersion, "os_family", cfg.OSFamily,
		"run_time", cfg.RunTime.String(), "fail_rate", cfg.FailRate, "seed", cfg.Seed)
	return f, nil
}

func (f *Fleet) start(ctx context.Context) error {
	cfg := f.cfg
	log := cfg.Logger
	f.nc = cfg.Conn
	if len(cfg.Credentials) > 0 {
		links, err := dialLinks(ctx, cfg.NATSURL, cfg.Credentials, log)
		if err != nil {
			return err
		}
		f.links = links
		// The pin reads go through the first agent's connection.
		f.nc = links[0].nc
	} else if f.nc == nil {
		nc, err := broker.Connect(broker.ConnectOptions{URL: cfg.NATSURL, Token: cfg.Token, Name: "kanade-fleet", Logger: log})
		if err != nil {
			return err
		}
		f.nc, f.ownConn = nc, true
		if err := broker.WaitConnected(ctx, nc); err != nil {
			return fmt.Errorf("connect to NATS %s: %w", cfg.NATSURL, err)
		}
	}
	js, err := jetstream.New(f.nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	open := func(bucket string) (jetstream.KeyValue, error) {
		kv, err := js.KeyValue(ctx, bucket)
		if err != nil {
			return nil, fmt.Errorf("open bucket %s (the backend creates it at start; is it running against this NATS?): %w", bucket, err)
		}
		return kv, nil
	}
	current, err := open(messages.BucketScriptCurrent)
	if err != nil {
		return err
	}
	status, err := open(messages.BucketScriptStatus)
	if err != nil {
		return err
	}

	f.sys = actorsys.New(log)
	// A worker per core, not a goroutine per agent's mailbox: a Command to
	// commands.all gives every agent work at once.
	f.workers = actorsys.NewWorkerPool(runtime.GOMAXPROCS(0), agentThroughput)
	e := &env{cfg: cfg, pub: f.nc, clock: cfg.Clock, root: f.sys.Root, stats: &f.stats, log: log, dispatch: f.workers}
	if f.links != nil {
		e.pubs = make(map[string]publisher, len(f.links))
		for _, l := range f.links {
			e.pubs[l.pcID] = l.nc
		}
	}
	f.router, err = f.sys.Root.SpawnNamed(routerProps(e, f.ids, cfg.Seed), "fleet")
	if err != nil {
		return fmt.Errorf("spawn fleet router: %w", err)
	}
	root, router := f.sys.Root, f.router
	// Spawning 10 000 agents takes a moment; Start returns when they exist
	// so that callers (and memory measurements) see the whole fleet.
	spawned, err := f.sys.Root.RequestFuture(router, readyQuery{}, time.Minute).Result()
	if err != nil {
		return fmt.Errorf("wait for agents to spawn: %w", err)
	}
	if spawned != cfg.Agents {
		return fmt.Errorf("spawned %v of %d agents", spawned, cfg.Agents)
	}
	f.wheel = startWheel(cfg.Clock, cfg.Heartbeat, func(slot int, at time.Time) {
		root.Send(router, wheelTick{slot: slot, at: at})
	})

	f.checker = newPinChecker(current, status, log, func(in inbound) { root.Send(router, in) })
	if f.links != nil {
		return f.listenLinks(ctx)
	}
	groups, err := open(messages.BucketAgentGroups)
	if err != nil {
		return err
	}
	f.groups, err = watchGroups(ctx, groups, log, func(u groupsUpdate) { root.Send(router, u) })
	if err != nil {
		return err
	}

	subscribe := func(subject string, cb nats.MsgHandler) error {
		sub, err := f.nc.Subscribe(subject, cb)
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", subject, err)
		}
		// Commands come in bursts of one per PC; do not let the library
		// drop them as a slow consumer while the router catches up.
		_ = sub.SetPendingLimits(-1, -1)
		f.subs = append(f.subs, sub)
		return nil
	}
	// One subscription for every kind of Command keeps their arrival
	// order: a Command published after another reaches an agent after it,
	// whatever subjects they were published on.
	if err := subscribe(subjectCommands, f.onCommand); err != nil {
		return err
	}
	if err := subscribe(subjectKill, func(m *nats.Msg) {
		root.Send(router, killReq{jobID: strings.TrimPrefix(m.Subject, "kill.")})
	}); err != nil {
		return err
	}
	if err := subscribe(subjectLogsFetch, func(m *nats.Msg) {
		root.Send(router, logsReq{pcID: strings.TrimPrefix(m.Subject, "logs.fetch."), msg: m})
	}); err != nil {
		return err
	}
	// The subscriptions exist at the server once the flush returns, so a
	// caller may publish Commands as soon as Start returns.
	if err := flush(ctx, f.nc); err != nil {
		return fmt.Errorf("flush subscriptions: %w", err)
	}
	return nil
}

// onCommand decodes a Command once for every agent it addresses and
// queues it for the pin check.
func (f *Fleet) onCommand(m *nats.Msg) {
	in := inbound{}
	switch rest := strings.TrimPrefix(m.Subject, "commands."); {
	case rest == "all":
		in.to = toAll
	case strings.HasPrefix(rest, "pc."):
		in.to, in.token = toPC, strings.TrimPrefix(rest, "pc.")
	case strings.HasPrefix(rest, "group."):
		in.to, in.token = toGroup, strings.TrimPrefix(rest, "group.")
	default:
		return // commands.exec.* and others are not for agents
	}
	var cmd messages.Command
	if err := json.Unmarshal(m.Data, &cmd); err != nil {
		f.cfg.Logger.Warn("ignoring undecodable command", "subject", m.Subject, "err", err)
		return
	}
	in.cmd = &cmd
	f.checker.enqueue(in)
}

// listenLinks starts every agent's own subscriptions and groups watch and
// returns once they exist at the server.
func (f *Fleet) listenLinks(ctx context.Context) error {
	root, router, log := f.sys.Root, f.router, f.cfg.Logger
	send := func(u groupsUpdate) { root.Send(router, u) }
	return eachLink(f.links, func(l *link) error {
		if err := l.listen(f.onAgentMessage); err != nil {
			return err
		}
		if err := l.watchGroups(ctx, log, send); err != nil {
			return err
		}
		if err := flush(ctx, l.nc); err != nil {
			return fmt.Errorf("agent %s: flush subscriptions: %w", l.pcID, err)
		}
		return nil
	})
}

// onAgentMessage handles what arrived on pcID's own connection: it is for
// that agent only, whatever subject it was published on.
func (f *Fleet) onAgentMessage(pcID string, m *nats.Msg) {
	root, router := f.sys.Root, f.router
	switch {
	case strings.HasPrefix(m.Subject, "commands."):
		var cmd messages.Command
		if err := json.Unmarshal(m.Data, &cmd); err != nil {
			f.cfg.Logger.Warn("ignoring undecodable command", "pc_id", pcID, "subject", m.Subject, "err", err)
			return
		}
		f.checker.enqueue(inbound{to: toPC, token: pcID, cmd: &cmd})
	case strings.HasPrefix(m.Subject, "kill."):
		root.Send(router, killReq{jobID: strings.TrimPrefix(m.Subject, "kill."), pcID: pcID})
	case strings.HasPrefix(m.Subject, "logs.fetch."):
		root.Send(router, logsReq{pcID: pcID, msg: m})
	}
}

// eachLink runs fn for every link, dialConcurrency at a time, and joins
// the errors.
func eachLink(links []*link, fn func(*link) error) error {
	errs := make([]error, len(links))
	sem := make(chan struct{}, dialConcurrency)
	var wg sync.WaitGroup
	for i, l := range links {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = fn(l)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Stop stops receiving, stops every agent (their timers and runs), waits
// for them, and closes the connection if the fleet opened it. It is safe
// to call more than once.
func (f *Fleet) Stop(ctx context.Context) error {
	f.stopOnce.Do(func() {
		var errs []error
		for _, s := range f.subs {
			if err := s.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
				errs = append(errs, fmt.Errorf("unsubscribe %s: %w", s.Subject, err))
			}
		}
		if f.wheel != nil {
			f.wheel.stop()
		}
		if f.groups != nil {
			f.groups.stop()
		}
		if f.checker != nil {
			f.checker.stop()
		}
		if f.sys != nil {
			// Stopping the router stops its children, the agents, first.
			if err := actorsys.Stop(ctx, f.sys, f.router); err != nil {
				errs = append(errs, err)
			}
		}
		if f.workers != nil {
			f.workers.Close()
			f.workers.Wait()
		}
		if f.links != nil {
			if err := eachLink(f.links, func(l *link) error { return l.close(ctx) }); err != nil {
				errs = append(errs, err)
			}
		} else if f.nc != nil {
			// Results published just before the stop must still go out.
			if err := flush(ctx, f.nc); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
				errs = append(errs, fmt.Errorf("flush: %w", err))
			}
			if f.ownConn {
				f.nc.Close()
			}
		}
		f.stopErr = errors.Join(errs...)
		f.cfg.Logger.Info("simulated fleet stopped", "summary", f.Stats().String())
	})
	return f.stopErr
}

// flush waits for the server to have processed everything sent so far.
// nats.go refuses a context without a deadline, so one is added.
func flush(ctx context.Context, nc *nats.Conn) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	return nc.FlushWithContext(ctx)
}

// Stats returns the fleet's totals so far.
func (f *Fleet) Stats() Stats { return f.stats.snapshot(len(f.ids)) }

// SwitchOff powers the simulated PC pcID off, as when a PC is shut down:
// its runs are lost, it sends no heartbeats and no Command reaches it
// until SwitchOn (a ramp does not switch it on). It returns once the
// agent is off.
func (f *Fleet) SwitchOff(pcID string) error { return f.power(pcID, false) }

// SwitchOn powers pcID on again: it announces itself with a heartbeat at
// once and receives Commands from then on.
func (f *Fleet) SwitchOn(pcID string) error { return f.power(pcID, true) }

func (f *Fleet) power(pcID string, on bool) error {
	res, err := f.sys.Root.RequestFuture(f.router, power{pcID: pcID, on: on}, 10*time.Second).Result()
	if err != nil {
		return fmt.Errorf("switch %s: %w", pcID, err)
	}
	done, ok := res.(powerDone)
	if !ok {
		return fmt.Errorf("switch %s: unexpected answer %T", pcID, res)
	}
	return done.err
}

// PCIDs returns the agents' pc_ids in order.
func (f *Fleet) PCIDs() []string { return append([]string(nil), f.ids...) }

// Seed returns the seed in use, to reproduce a run.
func (f *Fleet) Seed() uint64 { return f.cfg.Seed }
