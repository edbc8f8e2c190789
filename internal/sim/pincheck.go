package sim

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/messages"
)

// kvGetter is the one KV operation the pin check needs.
type kvGetter interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
}

// addressing is how a Command reached the fleet.
type addressing uint8

const (
	toAll addressing = iota
	toGroup
	toPC
)

// inbound is one Command message as it arrived on commands.>, with the
// pin check's verdict once it has one.
type inbound struct {
	to    addressing
	token string // group name or pc_id
	cmd   *messages.Command
	drop  dropReason
}

// pinChecker decides whether Commands are to be run or dropped, the way
// a real agent does on receipt: drop when script_status[id] is REVOKED or
// when script_current[id] exists and differs from the Command's version.
//
// Why batches of direct reads and not a watched cache: the backend writes
// the pin and then publishes the Command, but a KV watch delivers the pin
// on another subscription with no ordering against commands.>, so a cache
// can still hold the old pin when the Command arrives and wrongly drop it
// (or wrongly run a just-revoked script). A read issued after a Command
// arrived always sees a pin written before it was published. Reading once
// per batch keeps the cost independent of fleet size: every agent would
// read the same values, so one read answers a commands.all to 10 000
// agents, and a burst of 10 000 commands.pc.* Commands of one exec (same
// id) costs a few reads, because everything queued while a read is in
// flight is decided by the next one.
//
// On a replicated bucket a direct get may be served by a lagging replica;
// that is the same window real agents have.
type pinChecker struct {
	current, status kvGetter
	log             *slog.Logger
	// send hands a decided Command on, in arrival order.
	send func(inbound)

	mu    sync.Mutex
	queue []inbound

	wake   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// readTimeout bounds one KV read; the verdict then fails open.
const readTimeout = 5 * time.Second

func newPinChecker(current, status kvGetter, log *slog.Logger, send func(inbound)) *pinChecker {
	ctx, cancel := context.WithCancel(context.Background())
	p := &pinChecker{current: current, status: status, log: log, send: send,
		wake: make(chan struct{}, 1), ctx: ctx, cancel: cancel, done: make(chan struct{})}
	go p.loop()
	return p
}

// enqueue never blocks: it is called from the NATS subscription callback.
func (p *pinChecker) enqueue(in inbound) {
	p.mu.Lock()
	p.queue = append(p.queue, in)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// stop ends the loop; queued Commands are discarded (the fleet is going
// away, like agents that power off).
func (p *pinChecker) stop() {
	p.cancel()
	<-p.done
}

func (p *pinChecker) loop() {
	defer close(p.done)
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.wake:
		}
		for {
			p.mu.Lock()
			batch := p.queue
			p.queue = nil
			p.mu.Unlock()
			if len(batch) == 0 || p.ctx.Err() != nil {
				break
			}
			p.decide(batch)
		}
	}
}

type pinState struct {
	pin     string
	pinned  bool
	revoked bool
}

func (p *pinChecker) decide(batch []inbound) {
	states := make(map[string]pinState, 1)
	for i := range batch {
		cmd := batch[i].cmd
		st, ok := states[cmd.ID]
		if !ok {
			st = p.read(cmd.ID)
			states[cmd.ID] = st
		}
		switch {
		case st.revoked:
			batch[i].drop = dropRevoked
		case st.pinned && st.pin != cmd.Version:
			batch[i].drop = dropPin
		}
		p.send(batch[i])
	}
}

// read fetches the pin and status of one job id. A missing key means no
// pin and active. A failed read fails open (the Command runs), as the
// real agent does when it cannot reach KV: dropping would lose results
// silently, running shows up in the results.
func (p *pinChecker) read(id string) pinState {
	var st pinState
	if v, ok := p.get(p.current, messages.BucketScriptCurrent, id); ok {
		st.pin, st.pinned = v, true
	}
	if v, ok := p.get(p.status, messages.BucketScriptStatus, id); ok {
		st.revoked = v == messages.ScriptStatusRevoked
	}
	return st
}

func (p *pinChecker) get(kv kvGetter, bucket, key string) (string, bool) {
	ctx, cancel := context.WithTimeout(p.ctx, readTimeout)
	defer cancel()
	e, err := kv.Get(ctx, key)
	switch {
	case err == nil:
		return strings.TrimSpace(string(e.Value())), true
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return "", false
	default:
		if p.ctx.Err() == nil {
			p.log.Warn("pin check read failed; running the command", "bucket", bucket, "key", key, "err", err)
		}
		return "", false
	}
}
