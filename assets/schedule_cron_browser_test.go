package assets_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"kanade-backend/internal/apptest"
)

// The schedule editor checks the cron as you type against the backend's
// own parser (GET /api/schedules/preview), so it follows the same rules as
// the scheduler (wire.md §5, issues 22 and 14): "0 0 9 1-7 * MON" previews
// first Mondays only, and day fields that never meet or a year in the past
// are refused before anything is saved.
func TestBrowserScheduleEditorCronPreview(t *testing.T) {
	browserCtx(t)
	b := apptest.Start(t)
	tb := newTab(t, b.URL, 1280)
	tb.signIn()
	tb.open("/schedules/new")
	const preview = `document.querySelector('main form div.hint[aria-live=polite]')`
	typeCron := func(v string) {
		eval[bool](tb, fmt.Sprintf(`(() => {
			const el = document.querySelector('input[name=cron]');
			el.value = %s;
			el.dispatchEvent(new Event('input', {bubbles: true}));
			return true;
		})()`, jsString(v)))
	}

	before := time.Now().UTC()
	typeCron("0 0 9 1-7 * MON")
	var want []string
	y, m, _ := before.Date()
	for len(want) < 3 {
		d := time.Date(y, m, 1, 9, 0, 0, 0, time.UTC)
		for d.Weekday() != time.Monday {
			d = d.AddDate(0, 0, 1)
		}
		if d.After(before) {
			want = append(want, d.Format("2006-01-02T15:04:05.000Z"))
		}
		m++
	}
	tb.wait("the preview of first Mondays", 20*time.Second, func() (bool, string) {
		got := eval[string](tb, `[...(`+preview+`?.querySelectorAll('time.ts') || [])].map((e) => e.getAttribute('datetime')).join(' ')`)
		return got == strings.Join(want, " "), got
	})

	for _, c := range []struct{ cron, want string }{
		{"0 0 0 1-7 * MON#2", `cron "0 0 0 1-7 * MON#2": never matches any date between 1970 and 2099 (day-of-month and day-of-week must both match)`},
		{"0 0 0 1 1 * 1970", `cron "0 0 0 1 1 * 1970": no fire time after `},
	} {
		typeCron(c.cron)
		tb.wait("the refusal of "+c.cron, 20*time.Second, func() (bool, string) {
			got := eval[string](tb, `(`+preview+`?.querySelector('.badge.bad') || {innerText: ''}).innerText`)
			return strings.HasPrefix(got, c.want), got
		})
	}
	if resp, body := b.Do(t, "GET", "/api/schedules", nil); resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "[]" {
		t.Fatalf("schedules after typing: %d %s", resp.StatusCode, body)
	}
}
