package broadcastbench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/uptrace/bun"

	"kanade-backend/internal/apptest"
	"kanade-backend/internal/sim"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker/brokertest"
	"kanade-backend/storage/storagetest"
)

// sizes are the fleet sizes to run (KANADE_BENCH_AGENTS, comma-separated;
// default 10 000 and 100 000).
func sizes() []int {
	var out []int
	for _, f := range strings.Split(os.Getenv("KANADE_BENCH_AGENTS"), ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		out = []int{10_000, 100_000}
	}
	return out
}

// BenchmarkBroadcast runs, per fleet size N, a backend (in this process:
// embedded NATS, SQLite, every actor) and N simulated agents in a
// kanade-fleet process of their own, and times an operator's
// POST /api/exec/{job} with target all (the exec API: N expected PCs
// resolved and recorded, one commands.all published) and the broadcast
// from that request until the exec is completed, which the results
// projection sets in the transaction of the last answer's row: every one
// of the N rows is committed. lag_s is that commit after the RESULTS
// stream stored the last agent's answer.
//
// The fleet runs apart because agents are other machines: in the
// backend's process, 100 000 simulated agents shared its Go scheduler and
// its garbage collector, and the agents' answering queued the backend's
// projection behind them, which no real deployment does. On this one box
// the two processes still share the cores.
//
// The raw ceiling of the same run (raw_s) is the same N results published
// to JetStream from a plain loop (acks awaited) and inserted into a fresh
// SQLite database of the same schema by a plain loop of 500-row
// statements, one transaction each. %_of_raw is raw_s ÷ broadcast_s.
//
//	go test -run '^$' -bench Broadcast -benchtime 1x -timeout 30m ./cmd/kanade-backend/app/broadcastbench/
//
// KANADE_BENCH_CPUPROFILE=DIR writes a CPU profile of the backend during
// each broadcast there; KANADE_BENCH_TIMELINE=1 prints, every 250 ms of
// it, the rows committed, the answers stored and the backend's CPU.
func BenchmarkBroadcast(b *testing.B) {
	for _, n := range sizes() {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			for b.Loop() {
				broadcast(b, n)
			}
		})
	}
}

