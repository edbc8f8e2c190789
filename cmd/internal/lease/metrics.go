package lease

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are the lease's Prometheus collectors.
type Metrics struct {
	leader   prometheus.Gauge
	renewals prometheus.Counter
	failures prometheus.Counter
}

// NewMetrics creates the collectors and registers them on reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg) // nil: not registered (tests)
	m := &Metrics{
		leader: f.NewGauge(prometheus.GaugeOpts{
			Name: "kanade_leader",
			Help: "1 while this backend holds the leader lease (runs the scheduler and the projectors), else 0.",
		}),
		renewals: f.NewCounter(prometheus.CounterOpts{
			Name: "kanade_lease_renewals_total",
			Help: "Leader lease renewals that succeeded.",
		}),
		failures: f.NewCounter(prometheus.CounterOpts{
			Name: "kanade_lease_renewal_failures_total",
			Help: "Leader lease renewals that failed (NATS unreachable, or the lease moved).",
		}),
	}
	return m
}
