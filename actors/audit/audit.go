// Package audit publishes audit events (wire.md §4) on
// audit.<actor>.<action>[.<target>]. The AUDIT stream captures them and the
// audit projector writes them to SQL, so publishing is the only thing a
// feature does to leave an audit trail.
package audit

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/actors/clock"
	"kanade-backend/messages"
	"kanade-backend/storage/broker"
)

// Publisher publishes audit events through JetStream, so a nil error means
// the AUDIT stream stored the event.
type Publisher struct {
	js    jetstream.JetStream
	clock clock.Clock
}

// NewPublisher returns a Publisher; clk stamps events without OccurredAt.
func NewPublisher(js jetstream.JetStream, clk clock.Clock) *Publisher {
	if clk == nil {
		clk = clock.Real{}
	}
	return &Publisher{js: js, clock: clk}
}

// Publish stores ev in the AUDIT stream.
func (p *Publisher) Publish(ctx context.Context, ev messages.AuditEvent) error {
	if ev.OccurredAt.IsZero() {
		ev.OccurredAt = p.clock.Now().UTC()
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode audit event %s/%s: %w", ev.Actor, ev.Action, err)
	}
	if _, err := p.js.Publish(ctx, ev.Subject(), b); err != nil {
		return fmt.Errorf("publish audit event on %s: %w", ev.Subject(), err)
	}
	return nil
}

// PublishAll stores evs in the AUDIT stream in one pipeline
// (broker.PublishAll) and returns one error per event (nil: stored): the
// exec engine's audit events of a burst of fires cost a few round trips,
// not one each.
func (p *Publisher) PublishAll(ctx context.Context, evs []messages.AuditEvent) []error {
	errs := make([]error, len(evs))
	msgs := make([]*nats.Msg, 0, len(evs))
	idx := make([]int, 0, len(evs))
	for i, ev := range evs {
		if ev.OccurredAt.IsZero() {
			ev.OccurredAt = p.clock.Now().UTC()
		}
		b, err := json.Marshal(ev)
		if err != nil {
			errs[i] = fmt.Errorf("encode audit event %s/%s: %w", ev.Actor, ev.Action, err)
			continue
		}
		msgs = append(msgs, &nats.Msg{Subject: ev.Subject(), Data: b})
		idx = append(idx, i)
	}
	for j, err := range broker.PublishAll(ctx, p.js, msgs) {
		if err != nil {
			errs[idx[j]] = fmt.Errorf("publish audit event: %w", err)
		}
	}
	return errs
}

// Event builds an event; target "" means none (JSON null).
func Event(actor, action, target string, payload map[string]any) messages.AuditEvent {
	ev := messages.AuditEvent{Actor: actor, Action: action, Payload: payload}
	if target != "" {
		ev.Target = &target
	}
	if ev.Payload == nil {
		ev.Payload = map[string]any{}
	}
	return ev
}
