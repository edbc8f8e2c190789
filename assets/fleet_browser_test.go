package assets_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kanade-backend/cmd/kanade-backend/app/apptest"
)

const helloJob = `id: hello
version: "1.0.0"
description: Say hello
execute:
  shell: powershell
  script: echo hello
  timeout: 30s
`

const inventoryJob = `id: inv-hw
version: "1"
description: Hardware inventory
execute:
  shell: powershell
  script: 'echo-json {"cpu":"Xeon","cores":8,"mem_bytes":17179869184,"boot":"2026-11-01T08:00:00Z"}'
  timeout: 30s
inventory:
  display:
    - {field: cpu, label: CPU}
    - {field: cores, label: Cores, type: number}
    - {field: mem_bytes, label: Memory, type: bytes}
    - {field: boot, label: Booted, type: timestamp}
  summary:
    - {field: cores, label: Cores, type: number}
    - {field: mem_bytes, label: Memory, type: bytes}
`

// TestBrowserFleet drives the dashboard against a backend with 20 agents:
// they appear online without a reload, and the main operator actions work
// end to end (job from YAML, exec to a group followed to completion,
// schedules, groups, run, logs, config, rollout, inventory).
func TestBrowserFleet(t *testing.T) {
	browserCtx(t)
	b := apptest.Start(t)
	tb := newTab(t, b.URL, 1280)
	tb.signIn()

	// The in-process equivalent of `go run ./cmd/kanade-fleet --agents 20`
	// with the dashboard already open: the count must arrive live.
	tb.open("/")
	eval[bool](tb, `(window.__noReload = true)`)
	startFleet(t, b, 20, func(i int) []string {
		if i%2 == 0 {
			return []string{"canary", "lab"}
		}
		return []string{"lab"}
	})
	t.Run("agents come online live", func(t *testing.T) {
		tb := tb.on(t)
		tb.wait("20 agents online", 60*time.Second, func() (bool, string) {
			got := tb.text("[data-stat=agents-online]")
			return got == "20", got
		})
		if !eval[bool](tb, `window.__noReload === true`) {
			t.Fatal("the page reloaded")
		}
	})
	if t.Failed() {
		return
	}

	t.Run("agents search and detail", func(t *testing.T) {
		tb := tb.on(t)
		tb.open("/agents")
		tb.waitText("main table", "SIM-0020")
		tb.do("search", chromedpSendKeys("input[name=q]", "0007"))
		tb.wait("one agent", 10*time.Second, func() (bool, string) {
			n := eval[int](tb, `document.querySelectorAll('main tbody tr').length`)
			return n == 1 && strings.Contains(tb.text("main tbody"), "SIM-0007"), tb.text("main tbody")
		})
		tb.waitText("main tbody", "online")
		tb.waitText("main tbody", "lab")

		tb.clickText("main a", "SIM-0007")
		tb.waitText("main h1", "SIM-0007")
		tb.setValue("input[name=group]", "night-shift")
		tb.clickText("button", "Add")
		tb.waitText("ul[aria-label=Groups]", "night-shift")
		tb.do("remove group", chromedpClick(`button[aria-label="Remove group night-shift"]`))
		tb.wait("group removed", 10*time.Second, func() (bool, string) {
			got := tb.text("ul[aria-label=Groups]")
			return !strings.Contains(got, "night-shift"), got
		})
		tb.clickText("button", "Ping")
		tb.waitText("main", "Heartbeat received")
	})

	// The agents page pages by keyset (?after=, the API's cost is the same
	// at any depth): 20 agents by 8 are three pages, the last without a
	// next link; back to the first page from there.
	t.Run("agents pages by keyset", func(t *testing.T) {
		tb := tb.on(t)
		rows := func() string {
			return eval[string](tb, `[...document.querySelectorAll('main tbody tr td:first-child')].map((td) => td.textContent).join(',')`)
		}
		page := func(what, want string) {
			t.Helper()
			tb.wait(what, 10*time.Second, func() (bool, string) {
				got := rows()
				return got == want, got
			})
		}
		tb.open("/agents?limit=8")
		page("first page", "SIM-0001,SIM-0002,SIM-0003,SIM-0004,SIM-0005,SIM-0006,SIM-0007,SIM-0008")
		tb.waitText("main nav[aria-label=Pages]", "SIM-0001 – SIM-0008")
		tb.waitText("main .page-head", "20 agents")
		tb.clickText("main nav[aria-label=Pages] a", "Next →")
		page("second page", "SIM-0009,SIM-0010,SIM-0011,SIM-0012,SIM-0013,SIM-0014,SIM-0015,SIM-0016")
		if got := tb.location(); !strings.Contains(got, "after=SIM-0008") || strings.Contains(got, "offset") {
			t.Fatalf("second page at %s, want after=SIM-0008", got)
		}
		tb.clickText("main nav[aria-label=Pages] a", "Next →")
		page("last page", "SIM-0017,SIM-0018,SIM-0019,SIM-0020")
		if eval[bool](tb, `[...document.querySelectorAll('main nav[aria-label=Pages] a')].some((a) => a.textContent.includes('Next'))`) {
			t.Fatal("the last page links to a next one")
		}
		tb.clickText("main nav[aria-label=Pages] a", "← First")
		page("first page again", "SIM-0001,SIM-0002,SIM-0003,SIM-0004,SIM-0005,SIM-0006,SIM-0007,SIM-0008")
		// A new search starts from the first page of its matches.
		tb.clickText("main nav[aria-label=Pages] a", "Next →")
		page("second page before searching", "SIM-0009,SIM-0010,SIM-0011,SIM-0012,SIM-0013,SIM-0014,SIM-0015,SIM-0016")
		tb.do("search", chromedpSendKeys("input[name=q]", "SIM-000"))
		page("search from its first page", "SIM-0001,SIM-0002,SIM-0003,SIM-0004,SIM-0005,SIM-0006,SIM-0007,SIM-0008")
		if strings.Contains(tb.location(), "after=") {
			t.Fatalf("search kept the page position: %s", tb.location())
		}
	})

	t.Run("job from YAML, exec to a group, completed live", func(t *testing.T) {
		tb := tb.on(t)
		tb.open("/jobs/new")
		tb.setValue("textarea[name=manifest]", helloJob)
		tb.clickText("button", "Save")
		tb.waitText("main [role=status]", "Saved job hello version 1.0.0")
		tb.open("/jobs")
		tb.waitText("main table", "Say hello")

		tb.clickText("main a", "Exec")
		tb.waitJS("exec form", `location.pathname === '/exec' && document.querySelector('select[name=job]')?.value === 'hello'`)
		tb.setValue("input[name=groups]", "canary")
		eval[bool](tb, `(window.__noReload = true)`)
		tb.clickText("button", "Exec")
		tb.waitJS("execution page", `location.pathname.startsWith('/executions/')`)
		tb.wait("execution completed", 60*time.Second, func() (bool, string) {
			st := eval[string](tb, `document.querySelector('[data-exec-status]')?.dataset.execStatus || ''`)
			return st == "completed", st
		})
		if !eval[bool](tb, `window.__noReload === true`) {
			t.Fatal("the page reloaded")
		}
		if n := eval[int](tb, `[...document.querySelectorAll('main tbody tr')].filter((r) => r.innerText.includes('success')).length`); n != 10 {
			t.Fatalf("%d PCs shown as success, want the 10 canaries; page: %s", n, tb.text("main"))
		}
	})

	t.Run("results and audit filters", func(t *testing.T) {
		// The results and audit rows come from the exec of the subtest
		// above; without its routes there is nothing to filter.
		tb := tb.on(t)
		tb.open("/results?job_id=hello&status=success")
		tb.waitText("main table", "SIM-0002")
		tb.open("/audit")
		tb.setValue("select[name=action]", "job_upsert")
		tb.clickText("button", "Filter")
		tb.waitJS("filtered", `location.search.includes('action=job_upsert')`)
		tb.waitText("main table", "hello")
	})

	t.Run("schedule create, disable, and the 409 on its job", func(t *testing.T) {
		tb := tb.on(t)
		tb.open("/schedules/new")
		tb.setValue("input[name=id]", "nightly-hello")
		tb.setValue("input[name=cron]", "0 0 3 * * *")
		tb.setValue("select[name=job_id]", "hello")
		tb.clickText("button", "Save schedule")
		tb.waitJS("schedule page", `location.pathname === '/schedules/nightly-hello'`)
		tb.waitText("main", "Next fire times")
		tb.clickText("button", "Disable")
		tb.waitJS("disabled", `document.querySelector('[data-schedule-state]')?.dataset.scheduleState === 'disabled'`)
		tb.open("/schedules")
		tb.waitText("main table", "nightly-hello")
		tb.waitText("main table", "Enable")

		tb.open("/jobs")
		tb.clickText("main button", "Delete")
		tb.clickText("main button", "Confirm: Delete hello?")
		tb.waitText("main [role=alert]", "is referenced by schedule 'nightly-hello'")
	})

	t.Run("run, logs, config", func(t *testing.T) {
		tb := tb.on(t)
		tb.open("/run?pc=SIM-0003")
		tb.setValue("textarea[name=script]", "echo hello from SIM-0003")
		tb.clickText("button", "Run")
		tb.waitText("main", "hello from SIM-0003")

		tb.open("/logs?pc=SIM-0003")
		tb.waitText("main pre", "started (simulated) pc_id=SIM-0003")

		tb.open("/config")
		tb.setValue("input[name=heartbeat_interval]", "45s")
		tb.clickText("button", "Save")
		tb.waitText("main", "Global scope saved.")
		tb.open("/agents/SIM-0001")
		tb.waitText("main", "45s")
	})

	t.Run("rollout upload and roll out", func(t *testing.T) {
		tb := tb.on(t)
		bin := filepath.Join(t.TempDir(), "kanade-agent.exe")
		if err := os.WriteFile(bin, []byte("not really an agent"), 0o600); err != nil {
			t.Fatal(err)
		}
		tb.open("/rollout")
		tb.do("choose file", chromedpUpload("input[type=file]", bin))
		tb.setValue("input[name=version]", "9.9.9")
		tb.clickText("button", "Upload")
		tb.waitText("main table", "9.9.9")
		tb.clickText("button", "Roll out")
		tb.waitText("main [role=status]", "Rolling out 9.9.9")
	})

	t.Run("inventory with formatted facts", func(t *testing.T) {
		tb := tb.on(t)
		if resp, body := b.Do(t, "POST", "/api/jobs", inventoryJob, "Content-Type", "application/yaml"); resp.StatusCode != 200 {
			t.Fatalf("create inventory job: %d %s", resp.StatusCode, body)
		}
		tb.open("/exec?job=inv-hw")
		tb.do("all", chromedpClick("input[name=all]"))
		tb.clickText("button", "Exec")
		tb.waitJS("execution page", `location.pathname.startsWith('/executions/')`)
		tb.open("/inventory")
		tb.waitText("main table", "inv-hw")
		tb.clickText("main a", "inv-hw")
		tb.waitText("main table", "16 GiB") // fmt.bytes keeps one decimal only below 10
		tb.clickText("main a", "SIM-0004")
		tb.waitText("main", "Xeon")
	})
}
