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
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

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

type handlers struct {
	nc      Conn
	audit   opaudit.Publisher
	log     *slog.Logger
	metrics *metrics
}

// Register adds the routes.
func Register(r *server.Router, d Deps) {
	h := &handlers{nc: d.Conn, audit: d.Audit, log: d.Logger, metrics: newMetrics(d.Metrics)}
	if h.log == nil {
		h.log = slog.Default()
	}
	r.API("POST /api/run", h.run)
	r.API("POST /api/agents/{pc_id}/ping", h.ping)
	r.API("GET /api/agents/{pc_id}/logs", h.logs)
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
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kanade_agent_requests_total",
			Help: "Synchronous calls to one agent (run, ping, logs) by outcome: ok, timeout, no_responders, error.",
		}, []string{"op", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kanade_agent_request_duration_seconds",
			Help:    "How long a synchronous call to one agent waited for its answer.",
			Buckets: []float64{.01, .05, .1, .5, 1, 5, 10, 30, 60, 300},
		}, []string{"op"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration)
	}
	return m
}

func (m *metrics) observe(op, outcome string, seconds float64) {
	m.requests.WithLabelValues(op, outcome).Inc()
	m.duration.WithLabelValues(op).Observe(seconds)
}
