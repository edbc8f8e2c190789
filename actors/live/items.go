package live

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"kanade-backend/messages"
)

// The items of each event kind. Field names follow the REST shapes of the
// same things (ResultRow, the executions list, AuditRow), so the dashboard
// can merge an item into a table it loaded from the API.

type agentItem struct {
	PcID          string    `json:"pc_id"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
	AgentVersion  string    `json:"agent_version"`
	New           bool      `json:"new"`
}

type resultItem struct {
	RequestID  string    `json:"request_id"`
	PcID       string    `json:"pc_id"`
	ExecID     *string   `json:"exec_id"`
	JobID      *string   `json:"job_id"`
	ExitCode   int       `json:"exit_code"`
	Status     string    `json:"status"`
	FinishedAt time.Time `json:"finished_at"`
}

func resultItemOf(r messages.ProjectedResult) resultItem {
	status := "success"
	if r.ExitCode != 0 {
		status = "failure"
	}
	return resultItem{RequestID: r.RequestID, PcID: r.PcID, ExecID: nullable(r.ExecID), JobID: nullable(r.JobID),
		ExitCode: r.ExitCode, Status: status, FinishedAt: r.FinishedAt.UTC()}
}

type execItem struct {
	ExecID       string    `json:"exec_id"`
	JobID        string    `json:"job_id"`
	Status       string    `json:"status"`
	ExpectedPcs  int       `json:"expected_pcs"`
	SuccessCount int       `json:"success_count"`
	FailureCount int       `json:"failure_count"`
	At           time.Time `json:"at"`
	// Waves are the exec's rollout waves with their states and counts,
	// when the event is about them (omitted otherwise: a result's event
	// does not carry them, and a client keeps the waves it has).
	Waves []messages.WaveProgress `json:"waves,omitempty"`
}

func execItemOf(e messages.ExecProgressed) execItem {
	return execItem{ExecID: e.ExecID, JobID: e.JobID, Status: e.Status, ExpectedPcs: e.Expected,
		SuccessCount: e.Success, FailureCount: e.Failure, At: e.At.UTC(), Waves: e.Waves}
}

type scheduleItem struct {
	ScheduleID string    `json:"schedule_id"`
	JobID      string    `json:"job_id"`
	Outcome    string    `json:"outcome"`
	Reason     string    `json:"reason,omitempty"`
	ExecID     *string   `json:"exec_id"`
	Pcs        int       `json:"pcs"`
	Instant    time.Time `json:"instant"`
	At         time.Time `json:"at"`
}

func scheduleItemOf(e messages.ScheduleTicked) scheduleItem {
	return scheduleItem{ScheduleID: e.ScheduleID, JobID: e.JobID, Outcome: e.Outcome, Reason: e.Reason,
		ExecID: nullable(e.ExecID), Pcs: e.Pcs, Instant: e.Instant.UTC(), At: e.At.UTC()}
}

// auditItem is an AuditRow. (Embedding messages.AuditEvent would promote
// its MarshalJSON and lose the id.)
type auditItem struct {
	ID         int64          `json:"id"`
	Actor      string         `json:"actor"`
	Action     string         `json:"action"`
	Target     *string        `json:"target"`
	Payload    map[string]any `json:"payload"`
	OccurredAt time.Time      `json:"occurred_at"`
}

func auditItemOf(e messages.AuditProjected) auditItem {
	p := e.Event.Payload
	if p == nil {
		p = map[string]any{}
	}
	return auditItem{ID: e.ID, Actor: e.Event.Actor, Action: e.Event.Action, Target: e.Event.Target,
		Payload: p, OccurredAt: e.Event.OccurredAt.UTC()}
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// metrics are the hub's kanade_live_* collectors.
type metrics struct {
	clients        prometheus.Gauge
	slowClients    prometheus.Counter
	publishErrors  prometheus.Counter
	publishDropped prometheus.Counter
	events         [numKinds]prometheus.Counter
	sent           [numKinds]prometheus.Counter
	dropped        [numKinds]prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg) // nil: not registered (tests)
	m := &metrics{
		clients: f.NewGauge(prometheus.GaugeOpts{
			Name: "kanade_live_clients",
			Help: "Server-Sent Events clients connected to /api/events.",
		}),
		slowClients: f.NewCounter(prometheus.CounterOpts{
			Name: "kanade_live_slow_clients_dropped_total",
			Help: "Live-event clients disconnected because their buffer was full.",
		}),
		publishErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "kanade_live_publish_errors_total",
			Help: "Failed attempts to publish a live event to the live stream (retried).",
		}),
		publishDropped: f.NewCounter(prometheus.CounterOpts{
			Name: "kanade_live_publish_dropped_total",
			Help: "Live events dropped because NATS stayed away longer than the publish backlog lasts (a reset event follows).",
		}),
	}
	events := f.NewCounterVec(prometheus.CounterOpts{
		Name: "kanade_live_events_total",
		Help: "Live events this replica published to the live stream (after coalescing), by event name.",
	}, []string{"event"})
	sent := f.NewCounterVec(prometheus.CounterOpts{
		Name: "kanade_live_events_sent_total",
		Help: "Live events queued to clients, by event name (one per client).",
	}, []string{"event"})
	dropped := f.NewCounterVec(prometheus.CounterOpts{
		Name: "kanade_live_events_dropped_total",
		Help: "Live events a client could not take because its buffer was full, by event name.",
	}, []string{"event"})
	for k, name := range kindNames {
		m.events[k] = events.WithLabelValues(name)
		m.sent[k] = sent.WithLabelValues(name)
		m.dropped[k] = dropped.WithLabelValues(name)
	}
	return m
}
