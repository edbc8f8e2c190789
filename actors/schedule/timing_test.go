package schedule

import (
	"context"
	"fmt"
	"testing"
	"time"

	"kanade-backend/messages"
)

// A six-field expression is seconds-first: "*/2 * * * * *" fires every two
// seconds (upstream's syntax), not every two minutes.
func TestSixFieldCronFiresEveryTwoSeconds(t *testing.T) {
	h := newHarness(t, harnessOpts{start: t0.Add(500 * time.Millisecond)})
	h.putJob("job", "30s")
	h.putSchedule(`{"id":"s","cron":"*/2 * * * * *","job_id":"job","target":{"all":true}}`)
	h.armedFor("s", t0.Add(2*time.Second))
	var got []time.Time
	for range 5 {
		want := h.status("s").NextTick
		h.fake.Set(*want)
		tk := h.nextTick("s", 5*time.Second)
		if tk.Outcome != messages.TickFired {
			t.Fatalf("tick %+v", tk)
		}
		req := h.exec.nextRequest(t, time.Second)
		if req.ScheduleID != "s" || req.Actor != messages.ActorScheduler || req.InitiatedBy != "scheduler:s" || !req.Plan.Target.All {
			t.Fatalf("request %+v", req)
		}
		got = append(got, tk.Instant)
		h.armedFor("s", tk.Instant.Add(2*time.Second))
	}
	for i, g := range got {
		if want := t0.Add(time.Duration(2*(i+1)) * time.Second); !g.Equal(want) {
			t.Fatalf("tick %d at %v, want %v (all: %v)", i, g, want, got)
		}
	}
	// Nothing in between: one more second brings no tick.
	h.fake.Advance(time.Second)
	h.noTick("s", 100*time.Millisecond)
}

// A five-field POSIX expression has seconds = 0: "*/1 * * * *" fires on
// minute boundaries.
func TestFiveFieldCronFiresOnMinuteBoundaries(t *testing.T) {
	h := newHarness(t, harnessOpts{start: t0.Add(17 * time.Second)})
	h.putJob("job", "30s")
	h.putSchedule(`{"id":"m","cron":"*/1 * * * *","job_id":"job","target":{"all":true}}`)
	h.armedFor("m", t0.Add(time.Minute))
	for i := 1; i <= 3; i++ {
		// Walk there in 10 s steps: no tick may come before the boundary.
		for h.fake.Now().Add(10 * time.Second).Before(t0.Add(time.Duration(i) * time.Minute)) {
			h.fake.Advance(10 * time.Second)
		}
		h.noTick("m", 20*time.Millisecond)
		h.fake.Set(t0.Add(time.Duration(i) * time.Minute))
		tk := h.nextTick("m", 5*time.Second)
		if want := t0.Add(time.Duration(i) * time.Minute); !tk.Instant.Equal(want) || tk.Outcome != messages.TickFired {
			t.Fatalf("tick %+v, want fired at %v", tk, want)
		}
		h.armedFor("m", t0.Add(time.Duration(i+1)*time.Minute))
	}
}

// The status API lists fire times in the schedule's zone across DST: New
// York springs forward on 2026-03-08 (02:00 EST → 03:00 EDT) and falls
// back on 2026-11-01 (02:00 EDT → 01:00 EST).
func TestStatusNextFiresAcrossDST(t *testing.T) {
	start := time.Date(2026, 3, 6, 12, 0, 0, 0, time.UTC)
	h := newHarness(t, harnessOpts{start: start})
	h.putJob("job", "30s")
	h.putSchedule(`{"id":"ny","cron":"0 30 2 * * *","tz":"America/New_York","job_id":"job","target":{"all":true}}`)
	h.armedFor("ny", time.Date(2026, 3, 7, 7, 30, 0, 0, time.UTC))
	st := h.status("ny")
	if st.State != StateRunning || st.TZ != "America/New_York" || len(st.NextFires) != NextFireCount {
		t.Fatalf("status %+v", st)
	}
	want := []struct{ utc, local string }{
		{"2026-03-07T07:30:00Z", "2026-03-07T02:30:00-05:00"},
		// 02:30 does not exist on the 8th: it fires at the jump, 03:00 EDT.
		{"2026-03-08T07:00:00Z", "2026-03-08T03:00:00-04:00"},
		{"2026-03-09T06:30:00Z", "2026-03-09T02:30:00-04:00"},
	}
	for i, w := range want {
		f := st.NextFires[i]
		if f.UTC.Format(time.RFC3339) != w.utc || f.Local != w.local {
			t.Fatalf("fire %d = %s / %s, want %s / %s", i, f.UTC.Format(time.RFC3339), f.Local, w.utc, w.local)
		}
	}

	// Fall back: 01:30 happens twice on 2026-11-01 and fires once, at the
	// first (EDT) occurrence.
	h.putSchedule(`{"id":"fall","cron":"0 30 1 * * *","tz":"America/New_York","job_id":"job","target":{"all":true}}`)
	h.eventually(5*time.Second, func() error { _, err := h.client.Status(context.Background(), "fall"); return err })
	h.fake.Set(time.Date(2026, 10, 31, 12, 0, 0, 0, time.UTC))
	st = h.status("fall")
	got := []string{}
	for _, f := range st.NextFires[:3] {
		got = append(got, f.Local)
	}
	wantFall := []string{"2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00", "2026-11-03T01:30:00-05:00"}
	for i := range wantFall {
		if got[i] != wantFall[i] {
			t.Fatalf("fall-back fires %v, want %v", got, wantFall)
		}
	}
}

// The actor's timer fires across the DST gap at the jump and keeps going.
func TestTimerAcrossSpringForward(t *testing.T) {
	start := time.Date(2026, 3, 8, 6, 0, 0, 0, time.UTC) // 01:00 EST
	h := newHarness(t, harnessOpts{start: start})
	h.putJob("job", "30s")
	h.putSchedule(`{"id":"gap","cron":"0 */30 * * * *","tz":"America/New_York","job_id":"job","target":{"all":true}}`)
	wantLocal := []string{"01:30:00-05:00", "03:00:00-04:00", "03:30:00-04:00"}
	h.armedFor("gap", start.Add(30*time.Minute))
	ny, _ := time.LoadLocation("America/New_York")
	for _, w := range wantLocal {
		h.fake.Set(*h.status("gap").NextTick)
		tk := h.nextTick("gap", 5*time.Second)
		if got := tk.Instant.In(ny).Format("15:04:05Z07:00"); got != w {
			t.Fatalf("tick at %s, want %s", got, w)
		}
		h.exec.nextRequest(t, time.Second)
		h.eventually(5*time.Second, func() error {
			if nt := h.status("gap").NextTick; nt == nil || !nt.After(tk.Instant) {
				return fmt.Errorf("not re-armed after %v", tk.Instant)
			}
			return nil
		})
	}
}
