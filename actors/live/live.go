// Package live is the hub behind GET /api/events: one actor that subscribes
// once to the events the other actor families publish on the EventStream
// after commit (messages/events.go) and fans them out, as ready-encoded
// Server-Sent Events frames, to every connected client.
//
// The hub owns all of its state (clients, coalescing buffers, the replay
// ring, timers) and never blocks: a frame goes into a client's bounded
// channel or, when that channel is full, the client is disconnected (its
// browser reconnects and catches up from the replay ring). Event volume is
// bounded per kind by throttling: the first event after a quiet spell goes
// out at once, and whatever arrives within the following window is
// coalesced into one event sent when the window ends, so 10 000 agents
// heartbeating produce at most one `agent` event per second rather than
// thousands.
package live

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/prometheus/client_golang/prometheus"

	"kanade-backend/actors/clock"
	"kanade-backend/messages"
)

// Event names of the stream (the SSE "event:" field).
const (
	EventAgent    = "agent"
	EventResult   = "result"
	EventExec     = "exec"
	EventSchedule = "schedule"
	EventAudit    = "audit"
)

// Options configure the hub; zero values take the defaults.
type Options struct {
	Clock  clock.Clock
	Logger *slog.Logger
	// Metrics, if set, receives the kanade_live_* collectors.
	Metrics prometheus.Registerer

	// AgentWindow throttles `agent` events (default 1 s).
	AgentWindow time.Duration
	// Window throttles every other kind (default 250 ms).
	Window time.Duration
	// Keepalive is the interval of comment frames that keep proxies from
	// closing an idle stream (default 15 s).
	Keepalive time.Duration
	// ClientBuffer is the number of frames a client may lag behind before
	// it is disconnected (default 64).
	ClientBuffer int
	// MaxItems caps the items listed in one event (default 100).
	MaxItems int
	// Replay is the number of recent frames kept for clients that
	// reconnect with Last-Event-ID (default 256).
	Replay int
}

func (o *Options) defaults() {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.AgentWindow <= 0 {
		o.AgentWindow = time.Second
	}
	if o.Window <= 0 {
		o.Window = 250 * time.Millisecond
	}
	if o.Keepalive <= 0 {
		o.Keepalive = 15 * time.Second
	}
	if o.ClientBuffer <= 0 {
		o.ClientBuffer = 64
	}
	if o.MaxItems <= 0 {
		o.MaxItems = 100
	}
	if o.Replay <= 0 {
		o.Replay = 256
	}
}

// Hub is the handle the HTTP side uses to join the stream.
type Hub struct {
	root   *actor.RootContext
	pid    *actor.PID
	buffer int
}

// Name is the hub actor's name in the actor system.
const Name = "live"

// Start spawns the hub as a top-level actor. Stop it with the other
// top-level actors (actorsys.Stop); stopping closes every client's stream.
func Start(sys *actor.ActorSystem, opts Options) (*Hub, error) {
	opts.defaults()
	m := newMetrics(opts.Metrics)
	props := actor.PropsFromProducer(func() actor.Actor { return newHub(opts, m) })
	pid, err := sys.Root.SpawnNamed(props, Name)
	if err != nil {
		return nil, fmt.Errorf("spawn live hub: %w", err)
	}
	return &Hub{root: sys.Root, pid: pid, buffer: opts.ClientBuffer}, nil
}

// PID is the hub actor.
func (h *Hub) PID() *actor.PID { return h.pid }

// Join registers a client and returns the channel its frames arrive on and
// the function that unregisters it. The hub closes the channel when it
// drops the client (too slow) or stops; the caller must call leave when it
// stops reading for any other reason. lastEventID is the SSE Last-Event-ID
// of a reconnecting client ("" for a new one): the frames it missed are
// replayed first when the hub still has them.
func (h *Hub) Join(lastEventID string) (frames <-chan []byte, leaveFn func()) {
	c := &client{ch: make(chan []byte, h.buffer)}
	h.root.Send(h.pid, &join{client: c, lastEventID: lastEventID})
	return c.ch, func() {
		// A closed channel means the hub already let go of the client
		// (dropped it, or stopped); telling it again would only make a
		// dead letter. The reader is leaving, so consuming a frame here to
		// find out is harmless.
		select {
		case _, ok := <-c.ch:
			if !ok {
				return
			}
		default:
		}
		h.root.Send(h.pid, &leaveMsg{client: c})
	}
}

