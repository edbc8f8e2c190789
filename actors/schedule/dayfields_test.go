package schedule

import (
	"testing"
	"time"

	"kanade-backend/messages"
	"kanade-backend/messages/cron"
)

// The scheduler reads cron through messages/cron, so day-of-month and
// day-of-week combine with AND here as in the preview (wire.md §5, issue
// 22): "0 0 9 1-7 * MON" is the first Monday of each month. These tests
// check that the actor's timer, its status and its catch-up all follow
// that rule.

const firstMondayCron = "0 0 9 1-7 * MON"

// firstMondayAfter is the first Monday of a month at 09:00 UTC strictly
// after t, from the calendar.
func firstMondayAfter(t time.Time) time.Time {
	y, m, _ := t.UTC().Date()
	for {
		d := time.Date(y, m, 1, 9, 0, 0, 0, time.UTC)
		for d.Weekday() != time.Monday {
			d = d.AddDate(0, 0, 1)
		}
		if d.After(t) {
			return d
		}
		m++
	}
}

// The fake clock walks day by day, at 09:00, from the end of November
// 2020 to February 2021: the schedule fires on Mon Dec 7, Mon Jan 4 and
// Mon Feb 1 and on no other day (the OR reading fired on Dec 2, 3, 4, 5,
// 6, 7, 14, 21, 28, Jan 1, …).
func TestFirstMondaysFireAcrossTwoMonths(t *testing.T) {
	start := time.Date(2020, 11, 30, 12, 0, 0, 0, time.UTC)
	want := []time.Time{
		time.Date(2020, 12, 7, 9, 0, 0, 0, time.UTC),
		time.Date(2021, 1, 4, 9, 0, 0, 0, time.UTC),
		time.Date(2021, 2, 1, 9, 0, 0, 0, time.UTC),
		time.Date(2021, 3, 1, 9, 0, 0, 0, time.UTC),
	}
	for i, w := range want[:3] {
		if got := firstMondayAfter(w); !got.Equal(want[i+1]) {
			t.Fatalf("calendar: first Monday after %v is %v, want %v", w, got, want[i+1])
		}
	}
	h := newHarness(t, harnessOpts{start: start})
	h.putJob("job", "30s")
	h.putSchedule(`{"id":"fm","cron":"` + firstMondayCron + `","job_id":"job","target":{"all":true}}`)
	h.armedFor("fm", want[0])
	st := h.status("fm")
	for i, w := range want {
		if f := st.NextFires[i]; !f.UTC.Equal(w) || f.Local != w.Format(time.RFC3339) {
			t.Fatalf("status next fire %d = %+v, want %v (all: %+v)", i, f, w, st.NextFires)
		}
	}

	next := 0
	for day := time.Date(2020, 12, 1, 9, 0, 0, 0, time.UTC); !day.After(want[2]); day = day.AddDate(0, 0, 1) {
		h.fake.Set(day)
		if day.Equal(want[next]) {
			tk := h.nextTick("fm", 5*time.Second)
			if tk.Outcome != messages.TickFired || !tk.Instant.Equal(day) {
				t.Fatalf("tick on %v: %+v", day, tk)
			}
			if req := h.exec.nextRequest(t, time.Second); req.ScheduleID != "fm" {
				t.Fatalf("request %+v", req)
			}
			next++
		}
		// The timer is re-armed for the next first Monday, never for a
		// day in between; a tick on any other day would also be seen by
		// the nextTick above or the noTick below.
		h.armedFor("fm", want[next])
	}
	if next != 3 {
		t.Fatalf("%d fires, want 3", next)
	}
	h.noTick("fm", 50*time.Millisecond)
	h.exec.noRequest(t, 10*time.Millisecond)
}

// Catch-up after downtime looks for the latest missed first Monday, not
// the latest Monday. The backend comes back two weeks after a first
// Monday, on a Monday: the OR reading would catch up that same morning.
func TestCatchUpMissesFirstMondayByTheANDRule(t *testing.T) {
	// KV stamps revisions with the real time, and catch-up counts from the
	// revision: run the fake clock ahead of the real one.
	missed := firstMondayAfter(time.Now().Add(time.Hour))
	restart := missed.AddDate(0, 0, 14).Add(30 * time.Minute)
	h := newHarness(t, harnessOpts{noStart: true, start: restart})
	h.putJob("job", "30s")
	h.putSchedule(`{"id":"fm","cron":"` + firstMondayCron + `","job_id":"job","target":{"all":true},"starting_deadline":"400h"}`)
	h.start(0)
	tk := h.nextTick("fm", 5*time.Second)
	if tk.Outcome != messages.TickFired || !tk.Instant.Equal(missed) {
		t.Fatalf("catch-up tick %+v, want fired for %v", tk, missed)
	}
	h.armedFor("fm", firstMondayAfter(restart))
}

// latestInstant, the catch-up's search, and NextFireTimes, the status's,
// on the December 2020.
func TestCronUtilFirstMondays(t *testing.T) {
	e, err := cron.Parse(firstMondayCron, "")
	if err != nil {
		t.Fatal(err)
	}
	nov30 := time.Date(2020, 11, 30, 0, 0, 0, 0, time.UTC)
	jan3 := time.Date(2021, 1, 3, 23, 0, 0, 0, time.UTC)
	if got, ok := latestInstant(e, nov30, jan3); !ok || !got.Equal(time.Date(2020, 12, 7, 9, 0, 0, 0, time.UTC)) {
		t.Errorf("latest first Monday in (Nov 30, Jan 3] = %v, %v; want Dec 7", got, ok)
	}
	if got, ok := latestInstant(e, time.Date(2020, 12, 8, 0, 0, 0, 0, time.UTC), jan3); ok {
		t.Errorf("no first Monday in (Dec 8, Jan 3], got %v", got)
	}
	fires := NextFireTimes(e, nov30, 3)
	wantLocal := []string{"2020-12-07T09:00:00Z", "2021-01-04T09:00:00Z", "2021-02-01T09:00:00Z"}
	for i, w := range wantLocal {
		if fires[i].Local != w {
			t.Fatalf("next fire times %+v, want %v", fires, wantLocal)
		}
	}
}
