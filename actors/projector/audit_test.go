package projector

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"kanade-backend/actors/audit"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

// The same audit event published twice, and then every message delivered
// again by a consumer reset, is one row (upstream duplicated, defect 3).
func TestAuditIdempotent(t *testing.T) { storagetest.ForEachDialect(t, testAuditIdempotent) }

func testAuditIdempotent(t *testing.T, st *storage.Store) {
	h := newHarness(t, harnessOpts{store: st}).start()
	ctx := context.Background()
	ev := audit.Event(messages.ActorOperator, messages.ActionJobUpsert, "hw", map[string]any{"sub": "alice", "n": 12345678901234567})
	ev.OccurredAt = t0
	pub := audit.NewPublisher(h.broker.JS, nil)
	for range 2 {
		if err := pub.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	other := audit.Event(messages.ActorScheduler, messages.ActionExec, "", nil)
	other.OccurredAt = t0.Add(time.Second)
	if err := pub.Publish(ctx, other); err != nil {
		t.Fatal(err)
	}
	if err := h.broker.Conn.Publish("audit.operator.bad", []byte("{")); err != nil {
		t.Fatal(err)
	}
	h.waitCount("audit_log", 2, 5*time.Second)
	h.waitCount("projection_errors", 1, 5*time.Second, "projection = 'audit'")
	h.consumerIdle(messages.StreamAudit, DurableAudit)

	// Reset: drop the durable consumer; the restarted projector recreates it
	// from its checkpoint, and a full replay changes nothing either.
	h.stop()
	if err := h.broker.JS.DeleteConsumer(ctx, messages.StreamAudit, DurableAudit); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.W.ExecContext(ctx, "DELETE FROM projection_checkpoints"); err != nil {
		t.Fatal(err)
	}
	h2 := newHarness(t, harnessOpts{broker: h.broker, store: h.store}).start()
	h2.consumerIdle(messages.StreamAudit, DurableAudit)
	if n := h2.count("audit_log"); n != 2 {
		t.Fatalf("%d audit rows after a replay, want 2", n)
	}
	if n := h2.count("projection_errors"); n != 1 {
		t.Fatalf("%d projection errors after a replay, want 1 (recorded once per message)", n)
	}
	var rows []storage.AuditRow
	if err := h.store.R.NewSelect().Model(&rows).Order("id").Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if rows[0].Actor != "operator" || rows[0].Action != "job_upsert" || rows[0].Target == nil || *rows[0].Target != "hw" ||
		!rows[0].OccurredAt.Equal(t0) || string(rows[0].Payload) != `{"n":12345678901234567,"sub":"alice"}` {
		t.Fatalf("row = %+v payload %s", rows[0], rows[0].Payload)
	}
	if rows[1].Target != nil || string(rows[1].Payload) != `{}` {
		t.Fatalf("row = %+v payload %s", rows[1], rows[1].Payload)
	}
	evs := eventsOf[*messages.AuditProjected](h)
	if len(evs) != 2 || evs[0].ID != rows[0].ID || evs[0].Event.Action != "job_upsert" {
		t.Fatalf("AuditProjected = %+v", evs)
	}
	if n := len(eventsOf[*messages.AuditProjected](h2)); n != 0 {
		t.Fatalf("a replay published %d AuditProjected events", n)
	}
}

// Payload numbers keep every digit, keys are stored in one canonical order
// (the duplicate check compares the text), and times are stored in UTC.
func TestAuditPayloadNumbersExact(t *testing.T) {
	h := newHarness(t, harnessOpts{}).start()
	b, _ := json.Marshal(map[string]any{"actor": "operator", "action": "exec", "target": nil,
		"payload": json.RawMessage(`{"seq":18446744073709551615,"f":1.5}`), "occurred_at": "2026-11-26T12:00:00+09:00"})
	if err := h.broker.Conn.Publish("audit.operator.exec", b); err != nil {
		t.Fatal(err)
	}
	h.waitCount("audit_log", 1, 5*time.Second)
	var row storage.AuditRow
	if err := h.store.R.NewSelect().Model(&row).Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	if string(row.Payload) != `{"f":1.5,"seq":18446744073709551615}` || !row.OccurredAt.Equal(t0.Add(-9*time.Hour)) {
		t.Fatalf("row = %+v payload %s", row, row.Payload)
	}
	if got := fmt.Sprint(row.OccurredAt.Location()); got != "UTC" {
		t.Fatalf("occurred_at zone %s", got)
	}
}