// Barrier returns once the hub has handled every message sent to it
// before the call.
func (h *Hub) Barrier(timeout time.Duration) error {
	if _, err := h.root.RequestFuture(h.pid, &barrier{}, timeout).Result(); err != nil {
		return fmt.Errorf("live hub barrier: %w", err)
	}
	return nil
}

// client is one connected stream; only the hub sends on or closes ch.
type client struct {
	ch chan []byte
}

// Actor messages of the hub.
type (
	join struct {
		client      *client
		lastEventID string
	}
	leaveMsg struct{ client *client }
	// flush ends a throttle window of one kind.
	flush struct {
		kind int
		gen  uint64
	}
	keepalive struct{ gen uint64 }
	// barrier is answered once everything sent to the hub before it has
	// been handled (tests wait on it instead of sleeping).
	barrier struct{}
)

// kinds, in a fixed order for arrays.
const (
	kindAgent = iota
	kindResult
	kindExec
	kindSchedule
	kindAudit
	numKinds
)

var kindNames = [numKinds]string{EventAgent, EventResult, EventExec, EventSchedule, EventAudit}

// frame is one encoded event kept for replay.
type frame struct {
	seq  uint64
	data []byte
}

type hub struct {
	opts    Options
	metrics *metrics

	clients map[*client]struct{}
	sub     *eventstream.Subscription

	// boot distinguishes this hub's event ids from a previous process's,
	// so a client reconnecting after a restart is not replayed frames that
	// happen to carry the ids it saw.
	boot  string
	seq   uint64
	ring  []frame
	batch [numKinds]*batch

	gen            uint64
	timers         [numKinds]clock.Timer
	keepaliveTimer clock.Timer
}

var _ actor.Actor = (*hub)(nil)

func newHub(opts Options, m *metrics) *hub {
	h := &hub{opts: opts, metrics: m, clients: map[*client]struct{}{}}
	for k := range h.batch {
		h.batch[k] = &batch{max: opts.MaxItems}
	}
	return h
}

// Receive handles lifecycle, client and timer messages, and the forwarded
// events.
func (h *hub) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		h.start(ctx)
	case *actor.Stopping, *actor.Restarting:
		h.stop(ctx)
	case *join:
		h.join(m)
	case *leaveMsg:
		h.leave(m.client)
	case *flush:
		h.windowEnd(ctx, m)
	case *barrier:
		ctx.Respond(true)
	case *keepalive:
		if m.gen == h.gen {
			h.broadcast(-1, []byte(": keepalive\n\n"))
			h.armKeepalive(ctx)
		}
	default:
		h.event(ctx, m)
	}
}

func (h *hub) start(ctx actor.Context) {
	h.boot = strconv.FormatInt(h.opts.Clock.Now().UnixNano(), 36)
	h.gen++
	root, self := ctx.ActorSystem().Root, ctx.Self()
	// EventStream runs handlers on the publisher's goroutine: only forward.
	// The filter is inside the handler rather than a SubscribeWithPredicate
	// predicate: the pinned library sets the predicate after releasing its
	// lock, a data race with any concurrent Publish (seen under -race with
	// the projectors publishing while the hub started).
	h.sub = ctx.ActorSystem().EventStream.Subscribe(func(evt any) {
		if isLiveEvent(evt) {
			root.Send(self, evt)
		}
	})
	h.armKeepalive(ctx)
}

