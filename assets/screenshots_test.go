package assets_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"mime/multipart"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"kanade-backend/internal/apptest"
)

// Writing the committed screenshots is opt-in, so a normal test run never
// rewrites files in the work tree:
//
//	go test ./assets -run TestScreenshots -screenshots
var writeScreenshots = flag.Bool("screenshots", false, "write docs/screenshots/<page>-<width>.png")

// screenshotWidths are the widths the dashboard must work at: a desktop
// and the narrowest phone it supports.
var screenshotWidths = []int64{1280, 360}

// TestScreenshots loads every page with demo data at both widths and
// checks that nothing is wider than the window (content that would be
// clipped or need sideways scrolling of the whole page; wide tables scroll
// inside their own box). With -screenshots it also writes the PNGs.
func TestScreenshots(t *testing.T) {
	browserCtx(t)
	b := apptest.Start(t)
	startFleet(t, b, 12, func(i int) []string {
		if i%3 == 0 {
			return []string{"canary", "lab"}
		}
		return []string{"lab"}
	})
	ids := seedDemo(t, b)

	pages := []struct{ name, path string }{
		{"login", "/login"},
		{"dashboard", "/"},
		{"agents", "/agents"},
		{"agent", "/agents/SIM-0003"},
		{"inventory", "/inventory"},
		{"inventory-job", "/inventory/job/inv-hw"},
		{"inventory-pc", "/inventory/pc/SIM-0003"},
		{"jobs", "/jobs"},
		{"job-edit", "/jobs/inv-hw"},
		{"exec", "/exec?job=hello"},
		{"executions", "/executions"},
		{"execution", "/executions/" + ids["exec"]},
		{"schedules", "/schedules"},
		{"schedule", "/schedules/nightly-inventory"},
		{"schedule-edit", "/schedules/new"},
		{"results", "/results"},
		{"audit", "/audit"},
		{"run", "/run?pc=SIM-0003"},
		{"logs", "/logs?pc=SIM-0003"},
		{"config", "/config?group=canary"},
		{"rollout", "/rollout"},
		{"jetstream", "/jetstream"},
		{"operators", "/operators"},
		{"kitting", "/kitting"},
	}
	dir := filepath.Join("..", "docs", "screenshots")
	if *writeScreenshots {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	shoot := func(tb *tab, name string) {
		t.Helper()
		// The element reaching furthest right, when the page is wider than
		// the window.
		wide := eval[string](tb, `(() => {
			const limit = document.documentElement.clientWidth;
			if (document.documentElement.scrollWidth <= limit) return '';
			let worst = null;
			for (const el of document.querySelectorAll('body *')) {
				const r = el.getBoundingClientRect();
				if (r.width > 0 && r.right > limit + 1 && (!worst || r.right > worst.r)) worst = {el, r: r.right};
			}
			if (!worst) return 'page ' + document.documentElement.scrollWidth + 'px';
			const e = worst.el;
			return e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className ? '.' + String(e.className).replace(/ /g, '.') : '') +
				' reaches ' + Math.round(worst.r) + 'px: ' + (e.innerText || '').slice(0, 60);
		})()`)
		if wide != "" {
			t.Errorf("%s: wider than the %d px window: %s", name, eval[int](tb, `document.documentElement.clientWidth`), wide)
		}
		if !*writeScreenshots {
			return
		}
		// Let the first live refresh and the fonts settle.
		time.Sleep(300 * time.Millisecond)
		ctx, cancel := context.WithTimeout(tb.ctx, stepTimeout)
		defer cancel()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range screenshotWidths {
		tb := newTab(t, b.URL, w)
		tb.signIn()
		for _, p := range pages {
			if p.name == "login" {
				eval[bool](tb, `(localStorage.removeItem('kanade.token'), true)`)
			}
			tb.open(p.path)
			shoot(tb, fmt.Sprintf("%s-%d", p.name, w))
			if p.name == "login" {
				tb.signIn()
			}
		}
	}
	for _, w := range screenshotWidths {
		tb := newTab(t, b.URL, w)
		tb.darkMode()
		tb.signIn()
		tb.open("/")
		shoot(tb, fmt.Sprintf("dashboard-dark-%d", w))
	}
}

// seedDemo fills the backend through its API the way an operator would, so
// that every page has something to show. Steps whose route is missing are
// left out.
func seedDemo(t *testing.T, b *apptest.Backend) map[string]string {
	t.Helper()
	ids := map[string]string{}
	ok := func(method, path string, body any, hdr ...string) ([]byte, bool) {
		resp, out := b.Do(t, method, path, body, hdr...)
		if resp.StatusCode >= 300 {
			t.Logf("seed %s %s: %d %s", method, path, resp.StatusCode, out)
			return out, false
		}
		return out, true
	}
	apptest.Eventually(t, 30*time.Second, func() error {
		_, body := b.Do(t, "GET", "/api/agents?online=true", nil)
		if n := strings.Count(string(body), `"pc_id"`); n < 12 {
			return fmt.Errorf("%d agents online", n)
		}
		return nil
	})
	ok("POST", "/api/jobs", helloJob, "Content-Type", "application/yaml")
	ok("POST", "/api/jobs", inventoryJob, "Content-Type", "application/yaml")
	ok("POST", "/api/jobs", `id: flaky-cleanup
version: "2"
description: Clean temp files (fails on some PCs)
execute:
  shell: cmd
  script: exit 2
  timeout: 1m
`, "Content-Type", "application/yaml")
	ok("POST", "/api/exec/inv-hw", map[string]any{"target": map[string]any{"all": true}})
	ok("POST", "/api/exec/flaky-cleanup", map[string]any{"target": map[string]any{"groups": []string{"canary"}}})
	if out, good := ok("POST", "/api/exec/hello", map[string]any{"target": map[string]any{"groups": []string{"lab"}}, "jitter": "5s"}); good {
		var r struct {
			ExecID string `json:"exec_id"`
		}
		if err := json.Unmarshal(out, &r); err == nil {
			ids["exec"] = r.ExecID
		}
	}
	ok("POST", "/api/schedules", map[string]any{"id": "nightly-inventory", "cron": "0 0 2 * * *", "tz": "Europe/Berlin",
		"job_id": "inv-hw", "target": map[string]any{"all": true}, "mode": "once_per_pc", "cooldown": "1d"})
	ok("POST", "/api/schedules", map[string]any{"id": "canary-hello", "cron": "0 */15 * * * *",
		"job_id": "hello", "target": map[string]any{"groups": []string{"canary"}}, "enabled": false})
	ok("PUT", "/api/config", map[string]any{"heartbeat_interval": "30s", "target_version": "0.21.2"})
	ok("PUT", "/api/groups/canary/config", map[string]any{"target_version": "0.22.0", "target_version_jitter": "30m"})
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	fw, _ := mw.CreateFormFile("file", "kanade-agent.exe")
	_, _ = fw.Write(bytes.Repeat([]byte("MZ kanade agent "), 4096))
	_ = mw.WriteField("version", "0.22.0")
	_ = mw.Close()
	ok("POST", "/api/agents/publish", form.Bytes(), "Content-Type", mw.FormDataContentType())
	ok("POST", "/api/run", map[string]any{"pc_id": "SIM-0001", "shell": "powershell", "script": "hostname", "timeout_secs": 10})
	ok("POST", "/api/agents/SIM-0003/credentials", nil)
	ok("POST", "/api/enrollments", map[string]any{"count": 2, "groups": []string{"lab"}, "expires_in": "3d"})
	// Let the results arrive so the pages show finished executions.
	time.Sleep(2 * time.Second)
	// Once every PC has its inventory, a manual run of the nightly
	// schedule skips them all (within its cooldown) and its page shows the
	// progress over the fleet.
	apptest.Eventually(t, 30*time.Second, func() error {
		n, err := b.Store.R.NewSelect().TableExpr("execution_results").Where("job_id = ?", "inv-hw").Count(context.Background())
		if err != nil || n < 12 {
			return fmt.Errorf("%d inventory results (%v)", n, err)
		}
		return nil
	})
	ok("POST", "/api/schedules/nightly-inventory/run", nil)
	if ids["exec"] == "" {
		ids["exec"] = "00000000-0000-0000-0000-000000000000"
	}
	return ids
}
