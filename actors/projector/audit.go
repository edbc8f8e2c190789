package projector

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/uptrace/bun"

	"kanade-backend/messages"
	"kanade-backend/storage"
)

// auditItem is one decoded audit event with its canonical payload text.
type auditItem struct {
	ev      messages.AuditEvent
	payload string
}

// auditCodec projects the AUDIT stream into audit_log. A row is identified
// by its stream sequence (unique column), so a redelivery changes nothing
// (upstream defect 3). An event published twice (a publisher that retried
// after a lost ack) is two stream messages with the same content; it is
// stored once too, because two operator actions with the same actor,
// action, target, payload and nanosecond are the same action.
type auditCodec struct{}

var _ codec[auditItem] = auditCodec{}

func (auditCodec) projection() string { return ProjAudit }
func (auditCodec) stream() string     { return messages.StreamAudit }
func (auditCodec) durable() string    { return DurableAudit }
func (auditCodec) table() string      { return "audit_log" }

// beforeConsume has nothing to prepare: audit_log needs no other table.
func (auditCodec) beforeConsume(context.Context, actor.Context, *env) error { return nil }

func (auditCodec) decode(data []byte) (auditItem, error) {
	var ev messages.AuditEvent
	if err := json.Unmarshal(data, &ev); err != nil {
		return auditItem{}, fmt.Errorf("decode AuditEvent: %w", err)
	}
	if ev.Actor == "" || ev.Action == "" || ev.OccurredAt.IsZero() {
		return auditItem{}, errors.New("AuditEvent lacks actor, action or occurred_at")
	}
	// encoding/json writes map keys sorted, so equal payloads have equal
	// text, and so equal event keys.
	p, err := json.Marshal(ev.Payload)
	if err != nil {
		return auditItem{}, fmt.Errorf("encode audit payload: %w", err)
	}
	return auditItem{ev: ev, payload: string(p)}, nil
}

func (auditCodec) apply(ctx context.Context, tx bun.Tx, now time.Time, batch []envelope[auditItem], out *outcome) error {
	for _, e := range batch {
		ev := e.item.ev
		// One statement decides: a redelivery (same stream_seq) or a
		// duplicate (same event_key) inserts nothing and returns no id,
		// whichever writer got there first.
		var id int64
		err := tx.NewRaw(`INSERT INTO audit_log (stream_seq, actor, action, target, payload, occurred_at, recorded_at, event_key)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id`,
			int64(e.seq), ev.Actor, ev.Action, ev.Target, e.item.payload, storage.T(ev.OccurredAt), storage.T(now),
			auditKey(ev, e.item.payload)).
			Scan(ctx, &id)
		if errors.Is(err, sql.ErrNoRows) {
			continue // redelivered or published twice: the row is there
		}
		if err != nil {
			return fmt.Errorf("insert audit seq %d: %w", e.seq, err)
		}
		out.events = append(out.events, &messages.AuditProjected{ID: id, Event: ev})
	}
	return nil
}

// auditKey is the identity of an event's content: the SHA-256 of its
// actor, action, target (absent differs from empty), canonical payload and
// occurred_at, each length-prefixed so that no two contents share a key.
func auditKey(ev messages.AuditEvent, payload string) string {
	h := sha256.New()
	field := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	field(ev.Actor)
	field(ev.Action)
	if ev.Target == nil {
		h.Write([]byte{0})
	} else {
		h.Write([]byte{1})
		field(*ev.Target)
	}
	field(payload)
	field(storage.FormatTime(ev.OccurredAt))
	return hex.EncodeToString(h.Sum(nil))
}
