package execrecord_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/uptrace/bun"

	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker/brokertest"
	"kanade-backend/storage/execrecord"
	"kanade-backend/storage/storagetest"
)

var t0 = time.Date(2026, 5, 20, 12, 0, 0, 0, time.UTC)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// seedExec writes an exec the way the engine does, with answers and
// counters the way the results projector does, and returns it.
func seedExec(t *testing.T, st *storage.Store, id string, pcs int, waves []storage.ExecWave, mutate func(*storage.Execution)) {
	t.Helper()
	ctx := context.Background()
	ex := &storage.Execution{
		ExecID: id, JobID: "job-1", Version: "1.0.0", InitiatedBy: "operator",
		Plan: json.RawMessage(`{"target":{"pcs":["x"]}}`), Subjects: json.RawMessage(`["commands.all"]`),
		TargetCount: 1, ExpectedPcs: pcs, SuccessCount: pcs, Status: storage.ExecCompleted,
		TimeoutSecs: 30, CreatedAt: storage.T(t0), DeadlineAt: storage.T(t0.Add(time.Hour)),
		FinishedAt: storage.T(t0.Add(time.Minute)), UpdatedAt: storage.T(t0.Add(time.Minute)),
		Manifest: json.RawMessage(`{"id":"job-1","version":"1.0.0"}`),
	}
	if mutate != nil {
		mutate(ex)
	}
	var reqs []storage.PublishedRequest
	var exp []storage.ExecExpected
	code := 0
	for i := range pcs {
		rid := fmt.Sprintf("%s-req-%05d", id, i)
		pc := fmt.Sprintf("%s-pc-with-a-longish-name-%05d", id, i)
		reqs = append(reqs, storage.PublishedRequest{RequestID: rid, ExecID: id, Subject: messages.CommandsPCSubject(pc), PublishedAt: storage.T(t0)})
		exp = append(exp, storage.ExecExpected{ExecID: id, PcID: pc, RequestID: &rid, ExitCode: &code, AnsweredAt: storage.T(t0)})
	}
	err := st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewInsert().Model(ex).Exec(ctx); err != nil {
			return err
		}
		if err := storage.InsertChunked(ctx, tx, reqs, false); err != nil {
			return err
		}
		if err := storage.InsertChunked(ctx, tx, exp, false); err != nil {
			return err
		}
		return storage.InsertChunked(ctx, tx, waves, false)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func load(t *testing.T, st *storage.Store, id string) *execrecord.Record {
	t.Helper()
	rec, err := execrecord.Load(context.Background(), st.R, id)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func recordMsgs(t *testing.T, br *brokertest.Broker) []string {
	t.Helper()
	ctx := context.Background()
	st, err := br.JS.Stream(ctx, messages.StreamExec)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(messages.SubjectCommandsExecAll))
	if err != nil {
		t.Fatal(err)
	}
	var subjects []string
	for s := range info.State.Subjects {
		subjects = append(subjects, s)
	}
	slices.Sort(subjects)
	return subjects
}

func TestLoadLeavesOutWhatTheProjectorsOwn(t *testing.T) {
	storagetest.ForEachDialect(t, testLoadLeavesOutWhatTheProjectorsOwn)
}

func testLoadLeavesOutWhatTheProjectorsOwn(t *testing.T, st *storage.Store) {
	seedExec(t, st, "e1", 3, nil, nil)
	rec := load(t, st, "e1")
	ex := rec.Exec
	if ex.Status != storage.ExecPending || ex.SuccessCount != 0 || !ex.FinishedAt.IsZero() {
		t.Fatalf("projector state leaked into the record: status %s success %d finished %v", ex.Status, ex.SuccessCount, ex.FinishedAt)
	}
	if ex.ExpectedPcs != 3 || ex.TargetCount != 1 || string(ex.Manifest) != `{"id":"job-1","version":"1.0.0"}` {
		t.Fatalf("engine columns missing: %+v", ex)
	}
	if len(rec.Requests) != 3 || len(rec.Expected) != 3 {
		t.Fatalf("requests %d expected %d, want 3 and 3", len(rec.Requests), len(rec.Expected))
	}

	// An exec the engine finished itself keeps its status.
	seedExec(t, st, "e2", 0, nil, func(ex *storage.Execution) { ex.Status, ex.TargetCount = storage.ExecCancelled, 0 })
	if got := load(t, st, "e2").Exec.Status; got != storage.ExecCancelled {
		t.Fatalf("cancelled exec recorded as %s", got)
	}
	if _, err := execrecord.Load(context.Background(), st.R, "nope"); !execrecord.IsNotFound(err) {
		t.Fatalf("missing exec: err = %v, want not found", err)
	}
}

// The full cycle: records published (a big one in several parts, one
// revised), the database wiped, the records restored.
func TestRestoreAfterWipeGivesTheEngineTablesBack(t *testing.T) {
	storagetest.RunDialects(t, testRestoreAfterWipe)
}

func testRestoreAfterWipe(t *testing.T, d storagetest.Dialect) {
	ctx := context.Background()
	br := brokertest.Start(t)
	st := d.Open(t)
	rid := "w0-req"
	waves := []storage.ExecWave{
		{ExecID: "waves", WaveIndex: 0, GroupName: "canary", DueAt: storage.T(t0), State: storage.WavePublished, RequestID: &rid, PublishedAt: storage.T(t0)},
		{ExecID: "waves", WaveIndex: 1, GroupName: "wave1", DueAt: storage.T(t0.Add(time.Hour)), State: storage.WavePending},
	}
	seedExec(t, st, "big", 3000, nil, nil)
	seedExec(t, st, "small", 2, nil, nil)
	seedExec(t, st, "waves", 1, waves, nil)
	pub := &execrecord.Publisher{JS: br.JS, PartBytes: 64 << 10}
	for _, id := range []string{"big", "small", "waves"} {
		if err := pub.Publish(ctx, load(t, st, id)); err != nil {
			t.Fatal(err)
		}
	}
	// A revision replaces the earlier one on the stream.
	if _, err := st.W.NewUpdate().Model((*storage.ExecWave)(nil)).Set("state = ?", storage.WaveCancelled).
		Where("exec_id = 'waves' AND wave_index = 1").Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, load(t, st, "waves")); err != nil {
		t.Fatal(err)
	}
	subjects := recordMsgs(t, br)
	count := map[string]int{}
	for _, s := range subjects {
		count[strings.Split(s, ".")[2]]++
	}
	if count["small"] != 1 || count["waves"] != 1 || count["big"] < 2 {
		t.Fatalf("stream holds %v, want one message for small and waves (older revision purged) and several parts for big", count)
	}
	want := map[string]*execrecord.Record{"big": load(t, st, "big"), "small": load(t, st, "small"), "waves": load(t, st, "waves")}

	// Nothing to do while the database has its executions.
	if res, err := execrecord.RestoreIfWiped(ctx, st, br.JS, quiet(), true); err != nil || res.Execs != 0 {
		t.Fatalf("restore on a full database: %+v, %v", res, err)
	}

	fresh := d.Open(t)
	// A database that has projected results and lost its executions to
	// retention keeps them lost.
	if res, err := execrecord.RestoreIfWiped(ctx, fresh, br.JS, quiet(), false); err != nil || res.Execs != 0 {
		t.Fatalf("restore into a database that is not new: %+v, %v", res, err)
	}
	res, err := execrecord.RestoreIfWiped(ctx, fresh, br.JS, quiet(), true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Execs != 3 || res.Skipped != 0 {
		t.Fatalf("restore: %+v, want 3 execs, none skipped", res)
	}
	for id, w := range want {
		got := load(t, fresh, id)
		a, _ := json.Marshal(got)
		b, _ := json.Marshal(w)
		if string(a) != string(b) {
			t.Fatalf("exec %s restored differently:\n got %.300s\nwant %.300s", id, a, b)
		}
	}
	var state string
	if err := fresh.R.NewSelect().Model((*storage.ExecWave)(nil)).Column("state").
		Where("exec_id = 'waves' AND wave_index = 1").Scan(ctx, &state); err != nil || state != storage.WaveCancelled {
		t.Fatalf("wave 1 restored as %q (%v), want the later revision's cancelled", state, err)
	}
	// A second start does not restore again.
	if res, err := execrecord.RestoreIfWiped(ctx, fresh, br.JS, quiet(), true); err != nil || res.Execs != 0 {
		t.Fatalf("second restore: %+v, %v", res, err)
	}
	// A restore that did not finish (its marker still at 0) runs again
	// although some executions are back already.
	if _, err := fresh.W.NewUpdate().Model((*storage.Checkpoint)(nil)).Set("last_seq = 0").
		Where("projection = 'exec-records'").Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.W.NewDelete().Model((*storage.Execution)(nil)).Where("exec_id = 'small'").Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if res, err := execrecord.RestoreIfWiped(ctx, fresh, br.JS, quiet(), true); err != nil || res.Execs != 3 {
		t.Fatalf("interrupted restore run again: %+v, %v; want 3 execs", res, err)
	}
	if got := load(t, fresh, "small"); len(got.Expected) != 2 {
		t.Fatalf("small exec after the second restore: %d expected PCs, want 2", len(got.Expected))
	}
}

// Damaged records are skipped and the rest restored: a message that is not
// a record, and a revision that lost a part (a crash mid-publish) while the
// exec's previous revision is still there.
func TestRestoreSkipsDamagedRecords(t *testing.T) {
	storagetest.RunDialects(t, testRestoreSkipsDamagedRecords)
}

func testRestoreSkipsDamagedRecords(t *testing.T, d storagetest.Dialect) {
	ctx := context.Background()
	br := brokertest.Start(t)
	st := d.Open(t)
	seedExec(t, st, "good", 2, nil, nil)
	pub := &execrecord.Publisher{JS: br.JS}
	if err := pub.Publish(ctx, load(t, st, "good")); err != nil {
		t.Fatal(err)
	}
	garbage := &nats.Msg{Subject: execrecord.Subject("junk", "r1", 0), Data: []byte("not gzip"), Header: nats.Header{}}
	garbage.Header.Set(execrecord.HeaderParts, "1")
	if _, err := br.JS.PublishMsg(ctx, garbage); err != nil {
		t.Fatal(err)
	}
	// Part 1 of 2 of a newer revision of "good": never completed.
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write([]byte(`{"requests":[{"request_id":"stray","subject":"commands.pc.x"}]}`)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	half := &nats.Msg{Subject: execrecord.Subject("good", "zzzz", 1), Data: buf.Bytes(), Header: nats.Header{}}
	half.Header.Set(execrecord.HeaderParts, "2")
	if _, err := br.JS.PublishMsg(ctx, half); err != nil {
		t.Fatal(err)
	}
	fresh := d.Open(t)
	res, err := execrecord.RestoreIfWiped(ctx, fresh, br.JS, quiet(), true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Execs != 1 || res.Skipped != 2 {
		t.Fatalf("restore: %+v, want 1 exec and 2 skipped (the junk message, the incomplete revision)", res)
	}
	if got := load(t, fresh, "good"); len(got.Expected) != 2 || len(got.Requests) != 2 {
		t.Fatalf("good exec restored with %d expected PCs and %d requests, want its complete revision (2 and 2)", len(got.Expected), len(got.Requests))
	}
}

// A missing EXEC stream (deleted by hand) must not hold up the results
// projection: there is just nothing to restore.
func TestRestoreWithoutTheStream(t *testing.T) {
	ctx := context.Background()
	br := brokertest.Start(t)
	if err := br.JS.DeleteStream(ctx, messages.StreamExec); err != nil {
		t.Fatal(err)
	}
	res, err := execrecord.RestoreIfWiped(ctx, storagetest.Open(t), br.JS, quiet(), true)
	if err != nil || res.Execs != 0 {
		t.Fatalf("restore without EXEC: %+v, %v", res, err)
	}
}

// A rollout held at its gate, or aborted, keeps that status in its record:
// the engine set it, and after a restore the projectors would never give
// it back (a held exec would finish as if its later waves did not exist).
func TestRecordKeepsHeldAndAbortedStatuses(t *testing.T) {
	storagetest.ForEachDialect(t, func(t *testing.T, st *storage.Store) {
		reason := "wave canary: 1 of 1 failed, max_failed 0"
		waves := []storage.ExecWave{{ExecID: "held", WaveIndex: 1, GroupName: "wave1", DueAt: storage.T(t0), State: storage.WaveHeld, Gated: true, Reason: &reason}}
		seedExec(t, st, "held", 1, waves, func(ex *storage.Execution) { ex.Status, ex.FinishedAt = storage.ExecHeld, storage.Time{} })
		seedExec(t, st, "aborted", 1, nil, func(ex *storage.Execution) { ex.Status = storage.ExecCancelled })
		rec := load(t, st, "held")
		if rec.Exec.Status != storage.ExecHeld || len(rec.Waves) != 1 || !rec.Waves[0].Gated || *rec.Waves[0].Reason != reason {
			t.Fatalf("held record: %s %+v", rec.Exec.Status, rec.Waves)
		}
		if got := load(t, st, "aborted").Exec; got.Status != storage.ExecCancelled || got.FinishedAt.IsZero() {
			t.Fatalf("aborted record: %s finished %v", got.Status, got.FinishedAt)
		}
	})
}
