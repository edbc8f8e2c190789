package exec

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are the engine's Prometheus collectors. They live outside the
// actor so that a restarted engine keeps counting on the same series.
type Metrics struct {
	fired          *prometheus.CounterVec
	published      prometheus.Counter
	publishFailed  prometheus.Counter
	fanoutDuration prometheus.Histogram
	pendingWaves   prometheus.Gauge
	auditFailed    prometheus.Counter
	recordFailed   prometheus.Counter
	batchSize      prometheus.Histogram
	wavesHeld      prometheus.Counter
	fenced         prometheus.Counter
}

// NewMetrics creates the collectors and registers them on reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg) // a nil reg registers nothing
	m := &Metrics{
		fired: f.NewCounterVec(prometheus.CounterOpts{
			Name: "kanade_exec_fired_total",
			Help: "Execs recorded and published, by audit actor (operator, scheduler).",
		}, []string{"actor"}),
		published: f.NewCounter(prometheus.CounterOpts{
			Name: "kanade_exec_commands_published_total",
			Help: "Commands published on commands.* (one per subject, waves included).",
		}),
		publishFailed: f.NewCounter(prometheus.CounterOpts{
			Name: "kanade_exec_publish_failures_total",
			Help: "Fan-outs or waves whose publish to NATS failed (answered 502, or the wave retried).",
		}),
		fanoutDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "kanade_exec_fanout_duration_seconds",
			Help:    "Time from receiving an exec request to its Commands flushed: its batch's catalog reads, pins, rows, publishes and flush.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		pendingWaves: f.NewGauge(prometheus.GaugeOpts{
			Name: "kanade_exec_pending_waves",
			Help: "Rollout waves waiting for their due time.",
		}),
		auditFailed: f.NewCounter(prometheus.CounterOpts{
			Name: "kanade_exec_audit_failures_total",
			Help: "Exec audit events that could not be stored in the AUDIT stream.",
		}),
		recordFailed: f.NewCounter(prometheus.CounterOpts{
			Name: "kanade_exec_record_failures_total",
			Help: "Attempts to store an exec's record on the EXEC stream that failed (retried; the database stays right).",
		}),
		batchSize: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "kanade_exec_batch_requests",
			Help:    "Exec requests handled together in one batch (one transaction, one flush).",
			Buckets: []float64{1, 2, 5, 10, 50, 100, 500, 1000},
		}),
		wavesHeld: f.NewCounter(prometheus.CounterOpts{
			Name: "kanade_exec_waves_held_total",
			Help: "Gated rollout waves held because the earlier waves did not meet the rollout's gate.",
		}),
		fenced: f.NewCounter(prometheus.CounterOpts{
			Name: "kanade_exec_fenced_total",
			Help: "Scheduled fires refused (nothing written or published, not retried) because a newer leader raised the fence past the token they were issued under.",
		}),
	}
	return m
}
