package projector

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"kanade-backend/actors/clock"
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
		eventually(t, 20*time.Second, func() error {
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
		var hs []*harness
		for _, batch := range [][]pubMsg{msgs, reversed} {
			b := brokertest.Start(t)
			publishJS(t, b.JS, batch)
			hs = append(hs, newHarness(t, harnessOpts{broker: b, store: st}))
		}
		for _, h := range hs {
			h.start()
		}
		for _, h := range hs {
			h.consumerIdle(messages.StreamAudit, DurableAudit)
		}
		if n := hs[0].count("audit_log"); n != events {
			t.Fatalf("%d audit rows, want %d", n, events)
		}
		announced := map[int64]int{}
		for _, h := range hs {
			for _, ev := range eventsOf[*messages.AuditProjected](h) {
				announced[ev.ID]++
			}
		}
		if len(announced) != events {
			t.Fatalf("%d events announced, want %d", len(announced), events)
		}
		for id, n := range announced {
			if n != 1 {
				t.Fatalf("audit row %d announced %d times", id, n)
			}
		}
		var distinct int
		if err := st.R.NewSelect().TableExpr("audit_log").ColumnExpr("count(DISTINCT payload)").
			Scan(context.Background(), &distinct); err != nil || distinct != events {
			t.Fatalf("%d distinct payloads (%v), want %d", distinct, err, events)
		}
	})
}
