package health_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/http/health"
	"kanade-backend/http/internal/fleettest"
	"kanade-backend/internal/apptest"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker"
	"kanade-backend/storage/broker/brokertest"
	"kanade-backend/storage/storagetest"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		jsOK          bool
		known, active int
		want          string
	}{
		{true, 0, 0, health.StatusUnknown},
		{true, 5, 3, health.StatusOK},
		{true, 5, 1, health.StatusOK},
		{true, 5, 0, health.StatusDegraded},
		{false, 5, 5, health.StatusDegraded},
		{false, 0, 0, health.StatusDegraded},
	}
	for _, c := range cases {
		if got := health.Classify(c.jsOK, c.known, c.active); got != c.want {
			t.Errorf("Classify(%v, %d, %d) = %s, want %s", c.jsOK, c.known, c.active, got, c.want)
		}
	}
}

func fleetHealth(t *testing.T, b *apptest.Backend, wantStatus int) health.Fleet {
	t.Helper()
	resp, out := b.Do(t, http.MethodGet, "/api/health/fleet", nil)
	if resp.StatusCode != wantStatus {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, wantStatus, out)
	}
	var f health.Fleet
	if err := json.Unmarshal(out, &f); err != nil {
		t.Fatalf("decode %s: %v", out, err)
	}
	return f
}

