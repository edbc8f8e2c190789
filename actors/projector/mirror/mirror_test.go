package mirror_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/actors/projector/mirror"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func manifest(version string, inventory bool) []byte {
	inv := "null"
	if inventory {
		inv = `{"display":[{"field":"os","label":"OS"}]}`
	}
	return []byte(`{"id":"inv", "version":"` + version + `","description":null,"execute":{"shell":"powershell","script":"x","timeout":"30s"},"require_approval":false,"inventory":` + inv + `}`)
}

func write(t *testing.T, st *storage.Store, fn func(ctx context.Context, tx bun.Tx) error) {
	t.Helper()
	if err := st.InTx(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
}

// Only a newer revision changes a row; replays and late events do not, and
// a delete older than the row leaves it alone.
func TestJobRevisionsConverge(t *testing.T) { storagetest.ForEachDialect(t, testJobRevisionsConverge) }

func testJobRevisionsConverge(t *testing.T, st *storage.Store) {
	ctx := context.Background()
	get := func() *storage.Job {
		var j storage.Job
		err := st.R.NewSelect().Model(&j).Where("id = 'inv'").Scan(ctx)
		if err != nil {
			return nil
		}
		return &j
	}
	write(t, st, func(ctx context.Context, tx bun.Tx) error {
		return mirror.Job(ctx, tx, "inv", manifest("2.0", true), 7, t0)
	})
	// The watch catches up with an older revision after the API wrote 7.
	write(t, st, func(ctx context.Context, tx bun.Tx) error {
		return mirror.Job(ctx, tx, "inv", manifest("1.0", false), 5, t0)
	})
	j := get()
	if j == nil || j.Version != "2.0" || !j.HasInventory || j.KVRevision != 7 {
		t.Fatalf("row = %+v, want version 2.0 rev 7 with inventory", j)
	}
	if string(j.Manifest[:8]) != `{"id":"i` {
		t.Fatalf("manifest not compacted: %s", j.Manifest)
	}
	write(t, st, func(ctx context.Context, tx bun.Tx) error { return mirror.DeleteJob(ctx, tx, "inv", 6) })
	if get() == nil {
		t.Fatal("a delete older than the row removed it")
	}
	write(t, st, func(ctx context.Context, tx bun.Tx) error {
		return mirror.Job(ctx, tx, "inv", manifest("3.0", false), 8, t0)
	})
	if j := get(); j.Version != "3.0" || j.HasInventory {
		t.Fatalf("rev 8 not applied: %+v", j)
	}
	write(t, st, func(ctx context.Context, tx bun.Tx) error { return mirror.DeleteJob(ctx, tx, "inv", 9) })
	if get() != nil {
		t.Fatal("delete rev 9 did not remove the row")
	}
	err := st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		return mirror.Job(ctx, tx, "bad", []byte(`{"id":"bad","target":{}}`), 10, t0)
	})
	if !errors.Is(err, mirror.ErrUndecodable) {
		t.Fatalf("unknown manifest field: err = %v, want ErrUndecodable", err)
	}
}

func TestScheduleMirror(t *testing.T) { storagetest.ForEachDialect(t, testScheduleMirror) }

func testScheduleMirror(t *testing.T, st *storage.Store) {
	ctx := context.Background()
	def := []byte(`{"id":"s1","cron":"0 0 * * * *","job_id":"inv","target":{"all":true}}`)
	write(t, st, func(ctx context.Context, tx bun.Tx) error { return mirror.Schedule(ctx, tx, "s1", def, 3, t0) })
	var s storage.ScheduleRow
	if err := st.R.NewSelect().Model(&s).Where("id = 's1'").Scan(ctx); err != nil {
		t.Fatal(err)
	}
	// enabled defaults to true when absent (wire.md §4).
	if s.JobID != "inv" || !s.Enabled || s.KVRevision != 3 {
		t.Fatalf("row = %+v", s)
	}
	write(t, st, func(ctx context.Context, tx bun.Tx) error { return mirror.DeleteSchedule(ctx, tx, "s1", 4) })
	n, _ := st.R.NewSelect().Model((*storage.ScheduleRow)(nil)).Count(ctx)
	if n != 0 {
		t.Fatalf("%d rows after delete", n)
	}
}

