package cron

import (
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorhill/cronexpr"
)

// TestNextDayFieldsAND pins wire.md §5: a restricted day-of-month and a
// restricted day-of-week combine with AND, as upstream's croner does; with
// only one of them restricted, that one alone decides. Expected dates were
// listed independently (Python's calendar module). 2026-01-01 is a
// Thursday.
func TestNextDayFieldsAND(t *testing.T) {
	const after = "2025-12-31T12:00:00Z"
	tests := []struct {
		name, expr string
		want       []string
	}{
		// The cases.
		{"first Mondays", "0 0 9 1-7 * MON",
			[]string{"2026-01-05T09:00:00Z", "2026-02-02T09:00:00Z", "2026-03-02T09:00:00Z", "2026-04-06T09:00:00Z", "2026-05-04T09:00:00Z"}},
		{"Friday the 13th", "0 0 0 13 * FRI",
			[]string{"2026-02-13T00:00:00Z", "2026-03-13T00:00:00Z", "2026-11-13T00:00:00Z", "2027-08-13T00:00:00Z"}},
		{"last day of month", "0 0 0 L * *",
			[]string{"2026-01-31T00:00:00Z", "2026-02-28T00:00:00Z", "2026-03-31T00:00:00Z", "2026-04-30T00:00:00Z"}},
		{"first Monday by #", "0 0 0 * * MON#1",
			[]string{"2026-01-05T00:00:00Z", "2026-02-02T00:00:00Z", "2026-03-02T00:00:00Z"}},
		{"first of month", "0 0 0 1 * *",
			[]string{"2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"}},
		{"Sundays", "0 0 0 * * SUN",
			[]string{"2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z", "2026-01-18T00:00:00Z", "2026-01-25T00:00:00Z", "2026-02-01T00:00:00Z"}},
		// L, W, # and nL with the AND rule.
		{"last day if a Friday", "0 0 0 L * FRI",
			[]string{"2026-07-31T00:00:00Z", "2027-04-30T00:00:00Z", "2027-12-31T00:00:00Z"}},
		{"weekday nearest the 15th if a Monday", "0 0 0 15W * MON",
			[]string{"2026-02-16T00:00:00Z", "2026-03-16T00:00:00Z", "2026-06-15T00:00:00Z", "2026-11-16T00:00:00Z", "2027-02-15T00:00:00Z"}},
		{"last weekday of month", "0 0 0 LW * *",
			[]string{"2026-01-30T00:00:00Z", "2026-02-27T00:00:00Z", "2026-03-31T00:00:00Z", "2026-04-30T00:00:00Z", "2026-05-29T00:00:00Z"}},
		{"last weekday if a Monday", "0 0 0 LW * 1",
			[]string{"2026-08-31T00:00:00Z", "2026-11-30T00:00:00Z", "2027-05-31T00:00:00Z"}},
		{"last Friday", "0 0 0 * * 5L",
			[]string{"2026-01-30T00:00:00Z", "2026-02-27T00:00:00Z", "2026-03-27T00:00:00Z", "2026-04-24T00:00:00Z", "2026-05-29T00:00:00Z"}},
		{"last day on a weekend", "0 0 0 L * SAT,SUN",
			[]string{"2026-01-31T00:00:00Z", "2026-02-28T00:00:00Z", "2026-05-31T00:00:00Z", "2026-10-31T00:00:00Z", "2027-01-31T00:00:00Z"}},
		// Ranges, steps, names, POSIX 7 and 5-field forms.
		{"weekdays among days 1-7", "0 0 0 1-7 * 1-5",
			[]string{"2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z", "2026-01-07T00:00:00Z", "2026-02-02T00:00:00Z"}},
		{"day step on Sundays", "0 0 0 */10 * SUN",
			[]string{"2026-01-11T00:00:00Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", "2026-05-31T00:00:00Z", "2026-06-21T00:00:00Z"}},
		{"month and weekday names", "0 0 0 1-7 Jan,Jul Mon",
			[]string{"2026-01-05T00:00:00Z", "2026-07-06T00:00:00Z", "2027-01-04T00:00:00Z", "2027-07-05T00:00:00Z"}},
		{"second Sunday, POSIX 7", "0 0 12 8-14 * 7",
			[]string{"2026-01-11T12:00:00Z", "2026-02-08T12:00:00Z", "2026-03-08T12:00:00Z"}},
		{"second Sunday, range to 7", "0 0 12 8-14 * 6-7",
			[]string{"2026-01-10T12:00:00Z", "2026-01-11T12:00:00Z", "2026-02-08T12:00:00Z", "2026-02-14T12:00:00Z"}},
		{"5-field first Mondays", "0 9 1-7 * 1",
			[]string{"2026-01-05T09:00:00Z", "2026-02-02T09:00:00Z"}},
		{"every 30 min on the first Monday", "0 */30 9 1-7 * MON",
			[]string{"2026-01-05T09:00:00Z", "2026-01-05T09:30:00Z", "2026-02-02T09:00:00Z"}},
		{"31st on a Friday", "0 0 0 31 * FRI",
			[]string{"2026-07-31T00:00:00Z", "2027-12-31T00:00:00Z"}},
		{"leap day on a Monday", "0 0 0 29 2 MON",
			[]string{"2044-02-29T00:00:00Z", "2072-02-29T00:00:00Z"}},
		// A field that restricts nothing leaves the other alone: "?" and a
		// full range read as "*" would.
		{"? day-of-month", "0 0 0 ? * MON",
			[]string{"2026-01-05T00:00:00Z", "2026-01-12T00:00:00Z"}},
		{"? day-of-week", "0 0 0 13 * ?",
			[]string{"2026-01-13T00:00:00Z", "2026-02-13T00:00:00Z"}},
		{"full day-of-month range", "0 0 0 1-31 * MON",
			[]string{"2026-01-05T00:00:00Z", "2026-01-12T00:00:00Z"}},
		{"full day-of-week range", "0 0 0 13 * 0-6",
			[]string{"2026-01-13T00:00:00Z", "2026-02-13T00:00:00Z"}},
		{"@monthly", "@monthly",
			[]string{"2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := mustParse(t, tt.expr, "")
			got := e.NextN(utc(after), len(tt.want))
			if formatAll(got) != strings.Join(tt.want, " ") {
				t.Errorf("%q after %s:\n got %s\nwant %s", tt.expr, after, formatAll(got), strings.Join(tt.want, " "))
			}
		})
	}
}

