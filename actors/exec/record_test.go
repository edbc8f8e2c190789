package exec_test

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/execrecord"
	"kanade-backend/storage/storagetest"
)

// restored restores the engine's records from the EXEC stream into a new
// database, as the results projector does after a wipe.
func (e *env) restored() *storage.Store {
	e.t.Helper()
	fresh := storagetest.OpenAt(e.t, filepath.Join(e.t.TempDir(), "wiped.db"))
	if _, err := execrecord.RestoreIfWiped(context.Background(), fresh, e.br.JS, quietLogger(), true); err != nil {
		e.t.Fatal(err)
	}
	return fresh
}

func wavesOf(t *testing.T, st *storage.Store, execID string) []storage.ExecWave {
	t.Helper()
	var ws []storage.ExecWave
	if err := st.R.NewSelect().Model(&ws).Where("exec_id = ?", execID).Order("wave_index").Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	return ws
}

// Every engine-side change is on the EXEC stream by the time the engine
// answers: the exec with its request_ids and expected PCs, then the
// cancel of its pending wave.
func TestRecordFollowsTheExec(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start()
	e.putJob("job1", "1", "echo")
	e.agent("c1", "canary")
	r := e.mustExec(`{"rollout":{"waves":[{"group":"canary","delay":"0s"},{"group":"wave1","delay":"1h"}]}}`)

	fresh := e.restored()
	ws := wavesOf(t, fresh, r.ExecID)
	if len(ws) != 2 || ws[0].State != storage.WavePublished || ws[0].RequestID == nil || ws[1].State != storage.WavePending {
		t.Fatalf("restored waves = %+v", ws)
	}
	rec, err := execrecord.Load(context.Background(), fresh.R, r.ExecID)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Requests) != 1 || rec.Requests[0].RequestID != *ws[0].RequestID || rec.Requests[0].PublishedAt.IsZero() ||
		len(rec.Expected) != 1 || rec.Expected[0] != "c1" || rec.Exec.ExpectedPcs != 1 {
		t.Fatalf("restored record = %+v", rec)
	}

	if reply, err := e.client.Cancel(context.Background(), r.ExecID); err != nil || reply.CancelledWaves != 1 {
		t.Fatalf("cancel: %+v %v", reply, err)
	}
	if ws := wavesOf(t, e.restored(), r.ExecID); ws[1].State != storage.WaveCancelled {
		t.Fatalf("after cancel the record holds wave1 %s, want cancelled", ws[1].State)
	}
}

// flakyRecords fails while down is set, then stores records for real.
type flakyRecords struct {
	down atomic.Bool
	pub  *execrecord.Publisher
}

func (f *flakyRecords) Publish(ctx context.Context, rec *execrecord.Record) error {
	if f.down.Load() {
		return errors.New("nats: timeout")
	}
	return f.pub.Publish(ctx, rec)
}

func (f *flakyRecords) PublishNew(ctx context.Context, recs []*execrecord.Record) []error {
	if f.down.Load() {
		errs := make([]error, len(recs))
		for i := range errs {
			errs[i] = errors.New("nats: timeout")
		}
		return errs
	}
	return f.pub.PublishNew(ctx, recs)
}

