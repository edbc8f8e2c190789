package projector

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metrics are the projectors' collectors, registered once per Start
// through promauto.With (a restarted child keeps using them).
type metrics struct {
	projected     *prometheus.CounterVec
	poison        *prometheus.CounterVec
	retries       *prometheus.CounterVec
	failures      *prometheus.CounterVec
	stalled       *prometheus.GaugeVec
	batchSize     *prometheus.HistogramVec
	batchDuration *prometheus.HistogramVec
	lag           *prometheus.GaugeVec
	restarts      prometheus.Counter

	heartbeats     prometheus.Counter
	flushDuration  prometheus.Histogram
	agentsPerFlush prometheus.Histogram

	expired          prometheus.Counter
	retentionDeleted *prometheus.CounterVec
	ackFailures      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (m *metrics, err error) {
	// promauto panics when reg refuses a collector; Start reports that as
	// its error, as it always has.
	defer func() {
		if r := recover(); r != nil {
			rerr, ok := r.(error)
			if !ok {
				panic(r)
			}
			var are prometheus.AlreadyRegisteredError
			if errors.As(rerr, &are) {
				err = fmt.Errorf("projector metrics registered twice (one Start per registry): %w", rerr)
			} else {
				err = fmt.Errorf("register projector metrics: %w", rerr)
			}
		}
	}()
	f := promauto.With(reg)
	m = &metrics{
		projected: f.NewCounterVec(prometheus.CounterOpts{
			Name: "kanade_projection_messages_total",
			Help: "Messages applied to the read model, by projection.",
		}, []string{"projection"}),
		poison: f.NewCounterVec(prometheus.CounterOpts{
			Name: "kanade_projection_poison_total",
			Help: "Messages that could not be decoded or validated and were recorded in projection_errors, by projection.",
		}, []string{"projection"}),
		retries: f.NewCounterVec(prometheus.CounterOpts{
			Name: "kanade_projection_retries_total",
			Help: "Batches that failed on a database error and were handed back for redelivery, by projection.",
		}, []string{"projection"}),
		failures: f.NewCounterVec(prometheus.CounterOpts{
			Name: "kanade_projection_write_failures_total",
			Help: "Failed write transactions of the projectors, by projection and cause (disk_full, read_only, io_error, busy, out_of_memory, other); the messages are retried, never dropped.",
		}, []string{"projection", "cause"}),
		stalled: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kanade_projection_stalled",
			Help: "1 while a projection cannot write (its latest write failed and it is retrying), else 0; /api/health/fleet says why.",
		}, []string{"projection"}),
		batchSize: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kanade_projection_batch_size",
			Help:    "Messages per applied batch (one write transaction), by projection.",
			Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000},
		}, []string{"projection"}),
		batchDuration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kanade_projection_batch_duration_seconds",
			Help:    "Time to decode, write, commit and acknowledge one batch, by projection.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5},
		}, []string{"projection"}),
		lag: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kanade_projection_lag_messages",
			Help: "Stream messages not yet projected (stream last sequence minus checkpoint) after the latest batch, by projection.",
		}, []string{"projection"}),
		restarts: f.NewCounter(prometheus.CounterOpts{
			Name: "kanade_projection_restarts_total",
			Help: "Projector actors restarted by their supervisor after a failure.",
		}),
		heartbeats: f.NewCounter(prometheus.CounterOpts{
			Name: "kanade_heartbeats_received_total",
			Help: "Heartbeat messages received (before coalescing per PC).",
		}),
		flushDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "kanade_heartbeat_flush_duration_seconds",
			Help:    "Duration of one heartbeat flush (one write transaction).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		agentsPerFlush: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "kanade_heartbeat_agents_per_flush",
			Help:    "Distinct agents written by one heartbeat flush.",
			Buckets: []float64{1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000},
		}),
		expired: f.NewCounter(prometheus.CounterOpts{
			Name: "kanade_exec_expired_total",
			Help: "Execs marked expired because PCs never answered before the deadline.",
		}),
		retentionDeleted: f.NewCounterVec(prometheus.CounterOpts{
			Name: "kanade_retention_deleted_rows_total",
			Help: "Rows deleted by the retention sweep, by table.",
		}, []string{"table"}),
		ackFailures: f.NewCounterVec(prometheus.CounterOpts{
			Name: "kanade_jetstream_ack_failures_total",
			Help: "Acks, naks and terms of delivered messages that did not reach the server, by consumer and op; the messages come back after AckWait.",
		}, []string{"consumer", "op"}),
	}
	return m, nil
}