func TestCheckFuture(t *testing.T) {
	now := utc("2026-05-20T10:00:00Z")
	// Parse accepts a year in the past: the expression is well formed and
	// matched once. Only the caller knows what "now" is.
	past := mustParse(t, "0 0 0 1 1 * 1970", "")
	err := past.CheckFuture(now)
	if err == nil {
		t.Fatal("a 1970 schedule has no future fire time")
	}
	if want := `cron "0 0 0 1 1 * 1970": no fire time after 2026-05-20T10:00:00Z (every instant it matches is in the past)`; err.Error() != want {
		t.Errorf("error\n got %q\nwant %q", err.Error(), want)
	}
	if !errors.Is(err, ErrNoFutureFire) {
		t.Errorf("error does not match ErrNoFutureFire")
	}
	// The last instant of a year field that is running out.
	last := mustParse(t, "0 0 9 1-7 * MON 2026", "Europe/Berlin")
	if err := last.CheckFuture(utc("2026-12-07T07:59:59Z")); err != nil {
		t.Errorf("one instant left: %v", err)
	}
	if err := last.CheckFuture(utc("2026-12-07T08:00:00Z")); !errors.Is(err, ErrNoFutureFire) {
		t.Errorf("after the last instant: %v", err)
	}
	for _, expr := range []string{"@hourly", "0 0 0 1 1 * 2030", "0 0 0 29 2 MON"} {
		if err := mustParse(t, expr, "").CheckFuture(now); err != nil {
			t.Errorf("%q: %v", expr, err)
		}
	}
}

// dayTerm is one day-field entry and, for the oracle, which dates it
// matches (d is a date at midnight UTC).
type dayTerm struct {
	text string
	ok   func(d time.Time) bool
}

func lastDay(d time.Time) int { return time.Date(d.Year(), d.Month()+1, 0, 0, 0, 0, 0, time.UTC).Day() }

