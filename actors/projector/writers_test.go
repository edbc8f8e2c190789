package projector

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"kanade-backend/actors/clock"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker/brokertest"
	"kanade-backend/storage/storagetest"
)

// Several backends may write one PostgreSQL database (replicas, or an old
// leader still finishing while the new one starts, scaleout.md §3.5). The
// tests here run two projector instances against one database at once and
// require that the database, not a look-up made before writing, decides
// what is new: every row once, every "new" event once. They run on SQLite
// too, where the single writer makes the same outcome trivially true.

// Two heartbeat projectors receive the same 1 000 first heartbeats and
// flush them at the same instant: 1 000 agents, each announced new by
// exactly one of them.
func TestTwoHeartbeatWritersAnnounceEachAgentOnce(t *testing.T) {
	storagetest.ForEachDialect(t, func(t *testing.T, st *storage.Store) {
		b := brokertest.Start(t)
		fakes := []*clock.Fake{clock.NewFake(t0), clock.NewFake(t0)}
		hs := []*harness{
			newHarness(t, harnessOpts{broker: b, store: st, clock: fakes[0]}).start(),
			newHarness(t, harnessOpts{broker: b, store: st, clock: fakes[1]}).start(),
		}
		const agents = 1000
		for i := range agents {
			heartbeat(t, hs[0], fmt.Sprintf("pc-%04d", i), t0, "1.0", nil, nil)
		}
		for _, h := range hs {
			h.waitReceived(agents)
		}
		var wg sync.WaitGroup
		for _, f := range fakes {
			wg.Add(1)
			go func() { defer wg.Done(); f.Advance(time.Second) }()
		}
		wg.Wait()
		newOnce := map[string]int{}
		testsupport.Eventually(t, waitFor, func() error {
			clear(newOnce)
			seen := 0
			for _, h := range hs {
				for _, ev := range eventsOf[*messages.AgentsSeen](h) {
					for _, a := range ev.Agents {
						seen++
						if a.New {
							newOnce[a.PcID]++
						}
					}
				}
			}
			if seen != 2*agents {
				return fmt.Errorf("%d agents seen, want %d (both flushes)", seen, 2*agents)
			}
			return nil
		})
		if n := hs[0].count("agents"); n != agents {
			t.Fatalf("%d agents rows, want %d", n, agents)
		}
		for i := range agents {
			if pc := fmt.Sprintf("pc-%04d", i); newOnce[pc] != 1 {
				t.Fatalf("%s announced new %d times", pc, newOnce[pc])
			}
		}
	})
}

// Two audit projectors, each on a broker of its own, project the same
// 1 000 events (every tenth published twice) into one database; the second
// broker holds them in reverse order, so the same event has other stream
// sequences there and only its content tells it apart. Each event is one
// row, and announced (AuditProjected) by exactly one of the projectors.
func TestTwoAuditWritersProjectEachEventOnce(t *testing.T) {
	storagetest.ForEachDialect(t, func(t *testing.T, st *storage.Store) {
		const events = 1000
		var msgs []pubMsg
		for i := range events {
			b, _ := json.Marshal(messages.AuditEvent{Actor: messages.ActorOperator, Action: messages.ActionExec,
				Target: str(fmt.Sprintf("job-%d", i%7)), Payload: map[string]any{"n": i}, OccurredAt: t0.Add(time.Duration(i) * time.Millisecond)})
			m := pubMsg{subject: "audit.operator.exec", data: b}
			msgs = append(msgs, m)
			if i%10 == 0 {
				msgs = append(msgs, m) // a publisher's retry
			}
		}
		reversed := slices.Clone(msgs)
		slices.Reverse(reversed)
		hs := projectOnTwoBrokers(t, st, messages.StreamAudit, DurableAudit, msgs, reversed)
		if n := hs[0].count("audit_log"); n != events {
			t.Fatalf("%d audit rows, want %d", n, events)
		}
		announced := map[int64]int{}
		for _, h := range hs {
			for _, ev := range eventsOf[*messages.AuditProjected](h) {
				announced[ev.ID]++
			}
		}
		wantEachOnce(t, "audit row", announced, events)
		var distinct int
		if err := st.R.NewSelect().TableExpr("audit_log").ColumnExpr("count(DISTINCT payload)").
			Scan(context.Background(), &distinct); err != nil || distinct != events {
			t.Fatalf("%d distinct payloads (%v), want %d", distinct, err, events)
		}
	})
}

