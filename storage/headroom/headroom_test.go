package headroom_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"kanade-backend/internal/testsupport"
	"kanade-backend/storage/headroom"
	"kanade-backend/storage/storagetest"
)

// A real 16 MiB filesystem: fine while empty, low once filled (with the
// reason an operator reads in fleet health), fine again once space is
// freed. Two places on one filesystem are one entry; a place on another
// filesystem is its own.
func TestLowSpaceOnARealFilesystem(t *testing.T) {
	disk := storagetest.SmallDisk(t, 16<<20)
	jsDir := filepath.Join(disk, "jetstream")
	if err := os.Mkdir(jsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	w := headroom.New(headroom.Config{
		Places: []headroom.Place{
			{Name: "database", Dir: filepath.Join(disk, "not-created-yet")},
			{Name: "jetstream store", Dir: jsDir},
			{Name: "elsewhere", Dir: other},
		},
		MinFreePercent: 5, MinFreeBytes: -1,
	})
	us := w.Measure()
	if len(us) != 2 || strings.Join(us[0].Names, ",") != "database,jetstream store" || us[1].Names[0] != "elsewhere" {
		t.Fatalf("usage = %+v, want the small disk (database, jetstream store) and the other one", us)
	}
	if us[0].Size != 16<<20 || us[0].Free == 0 || us[0].Low {
		t.Fatalf("empty small disk = %+v", us[0])
	}
	if low := w.Low(); len(low) != 0 {
		t.Fatalf("low = %+v on an empty disk", low)
	}

	free := storagetest.Fill(t, disk)
	low := w.Low()
	if len(low) != 1 || low[0].Dir != filepath.Join(disk, "not-created-yet") ||
		!strings.HasPrefix(low[0].Reason, "low disk space: 0 B free of 16.0 MiB (0.0 %), below 5 %") {
		t.Fatalf("low = %+v", low)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(w.Collector())
	if n, err := testutil.GatherAndCount(reg, "kanade_disk_low"); err != nil || n != 2 {
		t.Fatalf("kanade_disk_low series = %d, %v", n, err)
	}
	if v := lowValue(t, reg, "database,jetstream store"); v != 1 {
		t.Fatalf("kanade_disk_low = %v", v)
	}

	free()
	if low := w.Low(); len(low) != 0 {
		t.Fatalf("low = %+v after freeing", low)
	}

	// The defaults (5 % or 1 GiB) make any 16 MiB filesystem low.
	if low := headroom.New(headroom.Config{Places: []headroom.Place{{Name: "db", Dir: disk}}}).Low(); len(low) != 1 ||
		!strings.Contains(low[0].Reason, "below 1.0 GiB") {
		t.Fatalf("defaults: %+v", low)
	}
}

// lowValue reads kanade_disk_low{holds=holds} from reg.
func lowValue(t *testing.T, reg *prometheus.Registry, holds string) float64 {
	t.Helper()
	return testsupport.RequireMetric(t, reg, "kanade_disk_low", "holds", holds).Value
}
