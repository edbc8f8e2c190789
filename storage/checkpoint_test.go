package storage_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/uptrace/bun"

	"kanade-backend/actors/clock"
	"kanade-backend/internal/testsupport"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

// writeRows commits n rows of about 4 KiB each (a page each in the
// database file), ten a transaction; each transaction also rewrites the
// index pages it touches, so the log grows faster than the rows.
func writeRows(t *testing.T, st *storage.Store, prefix string, n int) {
	t.Helper()
	ctx := context.Background()
	big := strings.Repeat("x", 4000)
	now := storage.T(time.Now())
	for i := 0; i < n; i += 10 {
		rows := make([]storage.ExecutionResult, 10)
		for j := range rows {
			rows[j] = storage.ExecutionResult{RequestID: fmt.Sprintf("%s-%d", prefix, i+j), PcID: "pc-1", Stdout: big,
				StartedAt: now, FinishedAt: now, RecordedAt: now}
		}
		if err := st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
			return storage.InsertChunked(ctx, tx, rows, false)
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// look lets the Checkpointer's loop take one look: it waits for the loop
// to sleep, advances the fake clock by the interval, and returns once the
// loop sleeps again, its checkpoint done.
func look(t *testing.T, fake *clock.Fake) {
	t.Helper()
	asleep := func() bool { return fake.Pending() == 1 }
	testsupport.EventuallyTrue(t, 5*time.Second, asleep, "the Checkpointer is not waiting for its next look")
	fake.Advance(storage.DefaultCheckpointInterval)
	testsupport.EventuallyTrue(t, 10*time.Second, asleep, "the Checkpointer's look did not end")
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func autoCheckpoint(t *testing.T, st *storage.Store) int {
	t.Helper()
	var pages int
	if err := st.W.QueryRowContext(context.Background(), "PRAGMA wal_autocheckpoint").Scan(&pages); err != nil {
		t.Fatal(err)
	}
	return pages
}

// In WAL mode the database file is written by checkpoints only, so its
// size says who checkpointed. Below the writer's threshold (1 000 pages)
// its commits copy nothing; the Checkpointer's look copies the log. The
// writer's threshold is SQLite's own, so the log stays bounded as before.
func TestCheckpointerCopiesTheLogBeforeTheWriterMust(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kanade.db")
	st := storagetest.OpenAt(t, path)
	fake := clock.NewFake(time.Now())
	reg := prometheus.NewRegistry()
	cp, err := st.StartCheckpointer(context.Background(), storage.CheckpointerOptions{Clock: fake, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop(context.Background()) })
	size := fileSize(t, path)
	writeRows(t, st, "a", 150) // about 400 frames, under the writer's 1 000
	if got := fileSize(t, path); got != size {
		t.Fatalf("the database file changed from %d to %d bytes before any checkpoint", size, got)
	}

	look(t, fake)
	if got := fileSize(t, path); got < size+150*4000 {
		t.Fatalf("the Checkpointer's look did not copy the log: file %d bytes, was %d", got, size)
	}
	if n := metricValue(t, reg, "kanade_sqlite_wal_frames"); n < 150 {
		t.Fatalf("kanade_sqlite_wal_frames %v, want the frames of the 150 rows just written", n)
	}
	if n := metricValue(t, reg, "kanade_sqlite_wal_frames_behind"); n != 0 {
		t.Fatalf("kanade_sqlite_wal_frames_behind %v with no reader, want 0", n)
	}
	if fake.Pending() != 1 {
		t.Fatalf("%d timers pending after a look, want the next look", fake.Pending())
	}

	// No look for 3 000 rows: the writer's own checkpoint still keeps the
	// log near its 1 000 frames (4 096-byte pages, 24-byte frame headers).
	if got := autoCheckpoint(t, st); got != 1000 {
		t.Fatalf("writer's wal_autocheckpoint %d, want SQLite's 1 000", got)
	}
	writeRows(t, st, "b", 3000)
	if wal := fileSize(t, path+"-wal"); wal > 1100*4120 {
		t.Fatalf("the log grew to %d bytes over 3 000 rows, want it bounded near 1 000 frames", wal)
	}

	if err := cp.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fake.Pending() != 0 {
		t.Fatalf("%d timers pending after Stop", fake.Pending())
	}
	if err := cp.Stop(context.Background()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

// A checkpoint that cannot write (the disk is full) is counted and logged
// once, the writer's data stays, and the next look after space is freed
// copies the log.
func TestCheckpointerOnAFullDiskCountsAndRecovers(t *testing.T) {
	dir := storagetest.SmallDisk(t, 64<<20)
	path := filepath.Join(dir, "kanade.db")
	st := storagetest.OpenAt(t, path)
	// Read only between looks, which the fake clock's lock orders after
	// the loop's writes: a plain buffer.
	var logs bytes.Buffer
	fake := clock.NewFake(time.Now())
	reg := prometheus.NewRegistry()
	cp, err := st.StartCheckpointer(context.Background(), storage.CheckpointerOptions{Clock: fake, Registerer: reg,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop(context.Background()) })
	writeRows(t, st, "r", 150)
	size := fileSize(t, path)
	free := storagetest.Fill(t, dir)

	failures := func() float64 { return metricValue(t, reg, "kanade_sqlite_checkpoint_failures_total") }
	look(t, fake)
	look(t, fake)
	if n := failures(); n != 2 {
		t.Fatalf("kanade_sqlite_checkpoint_failures_total %v after two looks on a full disk, want 2", n)
	}
	if n := strings.Count(logs.String(), "background WAL checkpoint failed"); n != 1 {
		t.Fatalf("the failure was logged %d times, want once per streak:\n%s", n, logs.String())
	}

	free()
	look(t, fake)
	if n := failures(); n != 2 {
		t.Fatalf("kanade_sqlite_checkpoint_failures_total %v after space was freed, want still 2\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "background WAL checkpoint works again") {
		t.Fatalf("recovery not logged:\n%s", logs.String())
	}
	if got := fileSize(t, path); got < size+150*4000 {
		t.Fatalf("the look after space was freed did not copy the log: file %d bytes, was %d", got, size)
	}
	var rows int
	if err := st.R.QueryRowContext(context.Background(), "SELECT COUNT(*) FROM execution_results").Scan(&rows); err != nil || rows != 150 {
		t.Fatalf("%d rows (%v), want the 150 written", rows, err)
	}
}

// On PostgreSQL there is no log to copy: the Checkpointer starts and stops
// and writes go on.
func TestCheckpointerIsHarmlessOnEitherDialect(t *testing.T) {
	storagetest.ForEachDialect(t, func(t *testing.T, st *storage.Store) {
		cp, err := st.StartCheckpointer(context.Background(), storage.CheckpointerOptions{Clock: clock.NewFake(time.Now())})
		if err != nil {
			t.Fatal(err)
		}
		writeRows(t, st, "d", 20)
		if err := cp.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		var rows int
		if err := st.R.QueryRowContext(context.Background(), "SELECT COUNT(*) FROM execution_results").Scan(&rows); err != nil || rows != 20 {
			t.Fatalf("%d rows (%v), want 20", rows, err)
		}
	})
}

// metricValue is the value of the registered gauge or counter name.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	return testsupport.RequireMetric(t, reg, name).Value
}