// nearestWeekday is Quartz's nW: the weekday nearest day n, never
// crossing the month's bounds.
func nearestWeekday(d time.Time, n int) int {
	switch time.Date(d.Year(), d.Month(), n, 0, 0, 0, 0, time.UTC).Weekday() {
	case time.Saturday:
		if n == 1 {
			return 3
		}
		return n - 1
	case time.Sunday:
		if n == lastDay(d) {
			return n - 2
		}
		return n + 1
	}
	return n
}

func anyDay(time.Time) bool { return true }

var (
	domTerms = []dayTerm{
		{"*", anyDay}, {"?", anyDay},
		{"1-7", func(d time.Time) bool { return d.Day() <= 7 }},
		{"8-14", func(d time.Time) bool { return d.Day() >= 8 && d.Day() <= 14 }},
		{"13", func(d time.Time) bool { return d.Day() == 13 }},
		{"1,15", func(d time.Time) bool { return d.Day() == 1 || d.Day() == 15 }},
		{"29,30,31", func(d time.Time) bool { return d.Day() >= 29 }},
		{"*/10", func(d time.Time) bool { return d.Day()%10 == 1 }},
		{"L", func(d time.Time) bool { return d.Day() == lastDay(d) }},
		{"15W", func(d time.Time) bool { return d.Day() == nearestWeekday(d, 15) }},
		{"1W", func(d time.Time) bool { return d.Day() == nearestWeekday(d, 1) }},
		{"LW", func(d time.Time) bool { return d.Day() == nearestWeekday(d, lastDay(d)) }},
	}
	dowTerms = []dayTerm{
		{"*", anyDay}, {"?", anyDay},
		{"MON", func(d time.Time) bool { return d.Weekday() == time.Monday }},
		{"Fri", func(d time.Time) bool { return d.Weekday() == time.Friday }},
		{"7", func(d time.Time) bool { return d.Weekday() == time.Sunday }},
		{"1-5", func(d time.Time) bool { return d.Weekday() >= time.Monday && d.Weekday() <= time.Friday }},
		{"SAT,SUN", func(d time.Time) bool { return d.Weekday() == time.Saturday || d.Weekday() == time.Sunday }},
		{"5-7", func(d time.Time) bool { return d.Weekday() == time.Sunday || d.Weekday() >= time.Friday }},
		{"MON#1", func(d time.Time) bool { return d.Weekday() == time.Monday && d.Day() <= 7 }},
		{"2#3", func(d time.Time) bool { return d.Weekday() == time.Tuesday && (d.Day()-1)/7 == 2 }},
		{"0#5", func(d time.Time) bool { return d.Weekday() == time.Sunday && d.Day() >= 29 }},
		{"5L", func(d time.Time) bool { return d.Weekday() == time.Friday && d.Day()+7 > lastDay(d) }},
	}
	monthTerms = []dayTerm{
		{"*", anyDay},
		{"2", func(d time.Time) bool { return d.Month() == time.February }},
		{"Jan-Mar", func(d time.Time) bool { return d.Month() <= time.March }},
		{"Nov,Dec", func(d time.Time) bool { return d.Month() >= time.November }},
	}
	// Time-of-day fields with the values they stand for.
	secTerms  = map[string][]int{"0": {0}, "0,30": {0, 30}, "*/20": {0, 20, 40}}
	minTerms  = map[string][]int{"0": {0}, "15,45": {15, 45}}
	hourTerms = map[string][]int{"9": {9}, "0-2": {0, 1, 2}, "*/12": {0, 12}}
)

// oracleNext is the AND rule written out day by day, independently of
// cronexpr: the first wall time after after whose date matches month, dom
// and dow and whose time of day is one of the listed ones. Zero when none
// before horizon.
func oracleNext(after, horizon time.Time, month, dom, dow func(time.Time) bool, hours, mins, secs []int) time.Time {
	for d := startOfDay(after); d.Before(horizon); d = d.AddDate(0, 0, 1) {
		if !month(d) || !dom(d) || !dow(d) {
			continue
		}
		for _, h := range hours {
			for _, m := range mins {
				for _, s := range secs {
					if t := d.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(s)*time.Second); t.After(after) {
						return t
					}
				}
			}
		}
	}
	return time.Time{}
}

