// Package opaudit publishes the audit event of an operator's API call. It
// exists so that every API area records state changes the same way: after
// the change took effect, with the caller's sub and source, and without
// turning a change that did happen into an error response when only the
// audit publish failed (the failure is logged loudly instead, because
// answering 5xx would make the operator retry a change that is already
// done).
package opaudit

import (
	"context"
	"log/slog"
	"time"

	"kanade-backend/http/auth"
	"kanade-backend/messages"
)

// publishTimeout bounds one audit publish (a JetStream publish-ack).
const publishTimeout = 5 * time.Second

// Publisher is what the handlers need of actors/audit.Publisher.
type Publisher interface {
	Publish(ctx context.Context, ev messages.AuditEvent) error
}

// Record publishes the operator event for action on target. A nil
// publisher records nothing (unit tests of handlers that do not care).
func Record(ctx context.Context, p Publisher, logger *slog.Logger, action, target string, payload map[string]any) {
	if p == nil {
		return
	}
	ev := auth.OperatorEvent(ctx, action, target, payload)
	// A client that hangs up right after the change must not cancel its
	// audit record, so the publish gets its own deadline.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	if err := p.Publish(pctx, ev); err != nil {
		if logger == nil {
			logger = slog.Default()
		}
		logger.ErrorContext(ctx, "audit event not recorded; the change itself was applied",
			"action", action, "target", target, "err", err)
	}
}
