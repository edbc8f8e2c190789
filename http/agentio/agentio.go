// Package agentio serves the API calls that talk to one agent and wait for
// its answer: POST /api/run (run a script now, answer the agent's
// ExecResult), POST /api/agents/{pc_id}/ping (wait for the PC's next
// heartbeat) and GET /api/agents/{pc_id}/logs (proxy the agent's log tail).
//
// They share one rule of the wire contract: never use request/reply on a
// subject a stream captures. results.<request_id> is captured by RESULTS,
// whose publish-ack would be taken for the agent's reply, so /api/run
// subscribes to its own results subject and flushes (the server has the
// subscription) before it publishes the Command. logs.fetch.* is not
// captured, so the logs proxy uses plain request/reply.
//
// Decisions beyond api.md: an ad-hoc run is sent as Command id
// messages.AdhocJobID, version messages.AdhocVersion whatever the body
// says; the optional body job_id becomes the Command's job_id (the kill
// handle: agents listen on kill.<job_id>, so POST /api/jobs/{job_id}/kill
// stops the run), as upstream did. A run is audited as action `exec`
// (target adhoc-run) because it executes an operator's script on a PC,
// the most consequential thing the API does; the payload carries the
// exec payload's fields plus the PC, the shell and the script (cut at
// 4 KiB). The wait for a result is timeout_secs + jitter_secs + 10 s (the
// agent may sleep up to jitter_secs before it starts).
package agentio

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"kanade-backend/http/httpx"
	"kanade-backend/http/internal/opaudit"
	"kanade-backend/http/server"
)

// Conn is the part of *nats.Conn the handlers use.
type Conn interface {
	SubscribeSync(subj string) (*nats.Subscription, error)
	Publish(subj string, data []byte) error
	FlushWithContext(ctx context.Context) error
	RequestWithContext(ctx context.Context, subj string, data []byte) (*nats.Msg, error)
}

// Deps is what the routes need.
type Deps struct {
	Conn  Conn
	Audit opaudit.Publisher
	// Metrics receives the kanade_agent_* collectors; nil registers none.
	Metrics prometheus.Registerer
	Logger  *slog.Logger
}

// Routes are the registered routes; Close ends every wait for an agent.
type Routes struct {
	h *handlers
}

// Close makes every request still waiting for an agent answer 503 at
// once. The server calls it when a graceful stop begins: a run may wait
// minutes for its result, and the stop must not.
func (r *Routes) Close() { r.h.stop(errShuttingDown) }

type handlers struct {
	nc      Conn
	audit   opaudit.Publisher
	log     *slog.Logger
	metrics *metrics

	// stopped is cancelled by Close; every wait derives from it.
	stopped context.Context
	stop    context.CancelCauseFunc
}

// errShuttingDown ends waits when the backend stops.
var errShuttingDown = errors.New("backend shutting down")

// Register adds the routes.
func Register(r *server.Router, d Deps) *Routes {
	h := &handlers{nc: d.Conn, audit: d.Audit, log: d.Logger, metrics: newMetrics(d.Metrics)}
	h.stopped, h.stop = context.WithCancelCause(context.Background())
	if h.log == nil {
		h.log = slog.Default()
	}
	r.API("POST /api/run", h.run)
	r.API("POST /api/agents/{pc_id}/ping", h.ping)
	r.API("GET /api/agents/{pc_id}/logs", h.logs)
	return &Routes{h: h}
}

// waitContext bounds a wait for an agent: the request's context, ended
// also by Close and after d.
func (h *handlers) waitContext(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(parent, d)
	stop := context.AfterFunc(h.stopped, cancel)
	return ctx, func() {
		stop()
		cancel()
	}
}

// waitEnded turns the end of a wait that produced no answer into the
// handler's result. ok is false when the wait simply timed out (the
// caller reports its own timeout). A client that hung up gets nothing:
// there is nobody to answer, and it is not a server error.
func (h *handlers) waitEnded(r *http.Request, op string) (err error, ok bool) {
	switch {
	case r.Context().Err() != nil:
		h.log.DebugContext(r.Context(), "client gave up waiting for an agent", "op", op, "path", r.URL.Path)
		return nil, true
	case h.stopped.Err() != nil:
		h.metrics.observe(op, outcomeError, 0)
		return httpx.Errorf(http.StatusServiceUnavailable, "backend is shutting down; try again"), true
	}
	return nil, false
}

// Outcomes counted in kanade_agent_requests_total.
const (
	outcomeOK           = "ok"
	outcomeTimeout      = "timeout"
	outcomeNoResponders = "no_responders"
	outcomeError        = "error"
)

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg) // nil: not registered (tests)
	m := &metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "kanade_agent_requests_total",
			Help: "Synchronous calls to one agent (run, ping, logs) by outcome: ok, timeout, no_responders, error.",
		}, []string{"op", "outcome"}),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kanade_agent_request_duration_seconds",
			Help:    "How long a synchronous call to one agent waited for its answer.",
			Buckets: []float64{.01, .05, .1, .5, 1, 5, 10, 30, 60, 300},
		}, []string{"op"}),
	}
	return m
}

func (m *metrics) observe(op, outcome string, seconds float64) {
	m.requests.WithLabelValues(op, outcome).Inc()
	m.duration.WithLabelValues(op).Observe(seconds)
}