// stop ends every stream: on a stop, and on a restart after a panic, where
// the new instance starts without the clients' channels (their browsers
// reconnect to it).
func (h *hub) stop(ctx actor.Context) {
	ctx.ActorSystem().EventStream.Unsubscribe(h.sub)
	h.sub = nil
	h.gen++ // invalidates timer messages already in flight
	for k, t := range h.timers {
		if t != nil {
			t.Stop()
			h.timers[k] = nil
		}
	}
	if h.keepaliveTimer != nil {
		h.keepaliveTimer.Stop()
	}
	for c := range h.clients {
		h.drop(c)
	}
}

// isLiveEvent selects the events the hub forwards; the EventStream also
// carries the actor system's own events (dead letters, ...).
func isLiveEvent(evt any) bool {
	switch evt.(type) {
	case *messages.AgentsSeen,
		*messages.ResultsProjected,
		*messages.ExecProgressed,
		*messages.ScheduleTicked,
		*messages.AuditProjected:
		return true
	}
	return false
}

func (h *hub) armKeepalive(ctx actor.Context) {
	root, self, gen := ctx.ActorSystem().Root, ctx.Self(), h.gen
	h.keepaliveTimer = h.opts.Clock.AfterFunc(h.opts.Keepalive, func() { root.Send(self, &keepalive{gen: gen}) })
}

func (h *hub) join(m *join) {
	h.clients[m.client] = struct{}{}
	h.metrics.clients.Set(float64(len(h.clients)))
	boot, seq, ok := parseEventID(m.lastEventID)
	if !ok || boot != h.boot || seq >= h.seq {
		return
	}
	for _, f := range h.ring {
		if f.seq > seq && !h.send(m.client, -1, f.data) {
			return
		}
	}
}

func (h *hub) leave(c *client) {
	if _, ok := h.clients[c]; !ok {
		return // already dropped
	}
	delete(h.clients, c)
	close(c.ch)
	h.metrics.clients.Set(float64(len(h.clients)))
}

// drop disconnects a client the hub gives up on.
func (h *hub) drop(c *client) {
	h.leave(c)
}

// send queues f for c without blocking; a client whose buffer is full is
// disconnected. kind labels the metrics (-1: not an event).
func (h *hub) send(c *client, kind int, f []byte) bool {
	select {
	case c.ch <- f:
		if kind >= 0 {
			h.metrics.sent[kind].Inc()
		}
		return true
	default:
		if kind >= 0 {
			h.metrics.dropped[kind].Inc()
		}
		h.metrics.slowClients.Inc()
		h.opts.Logger.Debug("live events: client too slow; disconnecting it", "buffer", cap(c.ch))
		h.drop(c)
		return false
	}
}

func (h *hub) broadcast(kind int, f []byte) {
	for c := range h.clients {
		h.send(c, kind, f)
	}
}

// event adds a forwarded event to its kind's batch and, when the kind is
// not inside a throttle window, emits it at once and opens a window.
func (h *hub) event(ctx actor.Context, evt any) {
	kind := -1
	switch e := evt.(type) {
	case *messages.AgentsSeen:
		kind = kindAgent
		h.addAgents(*e)
	case *messages.ResultsProjected:
		kind = kindResult
		h.addResults(*e)
	case *messages.ExecProgressed:
		kind = kindExec
		item := execItemOf(*e)
		if prev, ok := h.batch[kindExec].get(e.ExecID).(execItem); ok && item.Waves == nil {
			item.Waves = prev.Waves // a result's event must not drop the waves of the same window
		}
		h.batch[kindExec].add(e.ExecID, item)
	case *messages.ScheduleTicked:
		kind = kindSchedule
		h.batch[kindSchedule].add("", scheduleItemOf(*e))
	case *messages.AuditProjected:
		kind = kindAudit
		h.batch[kindAudit].add("", auditItemOf(*e))
	}
	if kind < 0 || h.timers[kind] != nil {
		return
	}
	h.emit(kind)
	h.armWindow(ctx, kind)
}

func (h *hub) addAgents(e messages.AgentsSeen) {
	b := h.batch[kindAgent]
	for _, a := range e.Agents {
		if a.New {
			b.news++
		}
		b.add(a.PcID, agentItem{PcID: a.PcID, LastHeartbeat: a.At.UTC(), AgentVersion: a.AgentVersion, New: a.New})
	}
}