func TestGroupsMirror(t *testing.T) { storagetest.ForEachDialect(t, testGroupsMirror) }

func testGroupsMirror(t *testing.T, st *storage.Store) {
	ctx := context.Background()
	groups := func() []string {
		var gs []string
		if err := st.R.NewSelect().Model((*storage.GroupMember)(nil)).Column("group_name").
			Where("pc_id = 'pc1'").Order("group_name").Scan(ctx, &gs); err != nil {
			t.Fatal(err)
		}
		return gs
	}
	write(t, st, func(ctx context.Context, tx bun.Tx) error {
		return mirror.GroupsJSON(ctx, tx, "pc1", []byte(`{"groups":["b","a","a"]}`), 2, t0)
	})
	if g := groups(); len(g) != 2 || g[0] != "a" || g[1] != "b" {
		t.Fatalf("groups = %v", g)
	}
	// Upstream wrote a bare array; it is tolerated.
	write(t, st, func(ctx context.Context, tx bun.Tx) error {
		return mirror.GroupsJSON(ctx, tx, "pc1", []byte(`["c"]`), 4, t0)
	})
	if g := groups(); len(g) != 1 || g[0] != "c" {
		t.Fatalf("groups = %v", g)
	}
	// An older value replayed late changes nothing.
	write(t, st, func(ctx context.Context, tx bun.Tx) error {
		return mirror.GroupsJSON(ctx, tx, "pc1", []byte(`{"groups":["old"]}`), 3, t0)
	})
	if g := groups(); len(g) != 1 || g[0] != "c" {
		t.Fatalf("late rev 3 applied: %v", g)
	}
	// Delete marker (empty value) clears, and its tombstone keeps rev 4 out.
	write(t, st, func(ctx context.Context, tx bun.Tx) error { return mirror.GroupsJSON(ctx, tx, "pc1", nil, 5, t0) })
	write(t, st, func(ctx context.Context, tx bun.Tx) error {
		return mirror.GroupsJSON(ctx, tx, "pc1", []byte(`{"groups":["c"]}`), 4, t0)
	})
	if g := groups(); len(g) != 0 {
		t.Fatalf("groups after delete = %v", g)
	}
	err := st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		return mirror.GroupsJSON(ctx, tx, "pc1", []byte(`{"groups":`), 6, t0)
	})
	if !errors.Is(err, mirror.ErrUndecodable) {
		t.Fatalf("err = %v", err)
	}
}

// The watch, API handlers and replicas write one PC's memberships at once,
// with revisions in any order: whatever the interleaving, the mirror ends
// at the newest revision's groups, never a mix of two.
func TestGroupsConcurrentWritersConverge(t *testing.T) {
	storagetest.ForEachDialect(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		const writers, pcs = 8, 20
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Writer w writes revision w+1 of every PC: groups g<w>a, g<w>b.
				for p := range pcs {
					err := st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
						return mirror.Groups(ctx, tx, fmt.Sprintf("pc%02d", p),
							[]string{fmt.Sprintf("g%da", w), fmt.Sprintf("g%db", w)}, uint64(w+1), t0)
					})
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for p := range pcs {
			var gs []string
			pc := fmt.Sprintf("pc%02d", p)
			if err := st.R.NewSelect().Model((*storage.GroupMember)(nil)).Column("group_name").
				Where("pc_id = ?", pc).Order("group_name").Scan(ctx, &gs); err != nil {
				t.Fatal(err)
			}
			newest := writers - 1
			if len(gs) != 2 || gs[0] != fmt.Sprintf("g%da", newest) || gs[1] != fmt.Sprintf("g%db", newest) {
				t.Fatalf("%s groups = %v, want those of revision %d", pc, gs, writers)
			}
		}
	})
}
