package agentio

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"kanade-backend/http/httpx"
	"kanade-backend/messages"
)

// Limits of POST /api/agents/{pc_id}/ping.
const (
	// DefaultPingWaitSecs covers the default 30 s heartbeat interval with
	// margin.
	DefaultPingWaitSecs = 45
	MaxPingWaitSecs     = 600
)

// PingResponse is the answer of a ping.
type PingResponse struct {
	Heartbeat messages.Heartbeat `json:"heartbeat"`
}

func pathPC(r *http.Request) (string, error) {
	id := r.PathValue("pc_id")
	if err := messages.ValidateToken("pc_id", id); err != nil {
		return "", err
	}
	return id, nil
}

// intParam reads an optional integer query parameter within [lo, hi].
func intParam(r *http.Request, name string, def, lo, hi int) (int, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, messages.Invalidf("invalid %s %q: must be an integer between %d and %d", name, s, lo, hi)
	}
	return n, nil
}

// ping waits for the PC's next heartbeat on a core subscription of
// heartbeat.<pc_id>. Heartbeats are not captured by any stream, so this
// sees only live ones: an answer proves the agent is up now.
func (h *handlers) ping(w http.ResponseWriter, r *http.Request) error {
	pcID, err := pathPC(r)
	if err != nil {
		return err
	}
	waitSecs, err := intParam(r, "wait_secs", DefaultPingWaitSecs, 1, MaxPingWaitSecs)
	if err != nil {
		return err
	}
	ctx := r.Context()
	start := time.Now()
	subject := messages.HeartbeatSubject(pcID)
	sub, err := h.nc.SubscribeSync(subject)
	if err != nil {
		h.metrics.observe("ping", outcomeError, 0)
		return messages.Unavailablef("subscribe %s: %v", subject, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := h.flush(ctx); err != nil {
		h.metrics.observe("ping", outcomeError, 0)
		return err
	}
	wctx, cancel := h.waitContext(ctx, time.Duration(waitSecs)*time.Second)
	defer cancel()
	for {
		msg, err := sub.NextMsgWithContext(wctx)
		if err != nil {
			if err, ok := h.waitEnded(r, "ping"); ok {
				return err
			}
			if errors.Is(err, context.DeadlineExceeded) {
				h.metrics.observe("ping", outcomeTimeout, time.Since(start).Seconds())
				return messages.Timeoutf("no heartbeat from %s within %ds", pcID, waitSecs)
			}
			h.metrics.observe("ping", outcomeError, time.Since(start).Seconds())
			return messages.Unavailablef("waiting for %s: %v", subject, err)
		}
		var hb messages.Heartbeat
		if err := json.Unmarshal(msg.Data, &hb); err != nil {
			// Something else publishes on the subject; keep waiting for a
			// real heartbeat rather than failing the ping.
			h.log.WarnContext(ctx, "ping: undecodable heartbeat ignored", "subject", subject, "err", err)
			continue
		}
		h.metrics.observe("ping", outcomeOK, time.Since(start).Seconds())
		httpx.WriteJSON(w, http.StatusOK, PingResponse{Heartbeat: hb})
		return nil
	}
}
