package schedule

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"kanade-backend/messages"
	"kanade-backend/storage"
)

// commandsTo counts the Commands published on commands.pc.>.
func (h *harness) commandsTo() *atomic.Int64 {
	h.t.Helper()
	var n atomic.Int64
	sub, err := h.b.Conn.Subscribe("commands.pc.>", func(*nats.Msg) { n.Add(1) })
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := h.b.Conn.Flush(); err != nil {
		h.t.Fatal(err)
	}
	return &n
}

// holdWriter takes the store's one writer connection, so that every write
// transaction (the exec engine's, a settle's) waits until release. On
// PostgreSQL, which has no single writer, a transaction holds an
// EXCLUSIVE lock on executions instead: every writer of an exec waits,
// readers do not.
func (h *harness) holdWriter() (release func()) {
	h.t.Helper()
	ctx := context.Background()
	if h.store.IsPostgres() {
		tx, err := h.store.W.BeginTx(ctx, nil)
		if err != nil {
			h.t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, "LOCK TABLE executions IN EXCLUSIVE MODE"); err != nil {
			h.t.Fatal(err)
		}
		return func() {
			if err := tx.Rollback(); err != nil {
				h.t.Error(err)
			}
		}
	}
	conn, err := h.store.W.Conn(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	return func() {
		if err := conn.Close(); err != nil {
			h.t.Error(err)
		}
	}
}

func (h *harness) execRows(scheduleID string) []storage.Execution {
	h.t.Helper()
	var rows []storage.Execution
	if err := h.store.R.NewSelect().Model(&rows).Where("schedule_id = ?", scheduleID).Scan(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	return rows
}

// The schedule actor fails while its fire waits for the exec engine: the
// restarted actor adopts the fire, never sends it again, and records the
// engine's answer. One instant, one exec, one Command.
func TestRestartMidTickFiresOnce(t *testing.T) { onBothDialects(t, testRestartMidTickFiresOnce) }

func testRestartMidTickFiresOnce(t *testing.T) {
	h := newHarness(t, harnessOpts{realEngine: true})
	cmds := h.commandsTo()
	h.putJob("job", "30s")
	h.putSchedule(`{"id":"mid","cron":"*/2 * * * * *","job_id":"job","target":{"pcs":["a"]}}`)
	h.armedFor("mid", t0.Add(2*time.Second))
	release := h.holdWriter()
	h.fake.Set(t0.Add(2 * time.Second))
	h.armedFor("mid", t0.Add(4*time.Second))
	// The next tick fails in the actor while the first fire waits.
	hook := func(id string) { panic("mid-tick failure") }
	h.onTick.Store(&hook)
	h.fake.Set(t0.Add(4 * time.Second))
	h.eventually(5*time.Second, func() error {
		if st := h.status("mid"); st.Restarts != 1 {
			return fmt.Errorf("restarts %d", st.Restarts)
		}
		return nil
	})
	h.onTick.Store(nil)
	release()
	tk := h.nextTick("mid", 5*time.Second)
	want := messages.ScheduledExecID("mid", t0.Add(2*time.Second))
	if tk.Outcome != messages.TickFired || tk.ExecID != want || !tk.Instant.Equal(t0.Add(2*time.Second)) || tk.Pcs != 1 {
		t.Fatalf("the adopted fire: %+v", tk)
	}
	h.eventually(5*time.Second, func() error {
		if n := cmds.Load(); n != 1 {
			return fmt.Errorf("%d Commands", n)
		}
		return nil
	})
	if rows := h.execRows("mid"); len(rows) != 1 || rows[0].ExecID != want {
		t.Fatalf("executions %+v", rows)
	}
	time.Sleep(100 * time.Millisecond)
	if n := cmds.Load(); n != 1 {
		t.Fatalf("%d Commands for one instant", n)
	}
}

// A fire the exec engine does not answer in time (its database is held)
// is settled in the store. Whichever comes first once the database is
// free, the engine's transaction or the settle's claim, the tick's
// outcome is what was published: fired with the exec and its one Command,
// or failed with none; never a second exec.
func TestTimedOutFireOutcomeIsWhatWasPublished(t *testing.T) {
	onBothDialects(t, testTimedOutFireOutcomeIsWhatWasPublished)
}

func testTimedOutFireOutcomeIsWhatWasPublished(t *testing.T) {
	for round := range 3 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			h := newHarness(t, harnessOpts{realEngine: true, fireTimeout: time.Second})
			cmds := h.commandsTo()
			h.putJob("job", "30s")
			h.putSchedule(`{"id":"to","cron":"0 * * * * *","job_id":"job","target":{"pcs":["a"]}}`)
			h.armedFor("to", t0.Add(time.Minute))
			release := h.holdWriter()
			h.fake.Set(t0.Add(time.Minute))
			h.armedFor("to", t0.Add(2*time.Minute))
			h.fake.Advance(time.Second) // the fire times out; the settle waits for the database too
			time.Sleep(time.Duration(round) * 20 * time.Millisecond)
			release()
			tk := h.nextTick("to", 10*time.Second)
			id := messages.ScheduledExecID("to", t0.Add(time.Minute))
			rows := h.execRows("to")
			if len(rows) != 1 || rows[0].ExecID != id || tk.ExecID != id {
				t.Fatalf("tick %+v, executions %+v", tk, rows)
			}
			time.Sleep(100 * time.Millisecond)
			switch tk.Outcome {
			case messages.TickFired:
				if n := cmds.Load(); n != 1 || rows[0].Status == storage.ExecFailed {
					t.Fatalf("fired, but %d Commands and exec %s", n, rows[0].Status)
				}
			case messages.TickFailed:
				if n := cmds.Load(); n != 0 || rows[0].Status != storage.ExecFailed || !strings.Contains(tk.Reason, "did not answer") {
					t.Fatalf("failed (%s), but %d Commands and exec %s", tk.Reason, n, rows[0].Status)
				}
			default:
				t.Fatalf("tick %+v", tk)
			}
			t.Logf("outcome %s", tk.Outcome)
		})
	}
}

