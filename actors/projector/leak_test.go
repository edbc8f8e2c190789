package projector

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage/broker/brokertest"
)

// Every goroutine the projectors start (pumps, watch readers, pull
// requests, subscriptions, timers) ends when they stop, including those of
// an incarnation that crashed and was restarted.
//
// goleak cannot be used as is: the in-process nats-server keeps goroutines
// for the durable consumers, which outlive the projectors by design. So
// this compares the goroutines outside nats-server before and after.
func TestNoGoroutineLeftAfterStop(t *testing.T) {
	b := brokertest.Start(t)
	h := newHarness(t, harnessOpts{broker: b, cfg: Config{RestartBackoff: 10 * time.Millisecond}})
	// The test's own async-publish reply subscription starts here, so it is
	// part of the baseline.
	publishJS(t, b.JS, []pubMsg{result("req-warmup", "pc", 0, "", "")})
	before := clientGoroutines()

	var crashed atomicBool
	setBeforeCommit(t, func(projection string) error {
		if projection == ProjAudit && crashed.CompareAndSwap(false, true) {
			panic("injected crash")
		}
		return nil
	})
	h.start()
	var msgs []pubMsg
	for i := range 100 {
		msgs = append(msgs, result(fmt.Sprintf("req-%d", i), "pc", 0, "", ""))
	}
	msgs = append(msgs, pubMsg{subject: "audit.operator.exec", data: []byte(`{"actor":"operator","action":"exec","target":null,"payload":{},"occurred_at":"2026-11-26T00:00:00Z"}`)})
	publishJS(t, b.JS, msgs)
	heartbeat(t, h, "pc-1", t0, "1", nil, nil)
	if _, err := b.KV(t, messages.BucketJobs).Put(context.Background(), "j", []byte(fmt.Sprintf(jobJSON, "j", "1"))); err != nil {
		t.Fatal(err)
	}
	h.waitCount("execution_results", 101, 5*time.Second)
	h.waitCount("audit_log", 1, 5*time.Second)
	h.waitCount("jobs", 1, 5*time.Second)
	if !crashed.Load() {
		t.Fatal("crash not injected")
	}
	h.stop()

	testsupport.Eventually(t, waitFor, func() error {
		var leaked []string
		for id, stack := range clientGoroutines() {
			if _, ok := before[id]; !ok {
				leaked = append(leaked, stack)
			}
		}
		if len(leaked) > 0 {
			return fmt.Errorf("%d goroutines left:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
		return nil
	})
}

// clientGoroutines returns the stacks of the goroutines that are not the
// embedded NATS server's, by goroutine id.
func clientGoroutines() map[string]string {
	buf := make([]byte, 1<<22)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "nats-server/v2/server") || strings.Contains(g, "runtime.Stack") {
			continue
		}
		id, _, _ := strings.Cut(strings.TrimPrefix(g, "goroutine "), " ")
		out[id] = g
	}
	return out
}
