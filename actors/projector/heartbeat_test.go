package projector

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"kanade-backend/actors/clock"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

func heartbeat(t *testing.T, h *harness, pc string, at time.Time, version string, hostname, os *string) {
	t.Helper()
	b, _ := json.Marshal(messages.Heartbeat{PcID: pc, At: at, AgentVersion: version, Hostname: hostname, OsFamily: os})
	if err := h.broker.Conn.Publish(messages.HeartbeatSubject(pc), b); err != nil {
		t.Fatal(err)
	}
}

func str(s string) *string { return &s }

// waitReceived waits until the projector has received n heartbeats.
func (h *harness) waitReceived(n int) {
	h.t.Helper()
	testsupport.Eventually(h.t, waitFor, func() error {
		if got := h.metric("kanade_heartbeats_received_total", ""); got != float64(n) {
			return fmt.Errorf("received %v heartbeats, want %d", got, n)
		}
		return nil
	})
}

func agentRow(t *testing.T, h *harness, pc string) storage.Agent {
	t.Helper()
	var a storage.Agent
	if err := h.store.R.NewSelect().Model(&a).Where("pc_id = ?", pc).Scan(context.Background()); err != nil {
		t.Fatalf("agent %s: %v", pc, err)
	}
	return a
}

func TestHeartbeatsCoalescedAndOrderIndependent(t *testing.T) {
	storagetest.ForEachDialect(t, testHeartbeatsCoalescedAndOrderIndependent)
}

func testHeartbeatsCoalescedAndOrderIndependent(t *testing.T, st *storage.Store) {
	fake := clock.NewFake(t0)
	h := newHarness(t, harnessOpts{clock: fake, store: st}).start()
	flushes := func() float64 { return h.metric("kanade_heartbeat_flush_duration_seconds", "") }

	// 2 000 agents, each twice, plus three beats of pc-1 in one period.
	for i := range 2000 {
		heartbeat(t, h, fmt.Sprintf("pc-%04d", i), t0.Add(-time.Second), "1.0", nil, nil)
		heartbeat(t, h, fmt.Sprintf("pc-%04d", i), t0, "1.1", nil, nil)
	}
	heartbeat(t, h, "pc-1", t0.Add(2*time.Second), "2.0", nil, str("windows"))
	heartbeat(t, h, "pc-1", t0.Add(1*time.Second), "1.9", str("HOST-1"), str("linux"))
	heartbeat(t, h, "pc-1", t0.Add(3*time.Second), "2.1", str("OTHER"), nil)
	if err := h.broker.Conn.Publish("heartbeat.broken", []byte(`{"pc_id":`)); err != nil {
		t.Fatal(err)
	}
	h.waitReceived(4004)
	if flushes() != 0 {
		t.Fatal("flushed before the period ended")
	}
	fake.Advance(time.Second)
	testsupport.Eventually(t, waitFor, func() error {
		if flushes() != 1 {
			return fmt.Errorf("%v flushes", flushes())
		}
		return nil
	})
	// One write transaction for the whole period, whatever the fleet size.
	if n := h.count("agents"); n != 2001 {
		t.Fatalf("%d agents", n)
	}
	a := agentRow(t, h, "pc-1")
	if a.Hostname == nil || *a.Hostname != "HOST-1" || a.OsFamily == nil || *a.OsFamily != "windows" ||
		a.AgentVersion != "2.1" || !a.LastHeartbeat.Equal(t0.Add(3*time.Second)) || !a.UpdatedAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("pc-1 = %+v (%v, %v)", a, deref(a.Hostname), deref(a.OsFamily))
	}
	if a := agentRow(t, h, "pc-0007"); a.AgentVersion != "1.1" || !a.LastHeartbeat.Equal(t0) || a.Hostname != nil {
		t.Fatalf("pc-0007 = %+v", a)
	}
	h.waitCount("projection_errors", 1, time.Second, "projection = 'heartbeat'", "stream = ''", "stream_seq = 0", "subject = 'heartbeat.broken'")
	seen := eventsOf[*messages.AgentsSeen](h)
	if len(seen) != 1 || len(seen[0].Agents) != 2001 || !seen[0].Agents[0].New {
		t.Fatalf("AgentsSeen = %d events", len(seen))
	}

	// A late, older heartbeat: last_heartbeat and agent_version stay; the
	// first hostname stays; os_family stays; updated_at is the flush time.
	heartbeat(t, h, "pc-1", t0.Add(-time.Hour), "0.9", str("LATE"), str("macos"))
	h.waitReceived(4005)
	fake.Advance(time.Second)
	testsupport.Eventually(t, waitFor, func() error {
		if flushes() != 2 {
			return fmt.Errorf("%v flushes", flushes())
		}
		return nil
	})
	a = agentRow(t, h, "pc-1")
	if *a.Hostname != "HOST-1" || *a.OsFamily != "windows" || a.AgentVersion != "2.1" ||
		!a.LastHeartbeat.Equal(t0.Add(3*time.Second)) || !a.UpdatedAt.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("pc-1 after a late heartbeat = %+v", a)
	}
	seen = eventsOf[*messages.AgentsSeen](h)
	if len(seen) != 2 || len(seen[1].Agents) != 1 || seen[1].Agents[0].New {
		t.Fatalf("second AgentsSeen = %+v", seen[len(seen)-1])
	}
	// An idle period writes nothing.
	fake.Advance(5 * time.Second)
	time.Sleep(50 * time.Millisecond)
	if flushes() != 2 {
		t.Fatalf("%v flushes after idle periods", flushes())
	}
}

// Stopping the projectors writes what is pending, although the stop has
// already ended their base context (finalContext).
func TestHeartbeatFlushedAtStop(t *testing.T) {
	fake := clock.NewFake(t0)
	h := newHarness(t, harnessOpts{clock: fake}).start()
	heartbeat(t, h, "pc-stop", t0, "1", nil, nil)
	h.waitReceived(1)
	h.stop()
	if n := h.count("agents", "pc_id = 'pc-stop'"); n != 1 {
		t.Fatal("pending heartbeat lost at stop")
	}
}

// A heartbeat whose pc_id is not the one of its subject is forged (agent
// credentials let a PC publish only its own subject): it never becomes
// either PC's liveness and is kept as a projection error.
func TestHeartbeatForAnotherPCIsRefused(t *testing.T) {
	fake := clock.NewFake(t0)
	h := newHarness(t, harnessOpts{clock: fake}).start()
	b, _ := json.Marshal(messages.Heartbeat{PcID: "victim", At: t0, AgentVersion: "6.6.6"})
	if err := h.broker.Conn.Publish(messages.HeartbeatSubject("forger"), b); err != nil {
		t.Fatal(err)
	}
	heartbeat(t, h, "honest", t0, "1.0", nil, nil)
	h.waitReceived(2)
	fake.Advance(time.Second)
	h.waitCount("projection_errors", 1, 5*time.Second, "projection = 'heartbeat'", "subject = 'heartbeat.forger'",
		`error = 'heartbeat on heartbeat.forger carries pc_id "victim"'`)
	if n := h.count("agents"); n != 1 {
		t.Fatalf("%d agents, want only the honest one", n)
	}
	agentRow(t, h, "honest")
}
