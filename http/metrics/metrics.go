// Package metrics owns the Prometheus registry and serves /metrics. Each
// feature registers its own kanade_* collectors on the Registerer it is
// given, next to the code that updates them; this package adds only what
// belongs to the process as a whole: HTTP latency and the NATS connection
// state.
package metrics

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Registry is the process registry with Go runtime and process collectors.
type Registry struct {
	*prometheus.Registry

	httpDuration *prometheus.HistogramVec
	natsChanges  prometheus.Counter

	// natsUp is the last state the connection reported; natsState, once
	// set (FollowNATS), is asked at every scrape instead, so the gauge is
	// the client's real state whatever callbacks it did or did not call.
	natsUp    atomic.Bool
	natsState atomic.Pointer[func() bool]
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
		natsChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kanade_nats_connection_changes_total",
			Help: "Disconnects and reconnects of the backend's NATS connection.",
		}),
	}
	natsUp := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kanade_nats_connected",
		Help: "1 while the backend's NATS connection is up.",
	}, func() float64 {
		up := r.natsUp.Load()
		if f := r.natsState.Load(); f != nil {
			up = (*f)()
		}
		if up {
			return 1
		}
		return 0
	})
	reg.MustRegister(r.httpDuration, natsUp, r.natsChanges)
	return r
}

// ObserveHTTP records one finished request (server.Options.Observe).
func (r *Registry) ObserveHTTP(method, route string, status int, d time.Duration) {
	r.httpDuration.WithLabelValues(method, route, strconv.Itoa(status)).Observe(d.Seconds())
}

// NATSState records the connection state (broker.ConnectOptions.OnStateChange).
func (r *Registry) NATSState(connected bool) {
	r.natsUp.Store(connected)
	r.natsChanges.Inc()
}

// FollowNATS makes kanade_nats_connected ask connected (the client's
// IsConnected) at every scrape.
func (r *Registry) FollowNATS(connected func() bool) {
	r.natsState.Store(&connected)
}

// Handler serves the registry in the Prometheus text format.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.Registry, promhttp.HandlerOpts{Registry: r.Registry})
}
