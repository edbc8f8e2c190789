package audit_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"kanade-backend/actors/audit"
	"kanade-backend/actors/clock"
	"kanade-backend/http/auth"
	"kanade-backend/messages"
	"kanade-backend/storage/broker/brokertest"
)

func TestPublishStoresInAuditStream(t *testing.T) {
	b := brokertest.Start(t)
	at := time.Date(2026, 5, 20, 3, 0, 0, 120_000_000, time.UTC)
	p := audit.NewPublisher(b.JS, clock.NewFake(at))
	ctx := auth.WithPrincipal(context.Background(), auth.Principal{Subject: "alice", Source: "cli"})
	ev := auth.OperatorEvent(ctx, messages.ActionExec, "inventory-hw", map[string]any{"exec_id": "e1", "sub": "kept"})
	if err := p.Publish(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	s, err := b.JS.Stream(context.Background(), messages.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetLastMsgForSubject(context.Background(), "audit.operator.exec.inventory-hw")
	if err != nil {
		t.Fatal(err)
	}
	var got messages.AuditEvent
	if err := json.Unmarshal(msg.Data, &got); err != nil {
		t.Fatal(err)
	}
	if got.Payload["sub"] != "kept" || got.Payload["source"] != "cli" || !got.OccurredAt.Equal(at) ||
		got.Target == nil || *got.Target != "inventory-hw" {
		t.Fatalf("stored event = %+v", got)
	}
}
