package jobs

import (
	"context"
	"testing"
	"time"

	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

// The API's mirror write and the projector's watch may land in either
// order; the newest KV revision must win both ways.
func TestMirrorKeepsTheNewestRevision(t *testing.T) {
	ctx := context.Background()
	st := storagetest.Open(t)
	now := time.Date(2026, 5, 20, 12, 0, 0, 0, time.UTC)
	put := func(version string, rev uint64) {
		t.Helper()
		m := &messages.Manifest{ID: "j", Version: version}
		if err := upsertMirror(ctx, st, m, []byte(`{"id":"j","version":"`+version+`"}`), rev, now); err != nil {
			t.Fatal(err)
		}
	}
	get := func() storage.Job {
		t.Helper()
		var row storage.Job
		if err := st.R.NewSelect().Model(&row).Where("id = ?", "j").Scan(ctx); err != nil {
			t.Fatal(err)
		}
		return row
	}
	put("2", 7)
	put("1", 3) // an older revision arriving late changes nothing
	if row := get(); row.Version != "2" || row.KVRevision != 7 || string(row.Manifest) != `{"id":"j","version":"2"}` {
		t.Fatalf("row = %+v", row)
	}
	put("3", 9)
	if row := get(); row.Version != "3" || row.KVRevision != 9 {
		t.Fatalf("row = %+v", row)
	}
	if err := deleteMirror(ctx, st, "j"); err != nil {
		t.Fatal(err)
	}
	if n, _ := st.R.NewSelect().Model((*storage.Job)(nil)).Count(ctx); n != 0 {
		t.Fatal("row not deleted")
	}
}
