package jobs_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"kanade-backend/internal/apptest"
)

// peakRSS reads the process's peak resident set (VmHWM) in bytes, after
// resetting it when reset is set.
func peakRSS(t *testing.T, reset bool) int64 {
	t.Helper()
	if reset {
		if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
			t.Skipf("cannot reset the peak RSS (needs Linux /proc/self/clear_refs): %v", err)
		}
	}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Skip("no VmHWM in /proc/self/status")
	return 0
}

// YAML bombs of 400–600 bytes against the two YAML routes: each is a 400
// within 100 ms, and the process's peak memory grows by less than 50 MB
// (the backend runs in this process). Deep JSON is a 400 as well.
func TestYAMLBombsAre400Fast(t *testing.T) {
	b := apptest.Start(t)
	bodies := map[string]string{
		"sequences, 9 levels of 9":    apptest.AliasBomb(9, 9, ""),
		"sequences, 12 levels of 6":   apptest.AliasBomb(12, 6, ""),
		"mappings via merge keys":     "a: &a {x: 1, y: 2, z: 3}\n" + mergeBomb(),
		"under a manifest key":        "id: j\nversion: '1'\nexecute: {shell: cmd, script: x, timeout: 1m}\ndescription:\n" + apptest.AliasBomb(8, 8, "  "),
		"under a schedule key (cron)": "id: s\njob_id: j\ncron: '@daily'\ntarget:\n  pcs:\n" + apptest.AliasBomb(9, 7, "    "),
	}
	for name, body := range bodies {
		if len(body) < 400 || len(body) > 600 {
			t.Fatalf("%s: %d bytes, want a 400–600 byte bomb", name, len(body))
		}
	}
	peakRSS(t, true)
	base := peakRSS(t, false)
	var slowest time.Duration
	for name, body := range bodies {
		for _, path := range []string{"/api/jobs", "/api/schedules"} {
			// The best of three: an expansion costs seconds every time,
			// a busy test machine only now and then.
			took := time.Hour
			for range 3 {
				start := time.Now()
				resp, out := b.Do(t, http.MethodPost, path, body, "Content-Type", "application/yaml")
				took = min(took, time.Since(start))
				if resp.StatusCode != http.StatusBadRequest || !bytes.Contains(out, []byte("YAML aliases expand too much")) {
					t.Errorf("%s to %s: %d %s", name, path, resp.StatusCode, out)
				}
			}
			if took > 100*time.Millisecond {
				t.Errorf("%s to %s: answered in %v at best, want < 100ms", name, path, took)
			}
			slowest = max(slowest, took)
		}
	}
	grew := peakRSS(t, false) - base
	t.Logf("%d bombs × 2 routes: slowest 400 in %v (best of 3), peak RSS +%.1f MB", len(bodies), slowest, float64(grew)/(1<<20))
	if grew > 50<<20 {
		t.Errorf("peak RSS grew by %d MB", grew>>20)
	}
	deep := `{"id":"j","version":"1","execute":{"shell":"cmd","script":"x","timeout":"1s"},"x":` +
		strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + "}"
	resp, out := b.Do(t, http.MethodPost, "/api/jobs", deep)
	if resp.StatusCode != http.StatusBadRequest || !bytes.Contains(out, []byte("nested deeper than 64 levels")) {
		t.Errorf("deep JSON: %d %s", resp.StatusCode, out)
	}
}

// mergeBomb nests merge keys: each mapping merges the previous one twice
// and adds it under three keys.
func mergeBomb() string {
	var b strings.Builder
	prev := "a"
	for i := 0; i < 12; i++ {
		name := fmt.Sprintf("m%d", i)
		fmt.Fprintf(&b, "%s: &%s {<<: [*%s], p: *%s, q: *%s}\n", name, name, prev, prev, prev)
		prev = name
	}
	return b.String()
}
