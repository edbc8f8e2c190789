// Package metrics owns the Prometheus registry and serves /metrics. Each
// feature registers its own kanade_* collectors on the Registerer it is
// given, next to the code that updates them; this package adds only what
// belongs to the process as a whole: HTTP latency and the NATS connection
// state.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Registry is the process registry with Go runtime and process collectors.
type Registry struct {
	*prometheus.Registry

	httpDuration *prometheus.HistogramVec
	natsUp       prometheus.Gauge
	natsChanges  prometheus.Counter
}

// New builds the registry.
func New() *Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r := &Registry{
		Registry: reg,
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kanade_http_request_duration_seconds",
			Help:    "HTTP request latency by route pattern and status code.",
			Buckets: []float64{.001, .0025, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 10},
		}, []string{"method", "route", "code"}),
		natsUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kanade_nats_connected",
			Help: "1 while the backend's NATS connection is up.",
		}),
		natsChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kanade_nats_connection_changes_total",
			Help: "Disconnects and reconnects of the backend's NATS connection.",
		}),
	}
	reg.MustRegister(r.httpDuration, r.natsUp, r.natsChanges)
	return r
}

// ObserveHTTP records one finished request (server.Options.Observe).
func (r *Registry) ObserveHTTP(method, route string, status int, d time.Duration) {
	r.httpDuration.WithLabelValues(method, route, strconv.Itoa(status)).Observe(d.Seconds())
}

// NATSState records the connection state (broker.ConnectOptions.OnStateChange).
func (r *Registry) NATSState(connected bool) {
	if connected {
		r.natsUp.Set(1)
	} else {
		r.natsUp.Set(0)
	}
	r.natsChanges.Inc()
}

// Handler serves the registry in the Prometheus text format.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.Registry, promhttp.HandlerOpts{Registry: r.Registry})
}
