package live

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/actors/clock"
	"kanade-backend/messages"
)

// The hub's NATS side. Each part runs on a goroutine of its own and talks
// to the actor only by messages (or, for a catch-up reader, through its
// client's channel), so that the actor never waits on NATS.

// publisher sends the hub's coalesced events to the live stream, in
// order. While NATS (or the stream) is away it keeps them, up to Backlog,
// and retries every RetryEvery; what did not fit is replaced by one reset
// event once it is back, so that dashboards reload instead of missing it.
type publisher struct {
	opts    Options
	metrics *metrics
	wake    chan struct{}

	mu       sync.Mutex
	queue    []outgoing
	inflight bool
	lost     int    // events dropped from a full backlog, not yet announced
	acked    uint64 // stream sequence of the last event published
}

type outgoing struct {
	subject string
	data    []byte
}

func newPublisher(opts Options, m *metrics) *publisher {
	return &publisher{opts: opts, metrics: m, wake: make(chan struct{}, 1)}
}

// enqueue never blocks (the hub calls it).
func (p *publisher) enqueue(subject string, data []byte) {
	p.mu.Lock()
	if len(p.queue) >= p.opts.Backlog {
		// Drop the oldest, but not the head while it is being published
		// (done pops it).
		i := 0
		if p.inflight {
			i = 1
		}
		if i < len(p.queue) {
			p.queue = append(p.queue[:i], p.queue[i+1:]...)
			p.lost++
			p.metrics.publishDropped.Inc()
		}
	}
	p.queue = append(p.queue, outgoing{subject: subject, data: data})
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// next takes the event to publish now: the head of the queue, or the reset
// owed once the queue is empty.
func (p *publisher) next() (outgoing, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case len(p.queue) > 0:
		p.inflight = true
		return p.queue[0], true
	case p.lost > 0:
		p.inflight = true
		n := p.lost
		reason := fmt.Sprintf("%d live events were dropped while NATS was unavailable", n)
		p.queue = append(p.queue, outgoing{subject: messages.SubjectLivePrefix + EventReset,
			data: []byte(fmt.Sprintf(`{"reason":%q}`, reason))})
		p.lost = 0
		return p.queue[0], true
	}
	return outgoing{}, false
}

// done records the head as published.
func (p *publisher) done(seq uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inflight = false
	if len(p.queue) > 0 {
		p.queue = p.queue[1:]
	}
	p.acked = max(p.acked, seq)
}

func (p *publisher) failed() {
	p.mu.Lock()
	p.inflight = false
	p.mu.Unlock()
}

// run publishes until ctx ends, then sends what is still queued once, for
// at most a second, so that a graceful stop loses no event it produced.
func (p *publisher) run(ctx context.Context) {
	failing := false
	for {
		o, ok := p.next()
		if !ok {
			select {
			case <-ctx.Done():
				p.flush()
				return
			case <-p.wake:
				continue
			}
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ack, err := p.opts.JS.Publish(pctx, o.subject, o.data)
		cancel()
		if err == nil {
			p.done(ack.Sequence)
			if failing {
				failing = false
				p.opts.Logger.Info("live events: publishing to the live stream again")
			}
			continue
		}
		p.failed()
		p.metrics.publishErrors.Inc()
		if ctx.Err() != nil {
			p.flush()
			return
		}
		if !failing {
			failing = true
			p.opts.Logger.Warn("live events: cannot publish to the live stream; keeping events and retrying",
				"stream", messages.StreamLive, "err", err)
		}
		if !clock.Sleep(ctx, clock.Real{}, p.opts.RetryEvery) {
			p.flush()
			return
		}
	}
}

func (p *publisher) flush() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for {
		o, ok := p.next()
		if !ok {
			return
		}
		ack, err := p.opts.JS.Publish(ctx, o.subject, o.data)
		if err != nil {
			p.failed()
			return
		}
		p.done(ack.Sequence)
	}
}

