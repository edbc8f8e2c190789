package metrics

import (
	"sync/atomic"
	"testing"

	"kanade-backend/internal/testsupport"
)

func natsGauge(t *testing.T, r *Registry) float64 {
	t.Helper()
	return testsupport.RequireMetric(t, r, "kanade_nats_connected").Value
}

// The gauge follows the reported state until the connection itself is
// known, then the connection's real state at every scrape.
func TestNATSConnectedFollowsTheConnection(t *testing.T) {
	r := New()
	if got := natsGauge(t, r); got != 0 {
		t.Fatalf("before any report: %v", got)
	}
	r.NATSState(true)
	if got := natsGauge(t, r); got != 1 {
		t.Fatalf("after a report of up: %v", got)
	}
	var up atomic.Bool
	r.FollowNATS(up.Load)
	if got := natsGauge(t, r); got != 0 {
		t.Fatalf("connection down, gauge %v", got)
	}
	up.Store(true) // e.g. a late first connect no callback reported
	if got := natsGauge(t, r); got != 1 {
		t.Fatalf("connection up, gauge %v", got)
	}
}
