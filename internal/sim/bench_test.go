package sim_test

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"kanade-backend/internal/sim"
	"kanade-backend/messages"
)

// BenchmarkFleet10k measures a fleet of 10 000 agents at a 30 s heartbeat
// against an in-process nats-server: how long it takes to start and how
// long a commands.all takes to come back as 10 000 ExecResults (ns/op).
// The raw ceiling of the same machine in the same run (raw_ns/op) is the
// same 10 000 results published from a plain loop on one connection and
// received by the same subscriber: no actors, no pin check, no routing.
// peak_rss_MB is the whole test process, nats-server (with the RESULTS
// stream storing every result) included: an upper bound for the fleet.
// The fleet's own memory and idle CPU are measured as a separate process
// by scripts/bench-fleet.
//
//	go test -run '^$' -bench Fleet10k -benchtime 5x ./internal/sim
func BenchmarkFleet10k(b *testing.B) {
	const agents = 10000
	br := startBroker(b)
	res := watchResults(b, br.Conn)

	t0 := time.Now()
	startFleet(b, br, sim.Config{Agents: agents, Heartbeat: 30 * time.Second})
	startMS := float64(time.Since(t0).Microseconds()) / 1000

	collect := func(requestID string) {
		for range agents {
			if r := res.next(b, 30*time.Second); r.RequestID != requestID || r.ExitCode != 0 {
				b.Fatalf("result %+v", r)
			}
		}
	}

	b.ResetTimer()
	for range b.N {
		cmd := command("bench", "1", "exit 0")
		publish(b, br.Conn, messages.SubjectCommandsAll, cmd)
		collect(cmd.RequestID)
	}
	b.StopTimer()

	// Raw ceiling: the same results, straight from a loop.
	var rawTotal time.Duration
	for range b.N {
		cmd := command("bench", "1", "exit 0")
		now := time.Now()
		t0 := time.Now()
		for _, pc := range sim.PCIDs("SIM-", agents) {
			id := cmd.ID
			body, _ := json.Marshal(messages.ExecResult{RequestID: cmd.RequestID, PcID: pc, StartedAt: now, FinishedAt: now, ManifestID: &id})
			if err := br.Conn.Publish(messages.ResultsSubject(cmd.RequestID), body); err != nil {
				b.Fatal(err)
			}
		}
		collect(cmd.RequestID)
		rawTotal += time.Since(t0)
	}

	b.ReportMetric(startMS, "start_ms")
	b.ReportMetric(float64(rawTotal.Nanoseconds())/float64(b.N), "raw_ns/op")
	b.ReportMetric(float64(peakRSS())/(1<<20), "peak_rss_MB")
}

// peakRSS is the process's peak resident set size (VmHWM) in bytes.
func peakRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}
