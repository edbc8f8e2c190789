package executions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"kanade-backend/cmd/kanade-backend/app/apptest"
	"kanade-backend/cmd/kanade-fleet/sim"
	"kanade-backend/messages"
)

// simResults records the ExecResults a simulated fleet publishes, with the
// time each arrived.
type simResults struct {
	mu  sync.Mutex
	got []simResult
}

type simResult struct {
	res messages.ExecResult
	at  time.Time
}

func (s *simResults) all() []simResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]simResult(nil), s.got...)
}

// startFleet runs n simulated agents (SIM-0001…) against b, with their
// agent_groups written to KV first, and records their results.
func startFleet(t *testing.T, b *apptest.Backend, n int, groups map[string][]string) (*sim.Fleet, *simResults) {
	t.Helper()
	ctx := context.Background()
	kv, err := b.JS.KeyValue(ctx, messages.BucketAgentGroups)
	if err != nil {
		t.Fatal(err)
	}
	for pc, gs := range groups {
		v, _ := json.Marshal(messages.AgentGroups{Groups: gs})
		if _, err := kv.Put(ctx, pc, v); err != nil {
			t.Fatal(err)
		}
	}
	rs := &simResults{}
	sub, err := b.Conn.Subscribe("results.>", func(m *nats.Msg) {
		var r messages.ExecResult
		if json.Unmarshal(m.Data, &r) == nil {
			rs.mu.Lock()
			rs.got = append(rs.got, simResult{res: r, at: time.Now()})
			rs.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	f, err := sim.Start(ctx, sim.Config{NATSURL: b.NATSURL, Agents: n, Heartbeat: time.Minute, Seed: 1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = f.Stop(ctx)
	})
	return f, rs
}

// Against the fleet simulator, which checks the version pin and the
// groups exactly as agents do: all + a group + a PC reach SIM-0001 three
// times (one result per request_id) and no Command is dropped for its
// pin; canary runs at once and wave1 about three seconds later.
func TestExecAgainstTheFleetSimulator(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t)
	putJob(t, b, "hello", "1.0.0", "echo hello")
	f, rs := startFleet(t, b, 4, map[string][]string{
		"SIM-0001": {"a", "canary"}, "SIM-0002": {"canary"}, "SIM-0003": {"wave1"}, "SIM-0004": {"wave1"},
	})

	execJob(t, b, "hello", `{"target":{"all":true,"groups":["a"],"pcs":["SIM-0001"]}}`)
	apptest.Eventually(t, 10*time.Second, func() error {
		if n := len(rs.all()); n != 6 {
			return errorf("%d results, want 6 (4 from commands.all, SIM-0001 twice more)", n)
		}
		return nil
	})
	perPC := map[string]map[string]bool{}
	for _, x := range rs.all() {
		if x.res.ExitCode != 0 || x.res.ManifestID == nil || *x.res.ManifestID != "hello" {
			t.Fatalf("result %+v", x.res)
		}
		if perPC[x.res.PcID] == nil {
			perPC[x.res.PcID] = map[string]bool{}
		}
		perPC[x.res.PcID][x.res.RequestID] = true
	}
	if len(perPC["SIM-0001"]) != 3 || len(perPC["SIM-0004"]) != 1 {
		t.Fatalf("request_ids per PC = %v", perPC)
	}
	if st := f.Stats(); st.DroppedPin != 0 || st.DroppedRevoked != 0 {
		t.Fatalf("simulated agents dropped Commands: %+v", st)
	}

	before := len(rs.all())
	t0 := time.Now()
	execJob(t, b, "hello", `{"rollout":{"waves":[{"group":"canary","delay":"0s"},{"group":"wave1","delay":"3s"}]}}`)
	apptest.Eventually(t, 10*time.Second, func() error {
		if n := len(rs.all()) - before; n != 4 {
			return errorf("%d wave results, want 4", n)
		}
		return nil
	})
	for _, x := range rs.all()[before:] {
		d := x.at.Sub(t0)
		canary := x.res.PcID == "SIM-0001" || x.res.PcID == "SIM-0002"
		if canary && d > 2*time.Second || !canary && (d < 2900*time.Millisecond || d > 6*time.Second) {
			t.Errorf("%s answered %v after the exec", x.res.PcID, d)
		}
	}
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
