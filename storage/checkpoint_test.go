package storage_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/uptrace/bun"

	"kanade-backend/actors/clock"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

// writePages commits rows of about 4 KiB each, ten a transaction, so that
// the write-ahead log grows by at least pages pages.
func writePages(t *testing.T, st *storage.Store, prefix string, pages int) {
	t.Helper()
	ctx := context.Background()
	big := strings.Repeat("x", 4000)
	now := storage.T(time.Now())
	for i := 0; i < pages; i += 10 {
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
// size says who checkpointed: with SQLite's default the writer's own
// commits copy the log once it passes 1 000 pages; with the Checkpointer
// running they do not, and the Checkpointer's look copies it.
func TestCheckpointerCopiesTheLogInsteadOfTheWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kanade.db")
	st := storagetest.OpenAt(t, path)
	size0 := fileSize(t, path)
	writePages(t, st, "before", 1500)
	grown := fileSize(t, path)
	if grown < size0+4<<20 {
		t.Fatalf("without the Checkpointer the writer's commits should have checkpointed: file %d bytes, was %d", grown, size0)
	}

	fake := clock.NewFake(time.Now())
	reg := prometheus.NewRegistry()
	cp, err := st.StartCheckpointer(context.Background(), storage.CheckpointerOptions{Clock: fake, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop(context.Background()) })
	if got := autoCheckpoint(t, st); got != 10_000 {
		t.Fatalf("writer's wal_autocheckpoint %d while the Checkpointer runs, want the 10 000-page backstop", got)
	}
	writePages(t, st, "with", 1500)
	if got := fileSize(t, path); got != grown {
		t.Fatalf("the writer checkpointed although the Checkpointer runs: file %d bytes, was %d", got, grown)
	}

	fake.Advance(storage.DefaultCheckpointInterval)
	if got := fileSize(t, path); got < grown+4<<20 {
		t.Fatalf("the Checkpointer's look did not copy the log: file %d bytes, was %d", got, grown)
	}
	if n := metricValue(t, reg, "kanade_sqlite_wal_frames"); n < 1500 {
		t.Fatalf("kanade_sqlite_wal_frames %v, want the 1 500+ frames just written", n)
	}
	if n := metricValue(t, reg, "kanade_sqlite_wal_frames_behind"); n != 0 {
		t.Fatalf("kanade_sqlite_wal_frames_behind %v with no reader, want 0", n)
	}
	if fake.Pending() != 1 {
		t.Fatalf("%d timers pending after a look, want the next look", fake.Pending())
	}

	if err := cp.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := autoCheckpoint(t, st); got != 1000 {
		t.Fatalf("writer's wal_autocheckpoint %d after Stop, want SQLite's 1 000 back", got)
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
	var logs syncBuffer
	fake := clock.NewFake(time.Now())
	reg := prometheus.NewRegistry()
	cp, err := st.StartCheckpointer(context.Background(), storage.CheckpointerOptions{Clock: fake, Registerer: reg,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop(context.Background()) })
	writePages(t, st, "r", 1500)
	size := fileSize(t, path)
	free := storagetest.Fill(t, dir)

	failures := func() float64 { return metricValue(t, reg, "kanade_sqlite_checkpoint_failures_total") }
	fake.Advance(storage.DefaultCheckpointInterval)
	fake.Advance(storage.DefaultCheckpointInterval)
	if n := failures(); n != 2 {
		t.Fatalf("kanade_sqlite_checkpoint_failures_total %v after two looks on a full disk, want 2", n)
	}
	if n := strings.Count(logs.String(), "background WAL checkpoint failed"); n != 1 {
		t.Fatalf("the failure was logged %d times, want once per streak:\n%s", n, logs.String())
	}

	free()
	fake.Advance(storage.DefaultCheckpointInterval)
	if n := failures(); n != 2 {
		t.Fatalf("kanade_sqlite_checkpoint_failures_total %v after space was freed, want still 2\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "background WAL checkpoint works again") {
		t.Fatalf("recovery not logged:\n%s", logs.String())
	}
	if got := fileSize(t, path); got < size+4<<20 {
		t.Fatalf("the look after space was freed did not copy the log: file %d bytes, was %d", got, size)
	}
	var rows int
	if err := st.R.QueryRowContext(context.Background(), "SELECT COUNT(*) FROM execution_results").Scan(&rows); err != nil || rows != 1500 {
		t.Fatalf("%d rows (%v), want the 1 500 written", rows, err)
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
		writePages(t, st, "d", 20)
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
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			m := mf.Metric[0]
			return m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s is not registered", name)
	return 0
}

// syncBuffer is a bytes.Buffer a logger may write from another goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