func pickKey(r *rand.Rand, m map[string][]int) string {
	// Sorted, so that the seed alone decides.
	keys := slices.Sorted(maps.Keys(m))
	return keys[r.IntN(len(keys))]
}

// TestNextDayFieldsOracle compares Next with the oracle on random
// combinations of day-of-month, day-of-week, month and time-of-day terms
// (L, W, LW, #, nL, names, ranges, steps, lists, ?), from random instants.
// An expression Parse rejects must have no match in the whole range.
func TestNextDayFieldsOracle(t *testing.T) {
	r := rand.New(rand.NewPCG(22, 5))
	floor := time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	end := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
	rejected := 0
	for range 1500 {
		dom, dow, month := domTerms[r.IntN(len(domTerms))], dowTerms[r.IntN(len(dowTerms))], monthTerms[r.IntN(len(monthTerms))]
		sec, mn, hr := pickKey(r, secTerms), pickKey(r, minTerms), pickKey(r, hourTerms)
		expr := strings.Join([]string{sec, mn, hr, dom.text, month.text, dow.text}, " ")
		next := func(after, horizon time.Time) time.Time {
			return oracleNext(after, horizon, month.ok, dom.ok, dow.ok, hourTerms[hr], minTerms[mn], secTerms[sec])
		}
		e, err := Parse(expr, "")
		if err != nil {
			if !strings.Contains(err.Error(), "never matches") {
				t.Fatalf("Parse(%q): %v", expr, err)
			}
			if rejected++; rejected <= 10 {
				if m := next(floor, end); !m.IsZero() {
					t.Fatalf("Parse(%q) rejected an expression that matches %v", expr, m)
				}
			}
			continue
		}
		after := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(r.Int64N(int64(60 * 365 * 24 * time.Hour))))
		for range 3 {
			got := e.Next(after)
			want := next(after, end)
			if !got.Equal(want) {
				t.Fatalf("%q: Next(%v) = %v, oracle %v", expr, after, got, want)
			}
			if got.IsZero() {
				break
			}
			after = got
		}
	}
	if rejected == 0 {
		t.Error("no random expression was impossible: the generator no longer covers rejection")
	}
}

// BenchmarkDayFieldsAND measures the intersection search against the raw
// ceiling of cronexpr alone on the same expression (which reads the day
// fields with OR), in the same run.
//
//	go test -run '^$' -bench DayFieldsAND ./messages/cron/
func BenchmarkDayFieldsAND(b *testing.B) {
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b.Run("next_first_monday", func(b *testing.B) {
		e := mustParse(b, "0 0 9 1-7 * MON", "Europe/Berlin")
		raw := cronexpr.MustParse(e.Normalized())
		t := from
		for b.Loop() {
			if t = e.Next(t); t.IsZero() {
				t = from
			}
		}
		rawStart, w := time.Now(), from
		for range b.N {
			if w = raw.Next(w); w.IsZero() {
				w = from
			}
		}
		b.ReportMetric(float64(time.Since(rawStart).Nanoseconds())/float64(b.N), "raw_cronexpr_ns/op")
	})
	// The costliest rejection: two dense day sets that never meet (days
	// 1-14 by # against days 15-31), searched from 1970 to 2099.
	b.Run("parse_never_matches_worst", func(b *testing.B) {
		const worst = "0 0 0 15-31 * 0#1,1#1,2#1,3#1,4#1,5#1,6#1,0#2,1#2,2#2,3#2,4#2,5#2,6#2"
		for b.Loop() {
			if _, err := Parse(worst, ""); err == nil {
				b.Fatal("expected a rejection")
			}
		}
		rawStart := time.Now()
		for range b.N {
			if _, err := cronexpr.Parse("0 0 0 15-31 * 0#1,1#1,2#1,3#1,4#1,5#1,6#1,0#2,1#2,2#2,3#2,4#2,5#2,6#2 *"); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(time.Since(rawStart).Nanoseconds())/float64(b.N), "raw_cronexpr_parse_ns/op")
	})
}