// settled waits until nothing is queued and returns the last sequence
// published.
func (p *publisher) settled(ctx context.Context) (uint64, error) {
	for {
		p.mu.Lock()
		idle, seq := len(p.queue) == 0 && !p.inflight && p.lost == 0, p.acked
		p.mu.Unlock()
		if idle {
			return seq, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("live events still queued for publishing: %w", ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// follow reads the live stream into the hub (send) until ctx ends. It
// starts Replay events back, so that the replay ring is warm on a replica
// that just started, and an ordered consumer keeps its place across NATS
// outages by itself (it recreates the consumer after the last sequence it
// delivered). Until the stream exists (NATS away at start, resources not
// created yet) it retries.
func follow(ctx context.Context, opts Options, send func(any)) {
	var lastErr string
	for ctx.Err() == nil {
		cc, err := followOnce(ctx, opts, send)
		if err == nil {
			<-ctx.Done()
			cc.Stop()
			return
		}
		if err.Error() != lastErr {
			lastErr = err.Error()
			opts.Logger.Warn("live events: cannot follow the live stream yet; retrying", "stream", messages.StreamLive, "err", err)
		}
		clock.Sleep(ctx, clock.Real{}, opts.RetryEvery)
	}
}

func followOnce(ctx context.Context, opts Options, send func(any)) (jetstream.ConsumeContext, error) {
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := opts.JS.Stream(ictx, messages.StreamLive)
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", messages.StreamLive, err)
	}
	state := st.CachedInfo().State
	start := uint64(1)
	if state.LastSeq >= uint64(opts.Replay) {
		start = state.LastSeq - uint64(opts.Replay) + 1
	}
	start = max(start, state.FirstSeq)
	cons, err := st.OrderedConsumer(ictx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{messages.SubjectLiveAll},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    start,
	})
	if err != nil {
		return nil, fmt.Errorf("follow stream %s: %w", messages.StreamLive, err)
	}
	send(&following{warmTo: state.LastSeq})
	cc, err := cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			return
		}
		send(&streamMsg{seq: md.Sequence.Stream, name: strings.TrimPrefix(m.Subject(), messages.SubjectLivePrefix), data: m.Data()})
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		// The ordered consumer recreates itself after an outage; say why
		// it had to, once per cause.
		opts.Logger.Debug("live events: following the live stream", "err", err)
	}))
	if err != nil {
		return nil, fmt.Errorf("follow stream %s: %w", messages.StreamLive, err)
	}
	return cc, nil
}

// catchUp sends a resuming client the frames from..to it missed: those of
// ring (the hub's recent frames after from, in order) and, before them,
// what the stream still holds. Events the stream no longer holds, or that
// cannot be read now, are announced with a reset frame. It returns when
// done or when ctx ends (the client left, the hub stops).
func catchUp(ctx context.Context, opts Options, ch chan<- []byte, from, to uint64, ring []frame) {
	write := func(b []byte) bool {
		select {
		case ch <- b:
			return true
		case <-ctx.Done():
			return false
		}
	}
	next := from
	if len(ring) == 0 || ring[0].seq > from {
		end := to
		if len(ring) > 0 {
			end = ring[0].seq - 1
		}
		var ok bool
		if next, ok = readStream(ctx, opts, from, end, write); !ok {
			return
		}
	}
	for _, f := range ring {
		if f.seq >= next && f.seq <= to && !write(f.data) {
			return
		}
	}
}

// readStream writes the stream's frames from..end and returns the next
// sequence to write (end+1); false when the client went away.
func readStream(ctx context.Context, opts Options, from, end uint64, write func([]byte) bool) (uint64, bool) {
	giveUp := func(err error) (uint64, bool) {
		opts.Logger.Debug("live events: cannot read the live stream for a resuming client", "from", from, "err", err)
		return end + 1, write(resetFrame(end, "events since "+fmt.Sprint(from)+" could not be read from the live stream"))
	}
	cons, err := opts.JS.OrderedConsumer(ctx, messages.StreamLive, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{messages.SubjectLiveAll},
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       from,
		InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return giveUp(err)
	}
	it, err := cons.Messages()
	if err != nil {
		return giveUp(err)
	}
	defer it.Stop()
	next := from
	for next <= end {
		nctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		m, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if ctx.Err() != nil {
			return 0, false
		}
		if err != nil {
			// Nothing more (all later events expired) or NATS away.
			return giveUp(fmt.Errorf("reading sequence %d: %w", next, err))
		}
		md, err := m.Metadata()
		if err != nil {
			continue
		}
		seq := md.Sequence.Stream
		if seq > end {
			if !write(resetFrame(end, fmt.Sprintf("events %d to %d expired from the live stream", next, end))) {
				return 0, false
			}
			return end + 1, true
		}
		if seq > next && !write(resetFrame(seq-1, fmt.Sprintf("events %d to %d expired from the live stream", next, seq-1))) {
			return 0, false
		}
		if !write(encodeFrame(seq, strings.TrimPrefix(m.Subject(), messages.SubjectLivePrefix), m.Data())) {
			return 0, false
		}
		next = seq + 1
	}
	return next, true
}