// Two results projectors, each on a broker of its own, project the same
// 1 000 answers to one broadcast (the second broker holds them in another
// order) into one database at the same time: 1 000 rows, each announced
// (ResultsProjected) by exactly one of them, and the exec's counters count
// each of its 1 000 expected PCs once.
func TestTwoResultsWritersProjectEachResultOnce(t *testing.T) {
	storagetest.ForEachDialect(t, func(t *testing.T, st *storage.Store) {
		const pcs = 1000
		expected := make([]string, pcs)
		var msgs []pubMsg
		for i := range pcs {
			expected[i] = fmt.Sprintf("pc-%04d", i)
			exit := 0
			if i%10 == 0 {
				exit = 1
			}
			msgs = append(msgs, result("req-all", expected[i], exit, "", ""))
		}
		insertExec(t, st, execFixture{id: "ex", expected: expected, requests: map[string]string{"req-all": messages.SubjectCommandsAll}})
		// Shuffled, so that both writers' batches hold many of the same
		// keys at the same time (reversed, their first batches would be
		// disjoint and the second ones mere redeliveries).
		shuffled := slices.Clone(msgs)
		rand.New(rand.NewPCG(12, 1000)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		// The first batch to be written waits (up to a second) for the
		// other writer's before committing: on PostgreSQL the second one's
		// INSERT then meets rows the first has written and not committed.
		var arrived atomic.Int32
		both := make(chan struct{})
		setBeforeCommit(t, func(projection string) error {
			if projection == ProjResults {
				if arrived.Add(1) == 2 {
					close(both)
				}
				select {
				case <-both:
				case <-time.After(time.Second):
				}
			}
			return nil
		})
		hs := projectOnTwoBrokers(t, st, messages.StreamResults, DurableResults, msgs, shuffled)
		if n := hs[0].count("execution_results"); n != pcs {
			t.Fatalf("%d result rows, want %d", n, pcs)
		}
		announced := map[string]int{}
		var by [2]int
		for w, h := range hs {
			for _, ev := range eventsOf[*messages.ResultsProjected](h) {
				for _, r := range ev.Results {
					announced[r.RequestID+"/"+r.PcID]++
					by[w]++
				}
			}
		}
		wantEachOnce(t, "result", announced, pcs)
		wantExecNow(t, st, "ex", storage.ExecFailed, 900, 100)
		if n := hs[0].count("exec_expected", "answered_at IS NULL"); n != 0 {
			t.Fatalf("%d expected PCs without an answer", n)
		}
		t.Logf("new results: %d and %d; batches retried: %.0f and %.0f", by[0], by[1], hs[0].metric("kanade_projection_retries_total", "projection", ProjResults),
			hs[1].metric("kanade_projection_retries_total", "projection", ProjResults))
	})
}

// projectOnTwoBrokers publishes each batch on a broker of its own, runs a
// projector instance per broker on st, both at once, and returns their
// harnesses once both consumers of stream have had every message
// acknowledged.
func projectOnTwoBrokers(t *testing.T, st *storage.Store, stream, durable string, batches ...[]pubMsg) []*harness {
	t.Helper()
	var hs []*harness
	for _, batch := range batches {
		b := brokertest.Start(t)
		publishJS(t, b.JS, batch)
		hs = append(hs, newHarness(t, harnessOpts{broker: b, store: st}))
	}
	for _, h := range hs {
		h.start()
	}
	for _, h := range hs {
		h.consumerIdle(stream, durable)
	}
	return hs
}

// wantEachOnce checks that want things were announced, each once.
func wantEachOnce[K comparable](t *testing.T, what string, announced map[K]int, want int) {
	t.Helper()
	if len(announced) != want {
		t.Fatalf("%d %ss announced, want %d", len(announced), what, want)
	}
	for k, n := range announced {
		if n != 1 {
			t.Fatalf("%s %v announced %d times", what, k, n)
		}
	}
}