func broadcast(b *testing.B, n int) {
	ctx := context.Background()
	be := apptest.Start(b)
	be.JSON(b, "POST", "/api/jobs", `{"id":"bench","version":"1","execute":{"shell":"powershell","script":"echo ok\nexit 0","timeout":"10m"}}`, 200, nil)
	fleet := startFleet(b, be.NATSURL, n)
	// "all" is the agents the backend has seen: wait for every first
	// heartbeat to be projected.
	apptest.Eventually(b, 5*time.Minute, func() error {
		c, err := be.Store.R.NewSelect().Model((*storage.Agent)(nil)).Count(ctx)
		if err != nil || c != int64(n) {
			return fmt.Errorf("%d agents projected, want %d (%v)", c, n, err)
		}
		return nil
	})

	stopProfile := startProfile(b, n)
	stopTimeline := timeline(b, be, fleet)
	cpu0, fleetCPU0 := testsupport.ProcessCPU(), fleet.cpuTime(b)
	t0 := time.Now()
	var resp messages.ExecResponse
	be.JSON(b, "POST", "/api/exec/bench", `{"target":{"all":true}}`, 200, &resp)
	api := time.Since(t0)
	if resp.ExpectedPcs != n {
		b.Fatalf("expected_pcs %d, want %d", resp.ExpectedPcs, n)
	}
	var ex storage.Execution
	for {
		if err := be.Store.R.NewSelect().Model(&ex).Column("status", "success_count", "failure_count").
			Where("exec_id = ?", resp.ExecID).Scan(ctx); err != nil {
			b.Fatal(err)
		}
		if ex.Status != storage.ExecPending && ex.Status != storage.ExecRunning {
			break
		}
		if time.Since(t0) > 10*time.Minute {
			b.Fatalf("exec still %s after 10 min: %d answers", ex.Status, ex.SuccessCount+ex.FailureCount)
		}
		time.Sleep(5 * time.Millisecond)
	}
	done := time.Now()
	total := done.Sub(t0)
	backendCPU, fleetCPU := testsupport.ProcessCPU()-cpu0, fleet.cpuTime(b)-fleetCPU0
	stopTimeline()
	stopProfile()
	backendRSS, fleetRSS := peakRSS("self"), peakRSS(strconv.Itoa(fleet.cmd.Process.Pid))
	if ex.Status != storage.ExecCompleted || ex.SuccessCount != n {
		b.Fatalf("exec %s with %d successes, %d failures; want completed, %d", ex.Status, ex.SuccessCount, ex.FailureCount, n)
	}
	rows, err := be.Store.R.NewSelect().Model((*storage.ExecutionResult)(nil)).Where("exec_id = ?", resp.ExecID).Count(ctx)
	if err != nil || rows != int64(n) {
		b.Fatalf("%d result rows, want %d (%v)", rows, n, err)
	}
	js, err := jetstream.New(be.Conn)
	if err != nil {
		b.Fatal(err)
	}
	st, err := js.Stream(ctx, messages.StreamResults)
	if err != nil {
		b.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	lag := done.Sub(info.State.LastTime)

	rawPub, rawIns := rawCeiling(b, n)
	raw := rawPub + rawIns
	b.ReportMetric(api.Seconds(), "exec_api_s")
	b.ReportMetric(total.Seconds(), "broadcast_s")
	b.ReportMetric(lag.Seconds(), "lag_s")
	b.ReportMetric(raw.Seconds(), "raw_s")
	b.ReportMetric(raw.Seconds()/total.Seconds()*100, "%_of_raw")
	b.ReportMetric(backendCPU.Seconds(), "backend_cpu_s")
	b.ReportMetric(fleetCPU.Seconds(), "fleet_cpu_s")
	b.ReportMetric(fleet.spawned.Seconds(), "fleet_start_s")
	b.ReportMetric(float64(backendRSS)/(1<<20), "backend_peak_rss_MB")
	b.ReportMetric(float64(fleetRSS)/(1<<20), "fleet_peak_rss_MB")
	b.ReportMetric(0, "ns/op")
	b.Logf("%d agents: POST /api/exec %.3f s; last row committed %.2f s after the request, %.2f s after the last answer was stored; "+
		"raw ceiling %.2f s (publish %.2f s + insert %.2f s) = %.0f %% of raw; CPU during the broadcast: backend %.1f s, fleet %.1f s; "+
		"fleet process: agents spawned %.2f s after its start, peak RSS %d MB; backend peak RSS %d MB; load %s",
		n, api.Seconds(), total.Seconds(), lag.Seconds(), raw.Seconds(), rawPub.Seconds(), rawIns.Seconds(),
		raw.Seconds()/total.Seconds()*100, backendCPU.Seconds(), fleetCPU.Seconds(), fleet.spawned.Seconds(),
		fleetRSS>>20, backendRSS>>20, loadavg())
}

// rawCeiling publishes n results like the agents' to a fresh broker's
// RESULTS stream from a plain loop (every ack awaited) and inserts the
// rows they make into a fresh database with plain 500-row statements, one
// transaction each, and returns the two times.
func rawCeiling(b *testing.B, n int) (time.Duration, time.Duration) {
	ctx := context.Background()
	br := brokertest.Start(b)
	now := time.Now().UTC()
	job := "bench"
	rows := make([]storage.ExecutionResult, n)
	t0 := time.Now()
	var futures []jetstream.PubAckFuture
	for i, pc := range sim.PCIDs("SIM-", n) {
		r := messages.ExecResult{RequestID: "raw-req", PcID: pc, Stdout: "ok\n", StartedAt: now, FinishedAt: now, ManifestID: &job}
		data, _ := json.Marshal(r)
		f, err := br.JS.PublishAsync(messages.ResultsSubject(r.RequestID), data, jetstream.WithStallWait(time.Minute))
		if err != nil {
			b.Fatal(err)
		}
		futures = append(futures, f)
		rows[i] = storage.ExecutionResult{RequestID: r.RequestID, PcID: pc, JobID: &job, Stdout: r.Stdout,
			StartedAt: storage.T(now), FinishedAt: storage.T(now), RecordedAt: storage.T(now), StreamSeq: uint64(i + 1)}
	}
	<-br.JS.PublishAsyncComplete()
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		}
	}
	pub := time.Since(t0)

	db := storagetest.OpenAt(b, filepath.Join(b.TempDir(), "raw.db"))
	t0 = time.Now()
	for i := 0; i < n; i += 500 {
		part := rows[i:min(i+500, n)]
		err := db.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
			args := make([]any, 0, len(part)*11)
			vals := make([]string, len(part))
			for j, r := range part {
				args = append(args, r.RequestID, r.PcID, nil, r.JobID, r.ExitCode, r.Stdout, r.Stderr,
					r.StartedAt, r.FinishedAt, r.RecordedAt, int64(r.StreamSeq))
				vals[j] = "(?,?,?,?,?,?,?,?,?,?,?)"
			}
			_, err := tx.Tx.ExecContext(ctx, "INSERT INTO execution_results (request_id, pc_id, exec_id, job_id, exit_code, stdout, stderr, started_at, finished_at, recorded_at, stream_seq) VALUES "+
				strings.Join(vals, ","), args...)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return pub, time.Since(t0)
}

