package projector

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// A second Start on one registry is refused with an error, not a panic of
// promauto.
func TestMetricsOnARegistryTwiceIsAnError(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := newMetrics(reg); err != nil {
		t.Fatalf("first registration: %v", err)
	}
	_, err := newMetrics(reg)
	if err == nil || !strings.Contains(err.Error(), "registered twice") {
		t.Fatalf("second registration: %v, want registered twice", err)
	}
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		t.Fatalf("error %v does not wrap prometheus.AlreadyRegisteredError", err)
	}
}