// An exec whose record cannot be stored is not published at all: the
// caller gets 503 with the cause, the row says failed, and no Command
// reaches anyone. The failed exec's record is stored once the stream
// takes writes again, and the next exec works.
func TestUnstoredRecordFailsTheExecBeforeAnyCommand(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cmds := e.recordCommands()
	flaky := &flakyRecords{pub: &execrecord.Publisher{JS: e.br.JS}}
	flaky.down.Store(true)
	e.records = flaky
	e.start()
	e.putJob("job1", "1", "echo")
	_, err := e.exec(`{"target":{"pcs":["p1"]}}`)
	if statusOf(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "exec record not stored") {
		t.Fatalf("exec while records fail: %v (status %d), want 503 with the cause", err, statusOf(err))
	}
	cmds.quiet(t, 0, 100*time.Millisecond)
	var first storage.Execution
	if err := e.store.R.NewSelect().Model(&first).Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	if first.Status != storage.ExecFailed || first.Error == nil || !strings.Contains(*first.Error, "exec record not stored") {
		t.Fatalf("row of the unpublished exec = %+v", first)
	}
	if n := count(t, e.restored(), first.ExecID); n != 0 {
		t.Fatalf("record stored while the broker refused it (%d rows)", n)
	}
	flaky.down.Store(false)
	second := e.mustExec(`{"target":{"pcs":["p2"]}}`)
	cmds.waitN(t, 1)
	if got := cmds.subjects(); strings.Join(got, ",") != "commands.pc.p2" {
		t.Fatalf("commands = %v, want only the second exec's", got)
	}
	testsupport.Eventually(t, 10*time.Second, func() error {
		fresh := e.restored()
		if count(t, fresh, first.ExecID) != 1 || count(t, fresh, second.ExecID) != 1 {
			return errors.New("the failed exec's record was not stored after the stream came back")
		}
		return nil
	})
}

func count(t *testing.T, st *storage.Store, execID string) int {
	t.Helper()
	n, err := st.R.NewSelect().Model((*storage.Execution)(nil)).Where("exec_id = ?", execID).Count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

// Executions restored after the engine started (the broker came back
// late) have their waves published: the engine reloads them on
// ExecsRestored.
func TestEngineReloadsWavesAfterARestore(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cmds := e.recordCommands()
	e.start()
	e.putJob("job1", "1", "echo")
	r := e.mustExec(`{"rollout":{"waves":[{"group":"canary","delay":"0s"},{"group":"wave1","delay":"3s"}]}}`)
	cmds.waitN(t, 1)
	e.stop()

	// The engine comes up on a wiped database; the restore follows.
	e.store = storagetest.OpenAt(t, filepath.Join(t.TempDir(), "late.db"))
	e.start()
	// A round trip: the engine has looked for waves (none yet) before the
	// restore writes any.
	if _, err := e.client.Cancel(context.Background(), "none"); statusOf(err) != http.StatusNotFound {
		t.Fatalf("cancel of an unknown exec: %v", err)
	}
	if _, err := execrecord.RestoreIfWiped(context.Background(), e.store, e.br.JS, quietLogger(), true); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(3 * time.Second)
	cmds.quiet(t, 1, 100*time.Millisecond) // not reloaded yet: no wave
	e.sys.EventStream.Publish(&messages.ExecsRestored{Execs: 1})
	cmds.waitN(t, 2)
	if got := cmds.commands(t); cmds.subjects()[1] != "commands.group.wave1" || *got[1].JobID != r.ExecID {
		t.Fatalf("after the restore: %v", cmds.subjects())
	}
}

// A version pin that cannot be written (here the script_current bucket's
// stream is sealed) is written after the exec is recorded, and fails it
// like a publish that fails before its first Command: the caller gets 503
// with the cause, the row says failed with it, and no Command goes out.
func TestFailedPinFailsTheRecordedExec(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cmds := e.recordCommands()
	e.start()
	e.putJob("job1", "1", "echo")
	ctx := context.Background()
	s, err := e.br.JS.Stream(ctx, "KV_"+messages.BucketScriptCurrent)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.Sealed = true
	if _, err := e.br.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	_, err = e.exec(`{"target":{"pcs":["p1"]}}`)
	if statusOf(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "write version pin script_current[job1] = 1") {
		t.Fatalf("exec while the pin fails: %v (status %d), want 503 with the cause", err, statusOf(err))
	}
	cmds.quiet(t, 0, 100*time.Millisecond)
	var ex storage.Execution
	if err := e.store.R.NewSelect().Model(&ex).Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if ex.Status != storage.ExecFailed || ex.TargetCount != 0 || ex.Error == nil || !strings.Contains(*ex.Error, "write version pin") {
		t.Fatalf("row of the exec whose pin failed = %+v (error %v)", ex, ex.Error)
	}
}
