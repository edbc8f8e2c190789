//go:build unix

package projector

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage/broker/brokertest"
)

// BenchmarkHeartbeats10k measures the heartbeat projection of a fleet of
// 10 000 agents (KANADE_BENCH_HEARTBEAT_AGENTS overrides) that heartbeat
// every 30 s (333 heartbeats/s, spread evenly),
// over a window of KANADE_BENCH_HEARTBEAT_SECONDS (default 10) of wall
// time: write transactions per second (target ≤ 1), agents per flush, and
// the CPU the projection costs, as the process CPU with the projectors
// running minus a baseline window in which the same heartbeats are
// published with nobody subscribed (the publishing agents and the embedded
// server's routing are in both windows).
//
//	go test -run '^$' -bench Heartbeats10k -benchtime 1x ./actors/projector/
func BenchmarkHeartbeats10k(b *testing.B) {
	const interval = 30 * time.Second
	agents := 10_000
	if n, err := strconv.Atoi(os.Getenv("KANADE_BENCH_HEARTBEAT_AGENTS")); err == nil && n > 0 {
		agents = n
	}
	window := 10 * time.Second
	if s, err := strconv.Atoi(os.Getenv("KANADE_BENCH_HEARTBEAT_SECONDS")); err == nil && s > 0 {
		window = time.Duration(s) * time.Second
	}
	for b.Loop() {
		br := brokertest.Start(b)
		fleet := newFleet(br, agents, interval)

		// Baseline: the fleet heartbeats, nobody projects.
		base := fleet.measure(b, window)

		h := newHarness(b, harnessOpts{broker: br}).start()
		// Warm-up: every agent has a row, so the window measures the
		// steady state (updates), not the first inserts.
		fleet.burst(b)
		for h.count("agents") < agents {
			time.Sleep(50 * time.Millisecond)
		}
		flushes0 := h.metric("kanade_heartbeat_flush_duration_seconds")
		agents0 := h.histogramSum("kanade_heartbeat_agents_per_flush")
		dur0 := h.histogramSum("kanade_heartbeat_flush_duration_seconds")
		with := fleet.measure(b, window)
		flushes := h.metric("kanade_heartbeat_flush_duration_seconds") - flushes0
		perFlush := (h.histogramSum("kanade_heartbeat_agents_per_flush") - agents0) / flushes
		flushMs := (h.histogramSum("kanade_heartbeat_flush_duration_seconds") - dur0) / flushes * 1000
		h.stop()

		txPerSec := flushes / window.Seconds()
		projCPU := with - base
		b.ReportMetric(txPerSec, "write_tx/s")
		b.ReportMetric(perFlush, "agents/flush")
		b.ReportMetric(flushMs, "ms/flush")
		b.ReportMetric(projCPU, "projection_cpu_%")
		b.ReportMetric(with, "process_cpu_%")
		b.ReportMetric(base, "baseline_cpu_%")
		b.Logf("%d agents every %v for %v: %.2f write tx/s, %.0f agents and %.1f ms per flush; CPU %% of one core: %.2f with projection, %.2f baseline (publishers + server), projection %.2f",
			agents, interval, window, txPerSec, perFlush, flushMs, with, base, projCPU)
		if txPerSec > 1.05 {
			b.Errorf("%.2f write transactions per second, want at most 1", txPerSec)
		}
	}
}

// histogramSum returns the sum of a histogram without labels.
func (h *harness) histogramSum(name string) float64 {
	return testsupport.Metric(h.t, h.reg, name).Sum
}

// fleet publishes heartbeats like agents do: each of n agents every
// interval, spread evenly.
type fleet struct {
	br       *brokertest.Broker
	n        int
	interval time.Duration
	next     int
}

func newFleet(br *brokertest.Broker, n int, interval time.Duration) *fleet {
	return &fleet{br: br, n: n, interval: interval}
}

func (f *fleet) publish(b *testing.B) {
	pc := fmt.Sprintf("PC-%05d", f.next%f.n)
	f.next++
	host := pc + ".corp.example"
	family := "windows"
	data, _ := json.Marshal(messages.Heartbeat{PcID: pc, At: time.Now(), AgentVersion: "0.21.2", Hostname: &host, OsFamily: &family})
	if err := f.br.Conn.Publish(messages.HeartbeatSubject(pc), data); err != nil {
		b.Fatal(err)
	}
}

// burst publishes one heartbeat of every agent at once.
func (f *fleet) burst(b *testing.B) {
	for range f.n {
		f.publish(b)
	}
}

// measure publishes at the fleet's rate for window and returns the process
// CPU used meanwhile, in % of one core.
func (f *fleet) measure(b *testing.B, window time.Duration) float64 {
	perTick := 10
	tick := f.interval / time.Duration(f.n/perTick) // 30 ms for 10 per tick
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	cpu0, t0 := testsupport.ProcessCPU(), time.Now()
	go func() {
		defer wg.Done()
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				for range perTick {
					f.publish(b)
				}
			}
		}
	}()
	time.Sleep(window)
	close(stop)
	wg.Wait()
	return (testsupport.ProcessCPU() - cpu0).Seconds() / time.Since(t0).Seconds() * 100
}