// peakRSS is the peak resident set size (VmHWM) in bytes of process pid
// ("self" for this one).
func peakRSS(pid string) uint64 {
	data, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func loadavg() string {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// fleetProcess is a kanade-fleet child process.
type fleetProcess struct {
	cmd     *exec.Cmd
	started time.Time
	// spawned is when the fleet logged that its agents exist, after
	// started.
	spawned time.Duration
}

// startFleet builds kanade-fleet and runs n agents against natsURL until
// the benchmark ends.
func startFleet(b *testing.B, natsURL string, n int) *fleetProcess {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "kanade-fleet")
	if out, err := exec.Command("go", "build", "-o", bin, "kanade-backend/cmd/kanade-fleet").CombinedOutput(); err != nil {
		b.Fatalf("build kanade-fleet: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--nats-url", natsURL, "--agents", strconv.Itoa(n), "--heartbeat", "30s", "--log-level", "info")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	f := &fleetProcess{cmd: cmd, started: time.Now()}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start kanade-fleet: %v", err)
	}
	spawned := make(chan time.Duration, 1)
	var logTail []string // for a fleet that exits early
	var mu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, "simulated fleet started") {
				spawned <- time.Since(f.started)
			}
			mu.Lock()
			logTail = append(logTail[max(0, len(logTail)-20):], line)
			mu.Unlock()
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	b.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	select {
	case f.spawned = <-spawned:
	case err := <-exited:
		mu.Lock()
		defer mu.Unlock()
		b.Fatalf("kanade-fleet exited before its agents started (%v):\n%s", err, strings.Join(logTail, "\n"))
	case <-time.After(2 * time.Minute):
		b.Fatal("kanade-fleet did not start its agents within 2 min")
	}
	return f
}

// cpuTime is the fleet process's user and system CPU time so far.
func (f *fleetProcess) cpuTime(b *testing.B) time.Duration {
	d, err := f.cpu()
	if err != nil {
		b.Fatalf("read the fleet's CPU time: %v", err)
	}
	return d
}

// cpu is cpuTime for a goroutine other than the benchmark's, which must
// not call Fatal.
func (f *fleetProcess) cpu() (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", f.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses: utime and
	// stime are the 12th and 13th of them, in clock ticks (100 a second
	// on Linux).
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// startProfile writes a CPU profile of the broadcast alone (from the exec
// request to the last row committed; not the fleet's start nor the raw
// ceiling) to $KANADE_BENCH_CPUPROFILE/broadcast-N.pprof when that
// directory is set, and returns its stop.
func startProfile(b *testing.B, n int) func() {
	dir := os.Getenv("KANADE_BENCH_CPUPROFILE")
	if dir == "" {
		return func() {}
	}
	return testsupport.CPUProfile(b, filepath.Join(dir, fmt.Sprintf("broadcast-%d.pprof", n)))
}

// timeline prints, when KANADE_BENCH_TIMELINE is set, every 250 ms until
// its stop: the result rows committed, the answers the RESULTS stream
// holds, and this process's and the fleet's CPU over the interval (% of
// one core). It shows whether the projection keeps up while the fleet
// answers or waits for the last answer, and whether the two processes
// have the cores to themselves meanwhile.
func timeline(b *testing.B, be *apptest.Backend, fleet *fleetProcess) func() {
	if os.Getenv("KANADE_BENCH_TIMELINE") == "" {
		return func() {}
	}
	js, err := jetstream.New(be.Conn)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		lastFleet, _ := fleet.cpu()
		t0, last, lastCPU := time.Now(), time.Now(), testsupport.ProcessCPU()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			rows, _ := be.Store.R.NewSelect().Model((*storage.ExecutionResult)(nil)).Count(ctx)
			var stored uint64
			if st, err := js.Stream(ctx, messages.StreamResults); err == nil {
				if info, err := st.Info(ctx); err == nil {
					stored = info.State.Msgs
				}
			}
			fleetCPU, _ := fleet.cpu()
			now, cpu := time.Now(), testsupport.ProcessCPU()
			elapsed := float64(now.Sub(last))
			fmt.Fprintf(os.Stderr, "t=%.2fs rows=%d stored=%d cpu=%.0f%% fleet=%.0f%%\n",
				now.Sub(t0).Seconds(), rows, stored, float64(cpu-lastCPU)/elapsed*100, float64(fleetCPU-lastFleet)/elapsed*100)
			last, lastCPU, lastFleet = now, cpu, fleetCPU
		}
	}()
	return func() { cancel(); <-done }
}
