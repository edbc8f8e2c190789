package exec_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"kanade-backend/actors/exec"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

// A scheduled fire issued under a leader term older than the stored fence
// (a former leader that was paused or cut off while a newer one took over)
// is refused: nothing recorded, nothing published, counted; a fire under
// the current token, and an unfenced operator request in the same batch,
// go through. Settle claims nothing for the former leader either.
func TestFireUnderAnOlderTokenIsRefused(t *testing.T) {
	storagetest.ForEachDialect(t, func(t *testing.T, st *storage.Store) {
		e := newEnvOn(t, st)
		reg := prometheus.NewRegistry()
		e.metrics = exec.NewMetrics(reg)
		e.start()
		e.putJob("job1", "1", "echo")
		e.agent("c1")
		cmds := e.recordCommands()
		ctx := context.Background()
		if err := st.RaiseFence(ctx, 7); err != nil {
			t.Fatal(err)
		}
		fire := func(id string, token uint64) *messages.ExecRequest {
			return &messages.ExecRequest{ExecID: id, JobID: "job1", Plan: messages.FanoutPlan{Target: messages.Target{Pcs: []string{"c1"}}},
				Actor: messages.ActorScheduler, InitiatedBy: "scheduler:s1", ScheduleID: "s1", Fence: token}
		}
		stale := messages.ScheduledExecID("s1", t0)
		current := messages.ScheduledExecID("s1", t0.Add(time.Minute))
		// Sent together: mostly one batch, which the refusal must not fail.
		type answer struct {
			id  string
			err error
		}
		answers := make(chan answer, 3)
		for _, r := range []*messages.ExecRequest{fire(stale, 6), fire(current, 7),
			{JobID: "job1", Plan: messages.FanoutPlan{Target: messages.Target{Pcs: []string{"c1"}}}, Actor: messages.ActorOperator, InitiatedBy: "operator:alice"}} {
			go func() {
				resp, err := e.client.Exec(ctx, r)
				answers <- answer{id: r.ExecID + resp.ExecID, err: err}
			}()
		}
		got := map[string]error{}
		for range 3 {
			a := <-answers
			got[a.id] = a.err
		}
		var fe *storage.FenceError
		if err := got[stale]; !errors.As(err, &fe) || fe.Token != 6 || fe.Fence != 7 {
			t.Fatalf("fire under token 6 with the fence at 7: %v", err)
		}
		if err := got[current+current]; err != nil {
			t.Fatalf("fire under the current token: %v (answers %v)", err, got)
		}
		cmds.waitN(t, 2)
		cmds.quiet(t, 2, 200*time.Millisecond)
		var n int
		if err := st.R.NewSelect().Model((*storage.Execution)(nil)).ColumnExpr("count(*)").Where("exec_id = ?", stale).Scan(ctx, &n); err != nil || n != 0 {
			t.Fatalf("refused fire recorded %d rows (%v)", n, err)
		}
		if v := fencedCounter(t, reg); v != 1 {
			t.Fatalf("kanade_exec_fenced_total = %v, want 1", v)
		}
		// The former leader's settle of that instant claims nothing: the
		// id stays free for the newer leader.
		if _, err := exec.Settle(ctx, st, fire(stale, 6), "no answer", t0); !errors.Is(err, storage.ErrFenced) {
			t.Fatalf("settle under token 6: %v", err)
		}
		if s, err := exec.Settle(ctx, st, fire(stale, 7), "no answer", t0); err != nil || s.State != exec.FireClaimed {
			t.Fatalf("settle under token 7: %+v %v", s, err)
		}
	})
}

// fencedCounter finds the fenced-fires counter on reg.
func fencedCounter(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	return testsupport.Metric(t, reg, "kanade_exec_fenced_total").Value
}

// A refused fire moves no version pin either: the fence is checked before
// script_current is written, so a former leader, whose view of the job may
// be older than the catalog, cannot make agents drop the current leader's
// Commands as the wrong version.
func TestFireUnderAnOlderTokenMovesNoPin(t *testing.T) {
	storagetest.ForEachDialect(t, func(t *testing.T, st *storage.Store) {
		e := newEnvOn(t, st)
		e.start()
		e.putJob("job1", "2", "echo")
		e.agent("c1")
		cmds := e.recordCommands()
		ctx := context.Background()
		pins := e.br.KV(t, messages.BucketScriptCurrent)
		rev, err := pins.Put(ctx, "job1", []byte("1"))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.RaiseFence(ctx, 7); err != nil {
			t.Fatal(err)
		}
		_, err = e.client.Exec(ctx, &messages.ExecRequest{ExecID: messages.ScheduledExecID("s1", t0), JobID: "job1",
			Plan:  messages.FanoutPlan{Target: messages.Target{Pcs: []string{"c1"}}},
			Actor: messages.ActorScheduler, InitiatedBy: "scheduler:s1", ScheduleID: "s1", Fence: 6})
		var fe *storage.FenceError
		if !errors.As(err, &fe) {
			t.Fatalf("fire under token 6 with the fence at 7: %v", err)
		}
		cmds.quiet(t, 0, 100*time.Millisecond)
		entry, err := pins.Get(ctx, "job1")
		if err != nil || string(entry.Value()) != "1" || entry.Revision() != rev {
			t.Fatalf("script_current[job1] after the refused fire: %v %v; want \"1\" at revision %d", entry, err, rev)
		}
	})
}
