package assets_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"kanade-backend/internal/apptest"
	"kanade-backend/messages"
)

// What a new operator read wrong (issue 16): a progress bar that was full
// green when every PC failed, an "output" link that showed every PC of the
// request, Kill on finished execs, a re-run without confirmation, and Exec
// and Schedule forms that did not say whom a target reaches.
func TestBrowserExecViewsSayWhatHappened(t *testing.T) {
	browserCtx(t)
	b := apptest.Start(t)
	tb := newTab(t, b.URL, 1280)
	tb.signIn()
	startFleet(t, b, 20, func(i int) []string {
		if i <= 5 {
			return []string{"canary"}
		}
		return nil
	})
	for _, job := range []string{
		"id: fail-all\nversion: \"1\"\nexecute:\n  shell: cmd\n  script: exit 1\n  timeout: 30s\n",
		helloJob,
		"id: slow\nversion: \"1\"\nexecute:\n  shell: cmd\n  script: sleep 3s\n  timeout: 30s\n",
	} {
		if resp, body := b.Do(t, "POST", "/api/jobs", job, "Content-Type", "application/yaml"); resp.StatusCode != 200 {
			t.Fatalf("create job: %d %s", resp.StatusCode, body)
		}
	}
	apptest.Eventually(t, 30*time.Second, func() error {
		resp, _ := b.Do(t, "GET", "/api/agents?online=true&limit=1", nil)
		if n := resp.Header.Get("X-Total-Count"); n != "20" {
			return fmt.Errorf("%s agents online", n)
		}
		return nil
	})
	// execAndOpen fires job at plan through the API and opens its page.
	execAndOpen := func(tb *tab, job, plan string) string {
		tb.t.Helper()
		var r messages.ExecResponse
		b.JSON(tb.t, "POST", "/api/exec/"+job, plan, 200, &r)
		tb.open("/executions/" + r.ExecID)
		return r.ExecID
	}
	waitStatus := func(tb *tab, want string) {
		tb.t.Helper()
		tb.wait("exec "+want, 60*time.Second, func() (bool, string) {
			st := eval[string](tb, `document.querySelector('[data-exec-status]')?.dataset.execStatus || ''`)
			return st == want, st
		})
	}

	t.Run("every PC failed: a red bar, 20 failed, re-run confirmed", func(t *testing.T) {
		tb := tb.on(t)
		id := execAndOpen(tb, "fail-all", `{"target":{"all":true}}`)
		waitStatus(tb, "failed")
		tb.waitText("main", "20 failed")
		segs := eval[[]string](tb, `[...document.querySelectorAll('main .progress .seg')].map((s) => s.dataset.seg + '=' + getComputedStyle(s).backgroundColor + '/' + Math.round(s.getBoundingClientRect().width))`)
		bar := eval[int](tb, `Math.round(document.querySelector('main .progress .bar').getBoundingClientRect().width)`)
		if len(segs) != 1 || !strings.HasPrefix(segs[0], "failed=rgb(153, 27, 27)/") || segs[0] != fmt.Sprintf("failed=rgb(153, 27, 27)/%d", bar) {
			t.Fatalf("segments %v, want one red segment over the whole %d px bar", segs, bar)
		}
		if label := eval[string](tb, `document.querySelector('main .progress .bar').getAttribute('aria-label')`); label != "20 failed" {
			t.Fatalf("bar label %q", label)
		}
		if n := eval[int](tb, `[...document.querySelectorAll('main button')].filter((b) => b.innerText.trim() === 'Kill').length`); n != 0 {
			t.Fatal("Kill is offered on a finished exec")
		}
		tb.clickText("main button", "Re-run failed")
		tb.waitText("main .actions", "Confirm: re-run on 20 PCs?")
		if tb.location() != "/executions/"+id {
			t.Fatalf("the first click re-ran: at %s", tb.location())
		}
		tb.clickText("main button", "Confirm: re-run on 20 PCs?")
		tb.waitJS("the re-run's page", fmt.Sprintf(`location.pathname.startsWith('/executions/') && location.pathname !== '/executions/%s'`, id))

		tb.open("/executions?job_id=fail-all")
		tb.waitText("main table", "20 failed")
	})

	t.Run("output shows that PC's result only", func(t *testing.T) {
		tb := tb.on(t)
		execAndOpen(tb, "hello", `{"target":{"all":true}}`)
		waitStatus(tb, "completed")
		tb.waitText("main", "20 succeeded")
		ok := eval[bool](tb, `(() => {
			const row = [...document.querySelectorAll('main tbody tr')].find((r) => r.querySelector('td')?.innerText.trim() === 'SIM-0003');
			const a = row && [...row.querySelectorAll('a')].find((a) => a.innerText.trim() === 'output');
			if (!a) return false;
			a.click();
			return true;
		})()`)
		if !ok {
			t.Fatalf("no output link on SIM-0003's row: %s", tb.text("main"))
		}
		tb.waitJS("the result page", `location.pathname.startsWith('/results/') && location.search === '?pc_id=SIM-0003'`)
		tb.waitReady()
		tb.waitText("main table", "SIM-0003")
		rows := eval[[]string](tb, `[...document.querySelectorAll('main tbody tr')].map((r) => r.querySelector('td[data-label=PC]').innerText.trim())`)
		if len(rows) != 1 || rows[0] != "SIM-0003" {
			t.Fatalf("result page rows %v, want SIM-0003's only", rows)
		}
		if !strings.Contains(tb.text("main table"), "hello") {
			t.Fatalf("SIM-0003's output missing: %s", tb.text("main"))
		}
		tb.clickText("main a", "All PCs of this request")
		tb.wait("every PC of the request", 20*time.Second, func() (bool, string) {
			n := eval[int](tb, `document.querySelectorAll('main tbody tr').length`)
			return n == 20, fmt.Sprint(n)
		})
	})

	t.Run("Kill only while running", func(t *testing.T) {
		tb := tb.on(t)
		execAndOpen(tb, "slow", `{"target":{"groups":["canary"]}}`)
		tb.waitText("main .actions", "Kill")
		waitStatus(tb, "completed")
		tb.wait("Kill withdrawn", 10*time.Second, func() (bool, string) {
			got := tb.text("main .actions")
			return !strings.Contains(got, "Kill"), got
		})
		if head := tb.text("main .page-head"); strings.Contains(head, "null") || strings.Contains(head, "Re-run") {
			t.Fatalf("heading of a completed exec: %q", head)
		}
	})

	t.Run("the Exec form says whom the target reaches", func(t *testing.T) {
		tb := tb.on(t)
		tb.open("/exec?job=hello")
		typeInto(tb, "input[name=groups]", "canray")
		tb.waitText("main [data-reach]", "reaches 0 PCs (0 online)")
		tb.waitText("main [data-reach]", "unknown group: canray")
		tb.clickText("button", "Exec")
		tb.waitText("main [role=alert]", "target matches no PCs (unknown group 'canray'")
		typeInto(tb, "input[name=groups]", "canary")
		tb.wait("the canary preview", 20*time.Second, func() (bool, string) {
			got := tb.text("main [data-reach]")
			return got == "reaches 5 PCs (5 online)", got
		})
	})

	t.Run("the Schedule form warns and saves", func(t *testing.T) {
		tb := tb.on(t)
		tb.open("/schedules/new")
		tb.setValue("input[name=id]", "later")
		tb.setValue("select[name=job_id]", "hello")
		// A click on the element itself, not at its coordinates: the cron
		// preview appearing above it can move the form between the two.
		if eval[bool](tb, `(() => { const c = document.querySelector('input[name=all]'); c.click(); return c.checked; })()`) {
			t.Fatal("the All PCs box is still ticked")
		}
		typeInto(tb, "input[name=groups]", "new-office")
		tb.waitText("main [data-reach]", "reaches 0 PCs (0 online)")
		tb.clickText("button", "Save schedule")
		tb.waitText("main [role=status]", "Saved. target matches no PCs (unknown group 'new-office'")
		tb.clickText("main [role=status] a", "Open the schedule")
		tb.waitJS("schedule page", `location.pathname === '/schedules/later'`)
	})
}

// typeInto replaces an input's value as typing does, firing input.
func typeInto(tb *tab, sel, v string) {
	tb.t.Helper()
	eval[bool](tb, fmt.Sprintf(`(() => {
		const el = document.querySelector(%s);
		el.value = %s;
		el.dispatchEvent(new Event('input', {bubbles: true}));
		return true;
	})()`, jsString(sel), jsString(v)))
}
