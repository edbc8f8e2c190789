package testsupport

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Series is what the series of one metric that match a label filter add
// up to (Metric): a counter's or gauge's value, a histogram's sample count
// and sum. A metric is one kind or the other, so the fields of the other
// kind stay zero.
type Series struct {
	// Found says that some series matched.
	Found bool
	// Value sums the counters' and gauges' values.
	Value float64
	// Count and Sum sum the histograms' sample counts and sample sums.
	Count uint64
	Sum   float64
}

// Metric gathers g and adds up the series of metric name that carry every
// label of labels, given as name, value pairs ("projection", "results");
// an empty value matches a series without that label. A metric that is
// not registered, or has no matching series, gives a zero Series: a
// labelled counter is not exported until something creates its series, so
// "nothing yet" reads as 0. Use RequireMetric where absence is a failure.
func Metric(t testing.TB, g prometheus.Gatherer, name string, labels ...string) Series {
	t.Helper()
	if len(labels)%2 != 0 {
		t.Fatalf("metric %s: labels %q are not name, value pairs", name, labels)
	}
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	var s Series
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			match := true
			for i := 0; i < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					match = false
					break
				}
			}
			if !match {
				continue
			}
			s.Found = true
			s.Value += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			s.Count += m.GetHistogram().GetSampleCount()
			s.Sum += m.GetHistogram().GetSampleSum()
		}
	}
	return s
}

// RequireMetric is Metric, failing the test when no series matches.
func RequireMetric(t testing.TB, g prometheus.Gatherer, name string, labels ...string) Series {
	t.Helper()
	s := Metric(t, g, name, labels...)
	if !s.Found {
		t.Fatalf("no series of metric %s with labels %q", name, labels)
	}
	return s
}
