// Package live is the hub behind GET /api/events. It has two halves, in
// one actor, so that any number of replicas serve the same stream:
//
//   - Producer: it subscribes once to the events the other actor families
//     publish on the local EventStream after commit (messages/events.go),
//     coalesces them per kind, and publishes each coalesced event on the
//     JetStream stream KANADE_LIVE (subject kanade.live.<event>, see
//     broker.LiveStream). Volume is bounded by throttling: the first event
//     after a quiet spell goes out at once, and whatever arrives within the
//     following window is coalesced into one event sent when the window
//     ends, so 10 000 agents heartbeating produce at most one `agent`
//     event per second, listing at most MaxItems of them and never more
//     than MaxBytes (far below the NATS payload limit).
//   - Fan-out: it follows that stream with an ordered consumer and sends
//     every event, as a ready-encoded Server-Sent Events frame whose id is
//     the stream sequence, to every connected client. Local events make
//     the same round trip, so one process with its embedded NATS is simply
//     a cluster of one. A client reconnecting with Last-Event-ID (to this
//     replica or any other) gets what it missed from the recent frames the
//     hub keeps or, further back, from the stream itself; events the
//     stream no longer holds (older than its max age) are announced with a
//     `reset` event, after which the client reloads what it shows.
//
// The hub owns all of its state (clients, coalescing buffers, the replay
// ring, timers) and never blocks: a frame goes into a client's bounded
// channel or, when that channel is full, the client is disconnected (its
// browser reconnects and catches up with Last-Event-ID). NATS I/O runs on
// goroutines of its own (stream.go): the publisher, which keeps events
// while NATS is briefly away and sends them when it is back, the
// follower, and one catch-up reader per resuming client.
package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/nats-io/nats.go/jetstream"
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
	// EventReset says that events were lost to this client (the stream no
	// longer holds them, or could not be read): reload everything.
	EventReset = "reset"
)

// Options configure the hub; zero values take the defaults.
type Options struct {
	// JS is where the live stream (messages.StreamLive) is; required.
	JS     jetstream.JetStream
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
	// MaxBytes caps one event's encoded data (default 256 KiB, a quarter
	// of NATS's default payload limit): items are left out (truncated)
	// until it fits.
	MaxBytes int
	// Replay is the number of recent frames kept in memory for clients
	// that reconnect with Last-Event-ID (default 256); older ones are read
	// back from the stream.
	Replay int
	// RetryEvery paces the publisher and the follower while NATS or the
	// stream is away (default 500 ms).
	RetryEvery time.Duration
	// Backlog bounds the events kept for publishing while NATS is away
	// (default 1024); beyond it the oldest are dropped and a reset event
	// follows once NATS is back.
	Backlog int
}

