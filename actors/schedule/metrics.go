package schedule

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"kanade-backend/messages"
)

// Metrics are the scheduler's kanade_* collectors.
type Metrics struct {
	ticks    map[string]prometheus.Counter
	lateness prometheus.Histogram
	running  prometheus.Gauge
	restarts prometheus.Counter
	faulted  prometheus.Gauge
	invalid  prometheus.Gauge
	loaded   prometheus.Gauge
	// skippedPCs counts stored pc_ids left out of targets (fleet).
	skippedPCs prometheus.Counter
}

// NewMetrics registers the collectors on reg (nil: unregistered, for
// tests that do not look at them).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg) // a nil reg registers nothing
	ticks := f.NewCounterVec(prometheus.CounterOpts{
		Name: "kanade_schedule_ticks_total",
		Help: "Schedule ticks by outcome (fired, skipped, missed, failed).",
	}, []string{"outcome"})
	m := &Metrics{
		ticks: map[string]prometheus.Counter{},
		lateness: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "kanade_schedule_fire_lateness_seconds",
			Help:    "Delay between a cron instant and the moment its schedule actor handles the tick.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5},
		}),
		running: f.NewGauge(prometheus.GaugeOpts{
			Name: "kanade_schedule_actors_running",
			Help: "Schedule actors currently running (one per valid schedule).",
		}),
		restarts: f.NewCounter(prometheus.CounterOpts{
			Name: "kanade_schedule_actor_restarts_total",
			Help: "Restarts of schedule actors after a failure.",
		}),
		faulted: f.NewGauge(prometheus.GaugeOpts{
			Name: "kanade_schedules_faulted",
			Help: "Schedules whose actor failed too often and was stopped.",
		}),
		invalid: f.NewGauge(prometheus.GaugeOpts{
			Name: "kanade_schedules_invalid",
			Help: "Schedules in KV that cannot run (bad cron, zone, duration, ...).",
		}),
		loaded: f.NewGauge(prometheus.GaugeOpts{
			Name: "kanade_schedules_load_seconds",
			Help: "Time from the scheduler's start to the end of the initial KV snapshot.",
		}),
		skippedPCs: f.NewCounter(prometheus.CounterOpts{
			Name: "kanade_schedule_skipped_pc_ids_total",
			Help: "Stored pc_ids (agents, group members) left out of every schedule target because they are not valid subject tokens; each is counted and logged once.",
		}),
	}
	for _, o := range []string{messages.TickFired, messages.TickSkipped, messages.TickMissed, messages.TickFailed} {
		m.ticks[o] = ticks.WithLabelValues(o)
	}
	return m
}

func (m *Metrics) countTick(outcome string) {
	if c, ok := m.ticks[outcome]; ok {
		c.Inc()
	}
}

func (m *Metrics) late(d time.Duration) { m.lateness.Observe(max(d, 0).Seconds()) }
