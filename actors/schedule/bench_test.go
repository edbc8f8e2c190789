package schedule

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
)

// Scheduler benchmarks (architecture.md §6). Each prints the project's
// figure next to a raw ceiling measured in the same run:
//
//	go test -run '^$' -bench 'Schedules' -benchtime 1x ./actors/schedule/

// putSchedules writes n schedules into KV with a pipeline of async
// publishes (setup, not measured).
func putSchedules(b *testing.B, h *harness, n int, cron string, mode messages.ScheduleMode) {
	b.Helper()
	ctx := context.Background()
	kv := h.kv(messages.BucketSchedules)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	var failed atomic.Int32
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			js := fmt.Sprintf(`{"id":"s%05d","cron":%q,"job_id":"job%d","target":{"all":true},"mode":%q}`, i, cron, i%100, mode)
			if _, err := kv.Put(ctx, fmt.Sprintf("s%05d", i), []byte(js)); err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		b.Fatalf("%d puts failed", failed.Load())
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// rawKVRead is the ceiling of loading: reading every value of the bucket
// through one watch, as the supervisor does, doing nothing with them.
func rawKVRead(b *testing.B, kv jetstream.KeyValue) (time.Duration, int) {
	b.Helper()
	t0 := time.Now()
	w, err := kv.WatchAll(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	n := 0
	for e := range w.Updates() {
		if e == nil {
			break
		}
		n++
	}
	return time.Since(t0), n
}

// BenchmarkSchedulesLoad10000: from supervisor start to 10 000 schedule
// actors running with their timers armed (budget ≤ 2 s), and the resident
// memory per schedule (heap delta / N; budget ≤ 10 KB). Raw ceiling: one
// watch reading the same 10 000 KV values.
func BenchmarkSchedulesLoad10000(b *testing.B) {
	const n = 10_000
	for b.Loop() {
		h := newHarness(b, harnessOpts{real: true, noStart: true})
		for _, mode := range []messages.ScheduleMode{messages.ModeEveryTick} {
			putSchedules(b, h, n, "0 0 0 1 1 *", mode)
		}
		c0 := testsupport.ProcessCPU()
		raw, got := rawKVRead(b, h.kv(messages.BucketSchedules))
		rawCPU := testsupport.ProcessCPU() - c0
		if got != n {
			b.Fatalf("raw read %d values", got)
		}
		before := heapInUse()
		c0 = testsupport.ProcessCPU()
		t0 := time.Now()
		h.start(0)
		h.eventually(30*time.Second, func() error {
			if v := h.gauge("kanade_schedule_actors_running"); v != n {
				return fmt.Errorf("%v actors running", v)
			}
			return nil
		})
		load := time.Since(t0)
		loadCPU := testsupport.ProcessCPU() - c0
		after := heapInUse()
		b.ReportMetric(load.Seconds(), "load_s")
		b.ReportMetric(loadCPU.Seconds(), "load_cpu_s")
		b.ReportMetric(raw.Seconds(), "raw_kv_read_s")
		b.ReportMetric(rawCPU.Seconds(), "raw_kv_read_cpu_s")
		b.ReportMetric(float64(after-before)/n/1024, "KiB/schedule")
		h.stop()
	}
}

// BenchmarkSchedulesTimerDelivery: N every_tick schedules on
// "*/1 * * * * *" with the real clock, firing through a recording stub of
// the exec engine that answers at once; the figure is timer delivery, the
// time from the cron instant to the actor starting to handle the tick, not
// fire lateness (for the time to the Command at a subscriber, with the
// real engine and database, see actors/schedule/firebench). Raw ceiling:
// N bare time.AfterFunc timers aimed at the same second boundaries in the
// same process.
func BenchmarkSchedulesTimerDelivery(b *testing.B) {
	for _, n := range []int{100, 1000, 10_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				benchLateness(b, n)
			}
		})
	}
}

func benchLateness(b *testing.B, n int) {
	const seconds = 5
	h := newHarness(b, harnessOpts{real: true, noStart: true})
	h.exec.set(func(x *execDouble) { x.noRows = true })
	h.putJob("job", "30s")
	putSchedules(b, h, n, "*/1 * * * * *", messages.ModeEveryTick)
	samples := make([]time.Duration, n*(seconds+2))
	var idx atomic.Int64
	var recording atomic.Bool
	hook := func(string) {
		if !recording.Load() {
			return
		}
		now := time.Now()
		if i := idx.Add(1) - 1; int(i) < len(samples) {
			samples[i] = now.Sub(now.Truncate(time.Second))
		}
	}
	h.onTick.Store(&hook)
	h.start(0)
	h.eventually(30*time.Second, func() error {
		if v := h.gauge("kanade_schedule_actors_running"); v != float64(n) {
			return fmt.Errorf("%v running", v)
		}
		return nil
	})
	// Skip the first ticks (warm-up), then record whole seconds.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(1500 * time.Millisecond)))
	recording.Store(true)
	time.Sleep(seconds * time.Second)
	recording.Store(false)
	got := samples[:min(int(idx.Load()), len(samples))]
	h.stop()

	raw := rawTimerLateness(n, seconds)
	p := func(s []time.Duration, q float64) float64 {
		s = slices.Clone(s)
		slices.Sort(s)
		if len(s) == 0 {
			return -1
		}
		return float64(s[int(q*float64(len(s)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(p(got, 0.5), "p50_ms")
	b.ReportMetric(p(got, 0.99), "p99_ms")
	b.ReportMetric(p(raw, 0.5), "raw_timer_p50_ms")
	b.ReportMetric(p(raw, 0.99), "raw_timer_p99_ms")
	b.ReportMetric(float64(len(got))/seconds/float64(n), "ticks/s/schedule")
}

// rawTimerLateness arms n timers per second for seconds seconds, each for
// the next second boundary, and returns how late each callback ran.
func rawTimerLateness(n, seconds int) []time.Duration {
	var mu sync.Mutex
	out := make([]time.Duration, 0, n*seconds)
	var wg sync.WaitGroup
	next := time.Now().Truncate(time.Second).Add(time.Second)
	for range seconds {
		for range n {
			wg.Add(1)
			target := next
			time.AfterFunc(time.Until(target), func() {
				l := time.Since(target)
				mu.Lock()
				out = append(out, l)
				mu.Unlock()
				wg.Done()
			})
		}
		next = next.Add(time.Second)
	}
	wg.Wait()
	return out
}