func insertResults(t *testing.T, st *storage.Store, finished ...struct {
	at   time.Time
	exit int
}) {
	t.Helper()
	rows := make([]storage.ExecutionResult, len(finished))
	for i, f := range finished {
		rows[i] = storage.ExecutionResult{
			RequestID: fmt.Sprintf("req-%d", i), PcID: "PC-1", ExitCode: f.exit,
			StartedAt: storage.T(f.at.Add(-time.Second)), FinishedAt: storage.T(f.at), RecordedAt: storage.T(f.at),
			StreamSeq: uint64(i + 1),
		}
	}
	err := st.InTx(context.Background(), func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewInsert().Model(&rows).Exec(ctx)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestFleetHealth(t *testing.T) {
	b := apptest.Start(t)
	now := time.Now().UTC()

	f := fleetHealth(t, b, 200)
	if f.Status != health.StatusUnknown || f.Agents.Known != 0 || !f.JetStream.AllOK ||
		f.JetStream.Total != 15 || f.JetStream.Healthy != 15 || f.JetStream.Missing == nil || f.RecentResults.WindowHours != 24 {
		t.Fatalf("no agents: %+v", f)
	}

	agents := []fleettest.Agent{
		{PcID: "A1", Seen: now.Add(-5 * time.Second)},
		{PcID: "A2", Seen: now.Add(-30 * time.Second)},
		{PcID: "A3", Seen: now.Add(-100 * time.Second)},
		{PcID: "S1", Seen: now.Add(-3 * time.Minute)},
		{PcID: "S2", Seen: now.Add(-48 * time.Hour)},
	}
	fleettest.InsertAgents(t, b.Store, agents...)
	type res = struct {
		at   time.Time
		exit int
	}
	insertResults(t, b.Store, res{now.Add(-time.Hour), 0}, res{now.Add(-2 * time.Hour), 1}, res{now.Add(-23 * time.Hour), -1},
		res{now.Add(-25 * time.Hour), 1})

	f = fleetHealth(t, b, 200)
	if f.Status != health.StatusOK || f.Agents != (health.Agents{Known: 5, Active: 3, Stale: 2}) {
		t.Fatalf("3 alive + 2 stale: %+v", f)
	}
	if f.RecentResults != (health.RecentResults{WindowHours: 24, Total: 3, Failed: 2}) {
		t.Fatalf("recent results: %+v", f.RecentResults)
	}

	// The whole fleet silent: degraded, 503, same body shape.
	for i := range agents[:3] {
		agents[i].Seen = now.Add(-10 * time.Minute)
	}
	fleettest.InsertAgents(t, b.Store, agents...)
	f = fleetHealth(t, b, 503)
	if f.Status != health.StatusDegraded || f.Agents != (health.Agents{Known: 5, Active: 0, Stale: 5}) || !f.JetStream.AllOK {
		t.Fatalf("all stale: %+v", f)
	}

	// A missing stream degrades even a healthy fleet, and is named.
	agents[0].Seen = time.Now().UTC()
	fleettest.InsertAgents(t, b.Store, agents[0])
	if f := fleetHealth(t, b, 200); f.Status != health.StatusOK {
		t.Fatalf("one alive again: %+v", f)
	}
	if err := b.JS.DeleteStream(context.Background(), messages.StreamEvents); err != nil {
		t.Fatal(err)
	}
	f = fleetHealth(t, b, 503)
	if f.Status != health.StatusDegraded || f.JetStream.AllOK || f.JetStream.Healthy != 14 ||
		!slices.Equal(f.JetStream.Missing, []string{messages.StreamEvents}) {
		t.Fatalf("deleted stream: %+v", f)
	}

	wantMethod, _ := b.Do(t, http.MethodPost, "/api/health/fleet", nil)
	if wantMethod.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", wantMethod.StatusCode)
	}
}

// TestFleetHealthNATSAway stops the NATS server under a connected client:
// every resource is reported missing at once (no per-lookup timeouts) and
// the verdict is degraded.
func TestFleetHealthNATSAway(t *testing.T) {
	br := brokertest.Start(t)
	st := storagetest.Open(t)
	fleettest.InsertAgents(t, st, fleettest.Agent{PcID: "A1", Seen: time.Now()})
	d := health.Deps{
		DB:        st.R,
		Probe:     func(ctx context.Context) broker.Status { return broker.Probe(ctx, br.JS) },
		Connected: br.Conn.IsConnected,
	}
	f, err := health.Check(context.Background(), d)
	if err != nil || f.Status != health.StatusOK {
		t.Fatalf("before: %+v %v", f, err)
	}
	br.Server.Shutdown()
	br.Server.WaitForShutdown()
	apptest.Eventually(t, 5*time.Second, func() error {
		if br.Conn.IsConnected() {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	start := time.Now()
	f, err = health.Check(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	if f.Status != health.StatusDegraded || f.JetStream.Healthy != 0 || len(f.JetStream.Missing) != 15 || f.Agents.Active != 1 {
		t.Fatalf("NATS away: %+v", f)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("check took %v with NATS away", took)
	}
}

// The backend's own problems degrade an otherwise healthy fleet, and are
// listed with their reason; none is an empty list, never null.
func TestProblemsDegradeTheVerdict(t *testing.T) {
	br := brokertest.Start(t)
	st := storagetest.Open(t)
	fleettest.InsertAgents(t, st, fleettest.Agent{PcID: "A1", Seen: time.Now()})
	var problems []health.Problem
	d := health.Deps{
		DB:       st.R,
		Probe:    func(ctx context.Context) broker.Status { return broker.Probe(ctx, br.JS) },
		Problems: func() []health.Problem { return problems },
	}
	f, err := health.Check(context.Background(), d)
	if err != nil || f.Status != health.StatusOK || f.Problems == nil || len(f.Problems) != 0 {
		t.Fatalf("no problem: %+v %v", f, err)
	}
	body, _ := json.Marshal(f)
	if !strings.Contains(string(body), `"problems":[]`) {
		t.Fatalf("body %s", body)
	}
	problems = []health.Problem{{Check: health.CheckDisk, Name: "/data (database)", Reason: "low disk space: 10 MiB free"}}
	f, err = health.Check(context.Background(), d)
	if err != nil || f.Status != health.StatusDegraded || len(f.Problems) != 1 || f.Problems[0].Name != "/data (database)" {
		t.Fatalf("with a problem: %+v %v", f, err)
	}
}
