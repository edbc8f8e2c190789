package schedules_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"kanade-backend/internal/apptest"
)

// firstMondays lists the n first Mondays at 09:00 in loc after after,
// computed from the calendar, not from a cron library.
func firstMondays(after time.Time, loc *time.Location, n int) []time.Time {
	var out []time.Time
	y, m, _ := after.In(loc).Date()
	for len(out) < n {
		d := time.Date(y, m, 1, 9, 0, 0, 0, loc)
		for d.Weekday() != time.Monday {
			d = d.AddDate(0, 0, 1)
		}
		if d.After(after) {
			out = append(out, d)
		}
		m++
		if m > time.December {
			y, m = y+1, time.January
		}
	}
	return out
}

type fireTime struct {
	UTC   time.Time `json:"utc"`
	Local string    `json:"local"`
}

func sameFires(t *testing.T, what string, got []fireTime, want []time.Time) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d fire times, want %d: %+v", what, len(got), len(want), got)
	}
	for i, w := range want {
		if !got[i].UTC.Equal(w) || got[i].Local != w.Format(time.RFC3339) {
			t.Fatalf("%s: fire %d = %s / %s, want %s / %s (all: %+v)", what, i, got[i].UTC, got[i].Local,
				w.UTC(), w.Format(time.RFC3339), got)
		}
	}
}

// Day-of-month and day-of-week combine with AND (wire.md §5, issue 22):
// the preview, which the dashboard's editor calls as you type, and a
// schedule's status list the first Mondays only, and an expression whose
// day fields never meet, or whose instants are all past, is refused by
// both the preview and the upsert.
func TestDayFieldsANDThroughTheAPI(t *testing.T) {
	b := apptest.Start(t)
	putJob(t, b, "job")
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	const firstMonday = "0 0 9 1-7 * MON"
	before := time.Now()
	var p struct {
		Next []fireTime `json:"next"`
	}
	q := url.Values{"cron": {firstMonday}, "tz": {"Europe/Berlin"}, "n": {"24"}}
	b.JSON(t, http.MethodGet, "/api/schedules/preview?"+q.Encode(), nil, 200, &p)
	// Two years of first Mondays: the OR reading would list days 1-7 and
	// every Monday, 24 instants within three months.
	sameFires(t, "preview", p.Next, firstMondays(before, berlin, 24))

	b.JSON(t, http.MethodPost, "/api/schedules", map[string]any{
		"id": "patch-tuesday-eve", "cron": firstMonday, "tz": "Europe/Berlin", "job_id": "job", "target": map[string]any{"all": true},
	}, 200, nil)
	var st struct {
		Status struct {
			State     string     `json:"state"`
			NextFires []fireTime `json:"next_fires"`
		} `json:"status"`
	}
	apptest.Eventually(t, 10*time.Second, func() error {
		b.JSON(t, http.MethodGet, "/api/schedules/patch-tuesday-eve", nil, 200, &st)
		if st.Status.State != "running" {
			return fmt.Errorf("schedule state %s", st.Status.State)
		}
		return nil
	})
	sameFires(t, "status", st.Status.NextFires, firstMondays(before, berlin, len(st.Status.NextFires)))
	if len(st.Status.NextFires) == 0 {
		t.Fatal("status lists no next fires")
	}

	for _, c := range []struct{ cron, want string }{
		{"0 0 0 1-7 * MON#2", `cron "0 0 0 1-7 * MON#2": never matches any date between 1970 and 2099 (day-of-month and day-of-week must both match)`},
		{"0 0 0 13 2 FRI 2027-2030", `cron "0 0 0 13 2 FRI 2027-2030": never matches any date between 1970 and 2099 (day-of-month and day-of-week must both match)`},
	} {
		b.WantError(t, http.MethodGet, "/api/schedules/preview?"+url.Values{"cron": {c.cron}}.Encode(), nil, 400, c.want)
		b.WantError(t, http.MethodPost, "/api/schedules", map[string]any{
			"id": "never", "cron": c.cron, "job_id": "job", "target": map[string]any{"all": true},
		}, 400, "invalid schedule: "+c.want)
	}
	// Well formed, matched once, never again.
	resp, body := b.Do(t, http.MethodGet, "/api/schedules/preview?"+url.Values{"cron": {"0 0 0 1 1 * 1970"}}.Encode(), nil)
	if msg := apptest.ErrorText(t, body); resp.StatusCode != 400 || !strings.HasPrefix(msg, `cron "0 0 0 1 1 * 1970": no fire time after `) {
		t.Fatalf("preview of a past year: %d %s", resp.StatusCode, body)
	}
	var list []map[string]any
	b.JSON(t, http.MethodGet, "/api/schedules", nil, 200, &list)
	if len(list) != 1 {
		t.Fatalf("a refused schedule was stored: %v", list)
	}
}
