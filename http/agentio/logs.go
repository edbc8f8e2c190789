package agentio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"

	"kanade-backend/http/httpx"
	"kanade-backend/messages"
)

// Limits of GET /api/agents/{pc_id}/logs.
const (
	DefaultLogTail = 500
	MaxLogTail     = 100_000
	// LogsTimeout is how long the agent has to answer logs.fetch.
	LogsTimeout = 10 * time.Second
)

// logs proxies logs.fetch.<pc_id> (request/reply; the subject is not
// captured by a stream, so the first reply is the agent's) and returns the
// raw text. No responders means no agent is subscribed (502); an agent
// that is subscribed but silent is a gateway timeout (504).
func (h *handlers) logs(w http.ResponseWriter, r *http.Request) error {
	pcID, err := pathPC(r)
	if err != nil {
		return err
	}
	tail, err := intParam(r, "tail", DefaultLogTail, 1, MaxLogTail)
	if err != nil {
		return err
	}
	body, err := json.Marshal(messages.LogsFetchRequest{TailLines: tail})
	if err != nil {
		return fmt.Errorf("encode logs request: %w", err)
	}
	ctx := r.Context()
	start := time.Now()
	rctx, cancel := h.waitContext(ctx, LogsTimeout)
	defer cancel()
	subject := messages.LogsFetchSubject(pcID)
	msg, err := h.nc.RequestWithContext(rctx, subject, body)
	if err != nil {
		took := time.Since(start).Seconds()
		if err, ok := h.waitEnded(r, "logs"); ok {
			return err
		}
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			h.metrics.observe("logs", outcomeNoResponders, took)
			return messages.Unavailablef("no agent answers on %s: is %s online?", subject, pcID)
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
			h.metrics.observe("logs", outcomeTimeout, took)
			return httpx.Errorf(http.StatusGatewayTimeout, "agent '%s' didn't reply within %s", pcID, LogsTimeout)
		default:
			h.metrics.observe("logs", outcomeError, took)
			return messages.Unavailablef("%s: %v", subject, err)
		}
	}
	h.metrics.observe("logs", outcomeOK, time.Since(start).Seconds())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(msg.Data)
	return nil
}
