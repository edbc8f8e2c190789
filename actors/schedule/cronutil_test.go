package schedule

import (
	"testing"
	"time"

	"kanade-backend/messages/cron"
)

func TestLatestInstant(t *testing.T) {
	mustParse := func(expr, tz string) *cron.Expr {
		e, err := cron.Parse(expr, tz)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	base := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		name        string
		expr, tz    string
		after, upTo time.Time
		want        time.Time // zero = none
	}{
		{"every second, a day of downtime", "* * * * * *", "", base.Add(-24 * time.Hour), base.Add(500 * time.Millisecond), base},
		{"upTo is itself an instant", "0 * * * * *", "", base.Add(-time.Hour), base, base},
		{"after is exclusive", "0 0 10 * * *", "", base, base.Add(time.Hour), time.Time{}},
		{"hourly, latest of many", "0 0 * * * *", "", base.Add(-48 * time.Hour), base.Add(90 * time.Minute), base.Add(time.Hour)},
		{"none in window", "0 0 0 1 1 *", "", base.Add(-time.Hour), base, time.Time{}},
		{"dense then sparse", "* * 9 * * *", "", base.Add(-3 * time.Hour), base, time.Date(2026, 3, 1, 9, 59, 59, 0, time.UTC)},
		// New York springs forward on 2026-03-08 at 02:00 → 03:00: the 02:30
		// wall time does not exist and fires at the jump (07:00 UTC).
		{"dst gap in New York", "0 30 2 * * *", "America/New_York",
			time.Date(2026, 3, 8, 0, 0, 0, 0, time.UTC), time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC),
			time.Date(2026, 3, 8, 7, 0, 0, 0, time.UTC)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := latestInstant(mustParse(c.expr, c.tz), c.after, c.upTo)
			if ok != !c.want.IsZero() || !got.Equal(c.want) {
				t.Fatalf("latestInstant = %v, %v; want %v", got, ok, c.want)
			}
		})
	}
}