// countingReader counts the bulk seed loads.
type countingReader struct {
	Reader
	seeds atomic.Int32
	keys  atomic.Int32
	// first is the number of keys of the first load.
	first atomic.Int32
}

func (r *countingReader) Seeds(ctx context.Context, keys []SeedKey, now time.Time) (*Seeds, error) {
	if r.seeds.Add(1) == 1 {
		r.first.Store(int32(len(keys)))
	}
	r.keys.Add(int32(len(keys)))
	return r.Reader.Seeds(ctx, keys, now)
}

// The dedup state of the schedules loaded at start is read in one bulk
// load, not two queries per schedule, and every schedule gets its own.
func TestDedupStateSeededInBulkAtStart(t *testing.T) {
	onBothDialects(t, testDedupStateSeededInBulkAtStart)
}

func testDedupStateSeededInBulkAtStart(t *testing.T) {
	var cr *countingReader
	h := newHarness(t, harnessOpts{noStart: true, reader: func(r Reader) Reader {
		cr = &countingReader{Reader: r}
		return cr
	}})
	h.putJob("j1", "30s")
	h.putJob("j2", "30s")
	h.agents("a", "b")
	h.result("a", "j1", "", 0, t0.Add(-time.Hour))
	h.result("b", "j2", "", 0, t0.Add(-time.Hour))
	const n = 40
	for i := range n {
		h.putSchedule(fmt.Sprintf(`{"id":"s%02d","cron":"0 0 * * * *","job_id":"j%d","target":{"all":true},"mode":"once_per_pc"}`, i, i%2+1))
	}
	h.putSchedule(`{"id":"every","cron":"0 0 * * * *","job_id":"j1","target":{"all":true}}`)
	h.start(0)
	h.eventually(5*time.Second, func() error {
		for i := range n {
			if st := h.status(fmt.Sprintf("s%02d", i)); st.Completions != 1 {
				return fmt.Errorf("s%02d: %d completions", i, st.Completions)
			}
		}
		return nil
	})
	// One load at start covers every schedule that keeps dedup state. An
	// actor that starts after that load has finished (a busy machine)
	// still asks, and gets a small load of its own: redundant, harmless,
	// and not what this test is about.
	if first := cr.first.Load(); first != n {
		t.Fatalf("the first seed load had %d schedules, want all %d (every_tick keeps no dedup state)", first, n)
	}
	if loads := cr.seeds.Load(); loads > 1 {
		t.Logf("%d seed loads (%d keys): some actors started after the bulk load", loads, cr.keys.Load())
	}
	// A schedule added later is seeded on its own.
	h.putSchedule(`{"id":"late","cron":"*/2 * * * * *","job_id":"j2","target":{"all":true},"mode":"once_per_pc"}`)
	h.eventually(5*time.Second, func() error {
		if st, err := h.client.Status(context.Background(), "late"); err != nil || st.Completions != 1 {
			return fmt.Errorf("late schedule not seeded (%v)", err)
		}
		return nil
	})
	tk := h.tickNow("late")
	if r := h.exec.nextRequest(t, time.Second); tk.Outcome != messages.TickFired || pcsOf(r) != "a" {
		t.Fatalf("late tick %+v at %s", tk, pcsOf(r))
	}
}

