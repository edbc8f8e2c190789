package sim_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/cmd/kanade-backend/app"
	"kanade-backend/internal/apptest"
	"kanade-backend/internal/sim"
	"kanade-backend/storage/broker"
	"kanade-backend/storage/broker/brokertest"
)

// BenchmarkConnectPerPCCredentials measures how long 1 000 simulated
// agents take to start when each connects with its own per-PC token
// (authorized by the backend's auth callout on its embedded NATS), next to
// the same 1 000 agents, each on its own connection too, presenting the
// legacy shared token to a nats-server that checks it itself, as before
// per-PC credentials (shared_ms, the raw ceiling), and to the shared token
// accepted by the callout (shared_callout_ms). A start is everything an
// agent does before it can run a Command: connect, subscribe its
// subjects, open and watch its agent_groups key. The budget is
// per_pc_ms ≤ 2 × shared_ms. The CPU time of each start (cpu_ms, the
// whole process) is reported too: on a shared machine it moves less than
// the wall time.
//
//	go test -run '^$' -bench ConnectPerPCCredentials -benchtime 3x ./internal/sim
//
// KANADE_BENCH_AGENTS changes the fleet size (default 1 000).
func BenchmarkConnectPerPCCredentials(b *testing.B) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("KANADE_BENCH_AGENTS")); err == nil && v > 0 {
		n = v
	}
	ids := sim.PCIDs("KIT-", n)
	shared := func(token string) []sim.Credential {
		out := make([]sim.Credential, n)
		for i, id := range ids {
			out[i] = sim.Credential{PcID: id, Token: token}
		}
		return out
	}

	// The backend, with per-PC credentials and the legacy token beside them.
	be := apptest.Start(b, apptest.Options{Configure: func(c *app.Config) { c.NATS.Token = "legacy-shared" }})
	perPC := kit(b, be, ids)
	// A nats-server that checks the shared token itself (no callout), with
	// the same buckets.
	native := startNativeTokenBroker(b, "legacy-shared")

	// run starts the agents and returns the wall time and the CPU time of
	// the whole process (agents, server and backend alike are in it): on a
	// shared machine the CPU time is the steadier of the two.
	run := func(url string, creds []sim.Credential) (wall, cpu time.Duration) {
		b.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c0, t0 := processCPU(), time.Now()
		f, err := sim.Start(ctx, sim.Config{NATSURL: url, Credentials: creds, Heartbeat: time.Hour, Logger: testLogger(b)})
		if err != nil {
			b.Fatalf("start %d agents: %v", len(creds), err)
		}
		wall, cpu = time.Since(t0), processCPU()-c0
		if err := f.Stop(ctx); err != nil {
			b.Fatalf("stop: %v", err)
		}
		return wall, cpu
	}
	var perPCTime, sharedNative, sharedCallout [2]time.Duration
	add := func(sum *[2]time.Duration, url string, creds []sim.Credential) {
		wall, cpu := run(url, creds)
		sum[0] += wall
		sum[1] += cpu
	}
	b.ResetTimer()
	for range b.N {
		// Interleaved, so that a noisy neighbour hurts all three alike.
		add(&sharedNative, native.ClientURL(), shared("legacy-shared"))
		add(&perPCTime, be.NATSURL, perPC)
		add(&sharedCallout, be.NATSURL, shared("legacy-shared"))
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(ms(perPCTime[0]), "per_pc_ms")
	b.ReportMetric(ms(sharedNative[0]), "shared_ms")
	b.ReportMetric(ms(sharedCallout[0]), "shared_callout_ms")
	b.ReportMetric(float64(perPCTime[0])/float64(sharedNative[0]), "ratio")
	b.ReportMetric(ms(perPCTime[1]), "per_pc_cpu_ms")
	b.ReportMetric(ms(sharedNative[1]), "shared_cpu_ms")
	b.ReportMetric(float64(perPCTime[1])/float64(sharedNative[1]), "cpu_ratio")

	// And the fleet works with its per-PC credentials: one broadcast comes
	// back as n results.
	f := be.StartFleet(b, sim.Config{Credentials: perPC, Heartbeat: time.Hour})
	be.JSON(b, "POST", "/api/jobs", map[string]any{"id": "hello", "version": "1",
		"execute": map[string]any{"shell": "powershell", "script": "exit 0", "timeout": "30s"}}, http.StatusOK, nil)
	be.JSON(b, "POST", "/api/exec/hello", `{"target":{"all":true}}`, http.StatusOK, nil)
	apptest.Eventually(b, time.Minute, func() error {
		if got := f.Stats().ResultsSent; got != int64(n) {
			return fmt.Errorf("%d results of %d", got, n)
		}
		return nil
	})
}

// processCPU is the CPU time the test process has used (user + system).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startNativeTokenBroker is the embedded server as it was before per-PC
// credentials: the shared token checked by nats-server itself.
func startNativeTokenBroker(b *testing.B, token string) *brokertest.Broker {
	b.Helper()
	logger := testLogger(b)
	ns, err := broker.StartEmbedded(broker.EmbeddedOptions{StoreDir: b.TempDir(), Listen: "127.0.0.1:-1", Token: token, Logger: logger})
	if err != nil {
		b.Fatal(err)
	}
	nc, err := broker.Connect(broker.ConnectOptions{InProcess: ns, Token: token, Logger: logger})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { nc.Close(); ns.Shutdown() })
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := broker.Ensure(ctx, js, 1, logger); err != nil {
		b.Fatal(err)
	}
	return &brokertest.Broker{Server: ns.Server(), Embedded: ns, Conn: nc, JS: js}
}
