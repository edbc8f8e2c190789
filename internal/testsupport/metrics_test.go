package testsupport

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Series are added up over the labels asked for; an empty label value
// matches a series without that label; histograms give their count and
// sum; an absent metric or series reads as zero, and RequireMetric fails
// on it.
func TestMetricAddsUpMatchingSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	failures := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "failures_total", Help: "h"}, []string{"projection", "cause"})
	failures.WithLabelValues("results", "disk").Add(2)
	failures.WithLabelValues("results", "io").Add(3)
	failures.WithLabelValues("audit", "disk").Add(7)
	live := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "live", Help: "h"}, []string{"event"})
	live.WithLabelValues("agent").Set(4)
	plain := prometheus.NewGauge(prometheus.GaugeOpts{Name: "plain", Help: "h"})
	plain.Set(1.5)
	flush := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "flush_seconds", Help: "h"})
	flush.Observe(0.25)
	flush.Observe(0.5)
	reg.MustRegister(failures, live, plain, flush)

	for _, c := range []struct {
		name   string
		labels []string
		want   Series
	}{
		{"failures_total", []string{"projection", "results"}, Series{Found: true, Value: 5}},
		{"failures_total", []string{"projection", "results", "cause", "io"}, Series{Found: true, Value: 3}},
		{"failures_total", nil, Series{Found: true, Value: 12}},
		{"failures_total", []string{"projection", "kv"}, Series{}},
		{"live", []string{"event", "agent"}, Series{Found: true, Value: 4}},
		{"plain", []string{"event", ""}, Series{Found: true, Value: 1.5}},
		{"live", []string{"event", ""}, Series{}},
		{"flush_seconds", nil, Series{Found: true, Count: 2, Sum: 0.75}},
		{"absent_total", nil, Series{}},
	} {
		if got := Metric(t, reg, c.name, c.labels...); got != c.want {
			t.Errorf("Metric(%s, %q) = %+v, want %+v", c.name, c.labels, got, c.want)
		}
	}
	if got := RequireMetric(t, reg, "plain"); got.Value != 1.5 {
		t.Errorf("RequireMetric(plain) = %+v", got)
	}

	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		RequireMetric(r, reg, "failures_total", "projection", "kv")
	}()
	<-done
	if !strings.Contains(r.msg, "failures_total") {
		t.Fatalf("RequireMetric of a missing series: failure %q", r.msg)
	}
}