// A stored pc_id that is not a valid subject token (here a group member
// from an agent_groups key with a '.') is left out of the target and
// counted; the tick fires at the others instead of failing.
func TestInvalidStoredPCsAreSkippedNotFatal(t *testing.T) {
	onBothDialects(t, testInvalidStoredPCsAreSkippedNotFatal)
}

func testInvalidStoredPCsAreSkippedNotFatal(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.putJob("job", "30s")
	h.agents("good", "bad.pc")
	h.groupMembers("office", "good", "bad.pc")
	h.putSchedule(`{"id":"inv","cron":"*/2 * * * * *","job_id":"job","target":{"groups":["office"]},"mode":"once_per_pc"}`)
	tk := h.tickNow("inv")
	if r := h.exec.nextRequest(t, time.Second); tk.Outcome != messages.TickFired || pcsOf(r) != "good" || tk.Pcs != 1 {
		t.Fatalf("tick %+v at %s", tk, pcsOf(r))
	}
	if n := testutil.ToFloat64(h.metrics.skippedPCs); n != 1 {
		t.Fatalf("kanade_schedule_skipped_pc_ids_total = %v, want 1 (counted once)", n)
	}
}

// A fire carries the token of the leader term it is issued in: while
// this backend holds none it fires nothing and records why (skipped);
// under a token older than the stored fence (a newer leader took over)
// the exec engine refuses it, so nothing is recorded or published and the
// tick is failed; under the current token it fires.
func TestFiresCarryTheLeaderToken(t *testing.T) { onBothDialects(t, testFiresCarryTheLeaderToken) }

func testFiresCarryTheLeaderToken(t *testing.T) {
	var token atomic.Uint64
	h := newHarness(t, harnessOpts{realEngine: true, fence: func() (uint64, error) {
		if tok := token.Load(); tok != 0 {
			return tok, nil
		}
		return 0, messages.Unavailablef("no leader term")
	}})
	if err := h.store.RaiseFence(context.Background(), 5); err != nil {
		t.Fatal(err)
	}
	cmds := h.commandsTo()
	h.putJob("job", "30s")
	h.putSchedule(`{"id":"f","cron":"0 * * * * *","job_id":"job","mode":"every_tick","target":{"pcs":["a"]}}`)
	for i, c := range []struct {
		token   uint64
		outcome string
		reason  string
	}{
		{0, messages.TickSkipped, "no leader term"},
		{4, messages.TickFailed, "fencing token 4 is behind the stored token 5"},
		{5, messages.TickFired, ""},
	} {
		token.Store(c.token)
		at := t0.Add(time.Duration(i+1) * time.Minute)
		h.armedFor("f", at)
		h.fake.Set(at)
		tk := h.nextTick("f", 10*time.Second)
		if tk.Outcome != c.outcome || !strings.Contains(tk.Reason, c.reason) {
			t.Fatalf("token %d: tick %s %q, want %s %q", c.token, tk.Outcome, tk.Reason, c.outcome, c.reason)
		}
	}
	rows := h.execRows("f")
	if len(rows) != 1 || rows[0].ExecID != messages.ScheduledExecID("f", t0.Add(3*time.Minute)) {
		t.Fatalf("executions %+v, want only the fire under the current token", rows)
	}
	h.eventually(5*time.Second, func() error {
		if n := cmds.Load(); n != 1 {
			return fmt.Errorf("%d Commands", n)
		}
		return nil
	})
}
