package lease

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the lease's Prometheus collectors.
type Metrics struct {
	leader   prometheus.Gauge
	renewals prometheus.Counter
	failures prometheus.Counter
}

// NewMetrics creates the collectors and registers them on reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kanade_leader",
			Help: "1 while this backend holds the leader lease (runs the scheduler and the projectors), else 0.",
		}),
		renewals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kanade_lease_renewals_total",
			Help: "Leader lease renewals that succeeded.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kanade_lease_renewal_failures_total",
			Help: "Leader lease renewals that failed (NATS unreachable, or the lease moved).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.leader, m.renewals, m.failures)
	}
	return m
}