func (o *Options) defaults() {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.AgentWindow, time.Second)
	def(&o.Window, 250*time.Millisecond)
	def(&o.Keepalive, 15*time.Second)
	def(&o.RetryEvery, 500*time.Millisecond)
	defInt := func(n *int, v int) {
		if *n <= 0 {
			*n = v
		}
	}
	defInt(&o.ClientBuffer, 64)
	defInt(&o.MaxItems, 100)
	defInt(&o.MaxBytes, 256<<10)
	defInt(&o.Replay, 256)
	defInt(&o.Backlog, 1024)
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
	if opts.JS == nil {
		return nil, errors.New("live hub: a JetStream handle is required")
	}
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
// of a reconnecting client ("" for a new one): the frames it missed since
// come first, from the hub's memory or from the stream.
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
// before the call, published every event that produced, and handed its
// clients every frame the stream held then (tests wait on it instead of
// sleeping).
func (h *Hub) Barrier(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := h.root.RequestFuture(h.pid, &barrier{}, timeout).Result()
	if err != nil {
		return fmt.Errorf("live hub barrier: %w", err)
	}
	pub, _ := res.(*publisher)
	if pub == nil {
		return errors.New("live hub barrier: hub not running")
	}
	want, err := pub.settled(ctx)
	if err != nil {
		return fmt.Errorf("live hub barrier: %w", err)
	}
	for {
		res, err := h.root.RequestFuture(h.pid, &seqQuery{}, timeout).Result()
		if err != nil {
			return fmt.Errorf("live hub barrier: %w", err)
		}
		if seq, _ := res.(uint64); seq >= want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("live hub barrier: the stream did not deliver sequence %d: %w", want, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// client is one connected stream. Only the hub sends on or closes ch,
// except while holding: then the client's catch-up reader alone sends on
// it, and the hub keeps the client's new frames in held.
type client struct {
	ch chan []byte
	// after: frames up to this sequence are not for this client (it has
	// them, or it joined after them).
	after uint64
	// holding while a catch-up reader sends the frames the client missed.
	holding  bool
	held     []frame
	overflow bool // held reached its bound: drop the client once caught up
	gone     bool // left while holding: closed once caught up
	cancel   context.CancelFunc
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
	// barrier is answered, with the publisher, once everything sent to
	// the hub before it has been handled.
	barrier struct{}
	// seqQuery is answered with the last stream sequence the hub handled.
	seqQuery struct{}
	// streamMsg is one event of the live stream (follower).
	streamMsg struct {
		seq  uint64
		name string
		data []byte
	}
	// following: the follower reads the stream; frames up to warmTo were
	// there before (they fill the replay ring, not new clients).
	following struct{ warmTo uint64 }
	// caughtUp: a client's catch-up reader is done.
	caughtUp struct{ client *client }
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

// kindOf is the kind of an event name, -1 for others (reset).
func kindOf(name string) int {
	for k, n := range kindNames {
		if n == name {
			return k
		}
	}
	return -1
}

// frame is one encoded event kept for replay.
type frame struct {
	seq  uint64
	kind int
	data []byte
}

type hub struct {
	opts    Options
	metrics *metrics

	clients map[*client]struct{}
	sub     *eventstream.Subscription

	// lastSeq is the last stream sequence handled; warmTo the stream's
	// last sequence when the follower started.
	lastSeq uint64
	warmTo  uint64
	ring    []frame
	batch   [numKinds]*batch

	gen            uint64
	timers         [numKinds]clock.Timer
	keepaliveTimer clock.Timer

	// NATS side (stream.go): the I/O goroutines of this instance end
	// with cancel and are waited for with wg.
	pub    *publisher
	cancel context.CancelFunc
	wg     sync.WaitGroup
	ioCtx  context.Context
}

var _ actor.Actor = (*hub)(nil)

func newHub(opts Options, m *metrics) *hub {
	h := &hub{opts: opts, metrics: m, clients: map[*client]struct{}{}}
	for k := range h.batch {
		h.batch[k] = &batch{max: opts.MaxItems}
	}
	return h
}

// Receive handles lifecycle, client and timer messages, the stream's
// events and the forwarded local events.
func (h *hub) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		h.start(ctx)
	case *actor.Stopping, *actor.Restarting:
		h.stop(ctx)
	case *join:
		h.join(ctx, m)
	case *leaveMsg:
		h.leave(m.client)
	case *flush:
		h.windowEnd(ctx, m)
	case *barrier:
		ctx.Respond(h.pub)
	case *seqQuery:
		ctx.Respond(h.lastSeq)
	case *streamMsg:
		h.fromStream(m)
	case *following:
		h.warmTo = m.warmTo
	case *caughtUp:
		h.caughtUp(m.client)
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
	h.ioCtx, h.cancel = context.WithCancel(context.Background())
	h.pub = newPublisher(h.opts, h.metrics)
	h.wg.Add(2)
	go func() {
		defer h.wg.Done()
		h.pub.run(h.ioCtx)
	}()
	go func() {
		defer h.wg.Done()
		follow(h.ioCtx, h.opts, func(m any) { root.Send(self, m) })
	}()
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
	// The I/O goroutines end (the publisher sending what it still holds,
	// briefly) before any client's channel closes: a catch-up reader may
	// be sending on one.
	if h.cancel != nil {
		h.cancel()
		h.wg.Wait()
	}
	for c := range h.clients {
		c.holding = false
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

// join registers a client. A new one gets the frames after the newest the
// hub has (or had when it started following). A resuming one gets every
// frame after its Last-Event-ID: those the hub has handled already come
// from a catch-up reader (the replay ring, then the stream), while the
// hub holds the newer ones back until it is done.
func (h *hub) join(ctx actor.Context, m *join) {
	c := m.client
	h.clients[c] = struct{}{}
	h.metrics.clients.Set(float64(len(h.clients)))
	last, ok := parseEventID(m.lastEventID)
	if !ok {
		// Before the follower says where the stream ended (the first
		// moments of a start, or while NATS is away then), this is 0: the
		// client gets the recent frames the hub reads first too, rather
		// than miss the events published meanwhile. They only make its
		// pages reload.
		c.after = max(h.lastSeq, h.warmTo)
		return
	}
	c.after = last
	if last >= h.lastSeq {
		// Nothing handled here that it lacks; if this replica is behind
		// the one the client came from, frames up to last are skipped.
		return
	}
	var ring []frame
	for _, f := range h.ring {
		if f.seq > last {
			ring = append(ring, f)
		}
	}
	c.holding = true
	cctx, cancel := context.WithCancel(h.ioCtx)
	c.cancel = cancel
	root, self, to, ioCtx := ctx.ActorSystem().Root, ctx.Self(), h.lastSeq, h.ioCtx
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		catchUp(cctx, h.opts, c.ch, last+1, to, ring)
		if ioCtx.Err() == nil { // a stopping hub closes the client itself
			root.Send(self, &caughtUp{client: c})
		}
	}()
}

// caughtUp hands a client the frames held back while it caught up.
func (h *hub) caughtUp(c *client) {
	if _, ok := h.clients[c]; !ok || !c.holding {
		return
	}
	c.holding = false
	c.cancel()
	if c.gone {
		h.leave(c)
		return
	}
	held := c.held
	c.held = nil
	for _, f := range held {
		if !h.send(c, f.kind, f.data) {
			return
		}
	}
	if c.overflow {
		// Frames beyond the bound were not kept: the client reconnects
		// with the last id it got and catches up again.
		h.drop(c)
	}
}

func (h *hub) leave(c *client) {
	if _, ok := h.clients[c]; !ok {
		return // already dropped
	}
	if c.holding {
		// Its catch-up reader may be sending on ch: stop it first; the
		// client goes once the reader says it is done.
		c.gone = true
		c.cancel()
		return
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

// broadcast sends a frame that is not a stream event (keepalive, reset)
// to every client not catching up.
func (h *hub) broadcast(kind int, f []byte) {
	for c := range h.clients {
		if !c.holding {
			h.send(c, kind, f)
		}
	}
}

// fromStream fans out one event of the live stream. Sequences follow each
// other; a jump means events expired before the hub could read them (a
// long NATS outage), and a step back means the stream was created anew:
// both tell the clients to reload.
func (h *hub) fromStream(m *streamMsg) {
	switch {
	case h.lastSeq > 0 && m.seq <= h.lastSeq:
		h.opts.Logger.Warn("live events: the live stream starts over (recreated); clients reload", "seq", m.seq, "last", h.lastSeq)
		h.ring = nil
		for c := range h.clients {
			c.after = 0
		}
		h.broadcast(-1, resetFrame(m.seq-1, "the live stream was recreated"))
	case h.lastSeq > 0 && m.seq > h.lastSeq+1 && m.seq > h.warmTo+1:
		h.broadcast(-1, resetFrame(m.seq-1, fmt.Sprintf("events %d to %d expired before this replica read them", h.lastSeq+1, m.seq-1)))
	}
	h.lastSeq = m.seq
	f := frame{seq: m.seq, kind: kindOf(m.name), data: encodeFrame(m.seq, m.name, m.data)}
	h.remember(f)
	for c := range h.clients {
		switch {
		case f.seq <= c.after:
		case c.holding:
			if len(c.held) >= h.opts.Replay {
				c.overflow = true
				continue
			}
			c.held = append(c.held, f)
		default:
			h.send(c, f.kind, f.data)
		}
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

// emit hands the kind's coalesced event to the publisher; the clients get
// it from the stream, like every other replica's.
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
	data, err := encodePayload(p, h.opts.MaxBytes)
	if err != nil {
		// Items are plain structs of strings, numbers and times, and audit
		// payloads were decoded from JSON; this cannot fail in practice.
		h.opts.Logger.Error("live events: encode event", "event", kindNames[kind], "err", err)
		return
	}
	h.metrics.events[kind].Inc()
	h.pub.enqueue(messages.SubjectLivePrefix+kindNames[kind], data)
}

// encodePayload encodes p, leaving items out (and saying so) until it
// fits in maxBytes: the event must stay far below the NATS payload limit
// whatever the items hold (an audit item carries its whole payload).
func encodePayload(p payload, maxBytes int) ([]byte, error) {
	for {
		data, err := json.Marshal(p)
		if err != nil || len(data) <= maxBytes || len(p.Items) == 0 {
			return data, err
		}
		p.Items = p.Items[:len(p.Items)/2]
		p.Truncated = true
	}
}

// encodeFrame is the SSE frame of a stream event.
func encodeFrame(seq uint64, name string, data []byte) []byte {
	var sb strings.Builder
	sb.Grow(len(data) + 64)
	fmt.Fprintf(&sb, "id: %d\nevent: %s\ndata: ", seq, name)
	sb.Write(data)
	sb.WriteString("\n\n")
	return []byte(sb.String())
}

// resetFrame tells a client that events up to seq are lost to it; its id
// is seq, so that its next reconnect resumes after them.
func resetFrame(seq uint64, reason string) []byte {
	data, _ := json.Marshal(map[string]string{"reason": reason})
	return encodeFrame(seq, EventReset, data)
}

func (h *hub) remember(f frame) {
	if len(h.ring) == h.opts.Replay {
		copy(h.ring, h.ring[1:])
		h.ring = h.ring[:len(h.ring)-1]
	}
	h.ring = append(h.ring, f)
}

// parseEventID reads a Last-Event-ID: a stream sequence.
func parseEventID(id string) (uint64, bool) {
	seq, err := strconv.ParseUint(strings.TrimSpace(id), 10, 64)
	return seq, err == nil
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