func (h *hub) addResults(e messages.ResultsProjected) {
	b := h.batch[kindResult]
	for _, r := range e.Results {
		b.add("", resultItemOf(r))
	}
}

func (h *hub) armWindow(ctx actor.Context, kind int) {
	d := h.opts.Window
	if kind == kindAgent {
		d = h.opts.AgentWindow
	}
	root, self, gen := ctx.ActorSystem().Root, ctx.Self(), h.gen
	h.timers[kind] = h.opts.Clock.AfterFunc(d, func() { root.Send(self, &flush{kind: kind, gen: gen}) })
}

// windowEnd emits what the window collected and opens the next window, or
// closes the throttle when nothing came.
func (h *hub) windowEnd(ctx actor.Context, m *flush) {
	if m.gen != h.gen {
		return
	}
	h.timers[m.kind] = nil
	if h.batch[m.kind].empty() {
		return
	}
	h.emit(m.kind)
	h.armWindow(ctx, m.kind)
}

// payload is the data of every event: how many underlying events were
// coalesced, up to MaxItems of them (for agent and exec, the latest per PC
// or exec), and whether some were left out.
type payload struct {
	Count int `json:"count"`
	// New counts new PCs (agent events only).
	New       *int  `json:"new,omitempty"`
	Items     []any `json:"items"`
	Truncated bool  `json:"truncated"`
}

func (h *hub) emit(kind int) {
	b := h.batch[kind]
	if b.empty() {
		return
	}
	p := payload{Count: b.count, Items: b.items, Truncated: b.truncated}
	if kind == kindAgent {
		n := b.news
		p.New = &n
	}
	b.reset()
	data, err := json.Marshal(p)
	if err != nil {
		// Items are plain structs of strings, numbers and times, and audit
		// payloads were decoded from JSON; this cannot fail in practice.
		h.opts.Logger.Error("live events: encode event", "event", kindNames[kind], "err", err)
		return
	}
	h.seq++
	var sb strings.Builder
	sb.Grow(len(data) + 64)
	fmt.Fprintf(&sb, "id: %s-%d\nevent: %s\ndata: ", h.boot, h.seq, kindNames[kind])
	sb.Write(data)
	sb.WriteString("\n\n")
	f := []byte(sb.String())
	h.remember(frame{seq: h.seq, data: f})
	h.metrics.events[kind].Inc()
	h.broadcast(kind, f)
}

func (h *hub) remember(f frame) {
	if len(h.ring) == h.opts.Replay {
		copy(h.ring, h.ring[1:])
		h.ring = h.ring[:len(h.ring)-1]
	}
	h.ring = append(h.ring, f)
}

// parseEventID splits "<boot>-<seq>".
func parseEventID(id string) (boot string, seq uint64, ok bool) {
	boot, s, found := strings.Cut(strings.TrimSpace(id), "-")
	if !found {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(s, 10, 64)
	return boot, seq, err == nil
}

// batch collects one kind's events during a throttle window.
type batch struct {
	max       int
	count     int
	news      int
	items     []any
	byKey     map[string]int
	truncated bool
}

// get returns the item recorded under key in this batch, or nil.
func (b *batch) get(key string) any {
	if i, ok := b.byKey[key]; ok {
		return b.items[i]
	}
	return nil
}

// add records one event; a non-empty key replaces the earlier item with the
// same key (latest state wins).
func (b *batch) add(key string, item any) {
	b.count++
	if key != "" {
		if i, ok := b.byKey[key]; ok {
			b.items[i] = item
			return
		}
	}
	if len(b.items) >= b.max {
		b.truncated = true
		return
	}
	if key != "" {
		if b.byKey == nil {
			b.byKey = map[string]int{}
		}
		b.byKey[key] = len(b.items)
	}
	b.items = append(b.items, item)
}

func (b *batch) empty() bool { return b.count == 0 }

func (b *batch) reset() {
	b.count, b.news, b.items, b.byKey, b.truncated = 0, 0, nil, nil, false
}
