package projector

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"kanade-backend/actors/audit"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker/brokertest"
)

// snapshot is the projected content that must come back from the streams.
type snapshot struct {
	Results []storage.ExecutionResult
	Audit   []storage.AuditRow
	Facts   []storage.InventoryFact
	Errors  []string
}

func takeSnapshot(t *testing.T, h *harness) snapshot {
	t.Helper()
	ctx := context.Background()
	var s snapshot
	if err := h.store.R.NewSelect().Model(&s.Results).Order("request_id", "pc_id").Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.store.R.NewSelect().Model(&s.Audit).Order("stream_seq").Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.store.R.NewSelect().Model(&s.Facts).Order("pc_id", "job_id").Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.store.R.NewSelect().TableExpr("projection_errors").
		ColumnExpr("projection || ' ' || stream || ' ' || stream_seq || ' ' || subject").
		Order("projection", "stream_seq").Scan(ctx, &s.Errors); err != nil {
		t.Fatal(err)
	}
	// recorded_at is the projection time, and audit ids are local row ids.
	for i := range s.Results {
		s.Results[i].RecordedAt = storage.Time{}
	}
	for i := range s.Audit {
		s.Audit[i].RecordedAt, s.Audit[i].ID = storage.Time{}, 0
	}
	for i := range s.Facts {
		s.Facts[i].RecordedAt = storage.Time{}
	}
	return s
}

func publishFixture(t *testing.T, b *brokertest.Broker) {
	t.Helper()
	ctx := context.Background()
	if _, err := b.KV(t, messages.BucketJobs).Put(ctx, "hw", []byte(`{"id":"hw","version":"1","description":null,`+
		`"execute":{"shell":"cmd","script":"x","timeout":"1m"},"require_approval":false,"inventory":{"display":[{"field":"cpu","label":"CPU"}]}}`)); err != nil {
		t.Fatal(err)
	}
	var msgs []pubMsg
	for i := range 90 {
		msgs = append(msgs, result(fmt.Sprintf("req-%03d", i/3), fmt.Sprintf("pc-%d", i%3), i%2, fmt.Sprintf(`{"cpu":%d}`, i), "hw"))
	}
	msgs = append(msgs, pubMsg{subject: "results.junk", data: []byte("junk")})
	publishJS(t, b.JS, msgs)
	pub := audit.NewPublisher(b.JS, nil)
	for i := range 20 {
		ev := audit.Event(messages.ActorOperator, messages.ActionExec, fmt.Sprintf("job%d", i), map[string]any{"i": i})
		ev.OccurredAt = t0.Add(time.Duration(i) * time.Second)
		if err := pub.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
}

func (h *harness) waitFixture() {
	h.t.Helper()
	h.waitCount("execution_results", 90, 10*time.Second)
	h.waitCount("audit_log", 20, 10*time.Second)
	h.consumerIdle(messages.StreamResults, DurableResults)
	h.consumerIdle(messages.StreamAudit, DurableAudit)
}

// The database file is deleted and the backend starts again on the same
// JetStream: the same rows come back from the streams (upstream kept the
// consumer positions and never re-projected, defect 5).
func TestWipedDatabaseIsRebuiltFromStreams(t *testing.T) {
	b := brokertest.Start(t)
	publishFixture(t, b)
	h := newHarness(t, harnessOpts{broker: b}).start()
	h.waitFixture()
	before := takeSnapshot(t, h)
	if len(before.Facts) != 3 || len(before.Errors) != 1 {
		t.Fatalf("fixture: %d facts, errors %v", len(before.Facts), before.Errors)
	}
	h.stop()

	h2 := newHarness(t, harnessOpts{broker: b, dbPath: filepath.Join(t.TempDir(), "fresh.db")}).start()
	h2.waitFixture()
	after := takeSnapshot(t, h2)
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("rebuilt rows differ:\nbefore %d results %d audit %v\nafter  %d results %d audit %v",
			len(before.Results), len(before.Audit), before.Errors, len(after.Results), len(after.Audit), after.Errors)
	}
}

// --rebuild empties the projections on the same database and projects them
// again; agents (not in any stream) stay.
func TestRebuildFlag(t *testing.T) {
	b := brokertest.Start(t)
	publishFixture(t, b)
	h := newHarness(t, harnessOpts{broker: b}).start()
	h.waitFixture()
	before := takeSnapshot(t, h)
	if _, err := h.store.W.ExecContext(context.Background(),
		`INSERT INTO agents (pc_id, agent_version, last_heartbeat, updated_at) VALUES ('pc-kept', '1', ?, ?)`,
		storage.FormatTime(t0), storage.FormatTime(t0)); err != nil {
		t.Fatal(err)
	}
	h.stop()

	h2 := newHarness(t, harnessOpts{broker: b, store: h.store, cfg: Config{Rebuild: true}}).start()
	h2.waitFixture()
	if after := takeSnapshot(t, h2); !reflect.DeepEqual(before, after) {
		t.Fatalf("rebuilt rows differ: %d/%d results, %d/%d audit", len(before.Results), len(after.Results), len(before.Audit), len(after.Audit))
	}
	if h2.count("agents", "pc_id = 'pc-kept'") != 1 {
		t.Fatal("--rebuild dropped agents, which no stream can rebuild")
	}
	if h2.count("jobs", "id = 'hw'") != 1 {
		t.Fatal("jobs mirror not refilled from KV")
	}
}

// A database restored from an older copy holds a checkpoint behind the
// consumer's ack floor: what came after the checkpoint is projected again.
func TestDatabaseBehindBrokerReprojectsFromCheckpoint(t *testing.T) {
	b := brokertest.Start(t)
	publishFixture(t, b)
	h := newHarness(t, harnessOpts{broker: b}).start()
	h.waitFixture()
	h.stop()
	ctx := context.Background()
	// As if the copy was taken at seq 45.
	for _, q := range []string{
		"DELETE FROM execution_results WHERE stream_seq > 45",
		"UPDATE projection_checkpoints SET last_seq = 45 WHERE projection = 'results'",
	} {
		if _, err := h.store.W.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	h2 := newHarness(t, harnessOpts{broker: b, store: h.store}).start()
	h2.waitCount("execution_results", 90, 10*time.Second)
}
