package cron

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		// Six fields are seconds-first; cronexpr needs the year appended.
		{"*/2 * * * * *", "*/2 * * * * * *"},
		{"0 0 * * * *", "0 0 * * * * *"},
		{"0 */5 * * * *", "0 */5 * * * * *"},
		// Five fields are POSIX: seconds are 0.
		{"*/1 * * * *", "0 */1 * * * * *"},
		{"30 2 * * 1-5", "0 30 2 * * 1-5 *"},
		// Seven fields are kept; whitespace is collapsed.
		{"0 0 12 * * Mon-Fri 2030", "0 0 12 * * Mon-Fri 2030"},
		{"  0   0\t*  * * *  ", "0 0 * * * * *"},
		// Macros.
		{"@yearly", "0 0 0 1 1 * *"},
		{"@annually", "0 0 0 1 1 * *"},
		{"@monthly", "0 0 0 1 * * *"},
		{"@weekly", "0 0 0 * * 0 *"},
		{"@daily", "0 0 0 * * * *"},
		{"@midnight", "0 0 0 * * * *"},
		{"@hourly", "0 0 * * * * *"},
		{"@Daily", "0 0 0 * * * *"},
		// Names pass through (cronexpr reads them case-insensitively).
		{"0 0 0 * Jan Sun,Sat", "0 0 0 * Jan Sun,Sat *"},
		{"0 0 0 * jan-mar mon", "0 0 0 * jan-mar mon *"},
		// POSIX day-of-week 7 = Sunday: a lone 7 is understood by cronexpr,
		// ranges ending at 7 are expanded because cronexpr empties them.
		{"0 0 0 * * 7", "0 0 0 * * 7 *"},
		{"0 0 0 * * 5-7", "0 0 0 * * 0,5,6 *"},
		{"0 0 0 * * 1-7/2", "0 0 0 * * 0,1,3,5 *"},
		{"0 0 0 * * Fri-7", "0 0 0 * * 0,5,6 *"},
		{"0 0 0 * * 7-7", "0 0 0 * * 0 *"},
		{"0 0 0 * * Mon,5-7", "0 0 0 * * Mon,0,5,6 *"},
		{"0 0 0 * * 0-6", "0 0 0 * * 0-6 *"},
	}
	for _, tt := range tests {
		got, err := Normalize(tt.in)
		if err != nil {
			t.Errorf("Normalize(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Normalize(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestNormalizeErrors(t *testing.T) {
	tests := []struct {
		in, wantErr string
	}{
		{"", `cron "": empty expression (expected e.g. "0 0 * * * *" or "@hourly")`},
		{"x", `cron "x": expected 5, 6 or 7 fields, got 1 (seconds-first: sec min hour day-of-month month day-of-week [year])`},
		{"1 2 3 4", `cron "1 2 3 4": expected 5, 6 or 7 fields, got 4 (seconds-first: sec min hour day-of-month month day-of-week [year])`},
		{"0 0 0 * * * * *", `cron "0 0 0 * * * * *": expected 5, 6 or 7 fields, got 8 (seconds-first: sec min hour day-of-month month day-of-week [year])`},
		{"@reboot", `cron "@reboot": unknown macro "@reboot" (known: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)`},
		{"@daily 5", `cron "@daily 5": macro @daily must stand alone`},
		{"0 0 5-3 * * *", `cron "0 0 5-3 * * *": backwards range "5-3" in hour field (ranges do not wrap around; use a list such as "5,3")`},
		{"0 0 0 * Nov-Feb *", `cron "0 0 0 * Nov-Feb *": backwards range "Nov-Feb" in month field (ranges do not wrap around; use a list such as "Nov,Feb")`},
		{"0 0 0 * * 7-2", `cron "0 0 0 * * 7-2": backwards range "7-2" in day-of-week field (ranges do not wrap around; use a list such as "7,2")`},
		{"0 0 0 * * Sat-Sun", `cron "0 0 0 * * Sat-Sun": backwards range "Sat-Sun" in day-of-week field (ranges do not wrap around; use a list such as "Sat,Sun")`},
		{"0 0 0 * * 5-7/0", `cron "0 0 0 * * 5-7/0": invalid step "5-7/0" in day-of-week field`},
	}
	for _, tt := range tests {
		_, err := Normalize(tt.in)
		if err == nil {
			t.Errorf("Normalize(%q): expected an error", tt.in)
			continue
		}
		if err.Error() != tt.wantErr {
			t.Errorf("Normalize(%q) error\n got %q\nwant %q", tt.in, err.Error(), tt.wantErr)
		}
		if !errors.Is(err, ErrSyntax) {
			t.Errorf("Normalize(%q) error does not match ErrSyntax", tt.in)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		expr, tz, wantErr string
		sentinel          error
	}{
		{"61 * * * * *", "", `cron "61 * * * * *": syntax error in second field: '61'`, ErrSyntax},
		{"0 0 25 * * *", "", `cron "0 0 25 * * *": syntax error in hour field: '25'`, ErrSyntax},
		{"0 0 0 * * Funday", "", `cron "0 0 0 * * Funday": syntax error in day-of-week field: 'Funday'`, ErrSyntax},
		{"0 0 0 30 2 *", "", `cron "0 0 0 30 2 *": never matches any date between 1970 and 2099`, ErrSyntax},
		{"0 0 0 31 2,4,6,9,11 *", "", `cron "0 0 0 31 2,4,6,9,11 *": never matches any date between 1970 and 2099`, ErrSyntax},
		// Day-of-month and day-of-week combine with AND: each field alone
		// matches, together they never do.
		{"0 0 0 30 2 MON", "", `cron "0 0 0 30 2 MON": never matches any date between 1970 and 2099 (day-of-month and day-of-week must both match)`, ErrSyntax},
		{"0 0 0 1-7 * MON#2", "", `cron "0 0 0 1-7 * MON#2": never matches any date between 1970 and 2099 (day-of-month and day-of-week must both match)`, ErrSyntax},
		{"0 0 0 1-21 * 5L", "", `cron "0 0 0 1-21 * 5L": never matches any date between 1970 and 2099 (day-of-month and day-of-week must both match)`, ErrSyntax},
		{"0 0 0 15W * Sat,Sun", "", `cron "0 0 0 15W * Sat,Sun": never matches any date between 1970 and 2099 (day-of-month and day-of-week must both match)`, ErrSyntax},
		{"0 0 0 LW * 0,6", "", `cron "0 0 0 LW * 0,6": never matches any date between 1970 and 2099 (day-of-month and day-of-week must both match)`, ErrSyntax},
		{"0 0 0 29 2 MON 2026-2040", "", `cron "0 0 0 29 2 MON 2026-2040": never matches any date between 1970 and 2099 (day-of-month and day-of-week must both match)`, ErrSyntax},
		{"0 0 * * * *", "Mars/Base", `unknown time zone "Mars/Base"`, ErrUnknownZone},
		{"0 0 * * * *", "Local", `unknown time zone "Local" (use an IANA name such as "Europe/Berlin")`, ErrUnknownZone},
	}
	for _, tt := range tests {
		_, err := Parse(tt.expr, tt.tz)
		if err == nil {
			t.Errorf("Parse(%q, %q): expected an error", tt.expr, tt.tz)
			continue
		}
		if err.Error() != tt.wantErr {
			t.Errorf("Parse(%q, %q) error\n got %q\nwant %q", tt.expr, tt.tz, err.Error(), tt.wantErr)
		}
		if !errors.Is(err, tt.sentinel) {
			t.Errorf("Parse(%q, %q) error does not match %v", tt.expr, tt.tz, tt.sentinel)
		}
	}
}

func TestParseAccessors(t *testing.T) {
	e, err := Parse("*/1 * * * *", "Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	if e.String() != "*/1 * * * *" {
		t.Errorf("String() = %q", e.String())
	}
	if e.Normalized() != "0 */1 * * * * *" {
		t.Errorf("Normalized() = %q", e.Normalized())
	}
	if e.Location().String() != "Europe/Berlin" {
		t.Errorf("Location() = %v", e.Location())
	}
	for _, tz := range []string{"", "UTC"} {
		e, err := Parse("@hourly", tz)
		if err != nil {
			t.Fatal(err)
		}
		if e.Location() != time.UTC {
			t.Errorf("tz %q: Location() = %v, want UTC", tz, e.Location())
		}
	}
}

func mustParse(t testing.TB, expr, tz string) *Expr {
	t.Helper()
	e, err := Parse(expr, tz)
	if err != nil {
		t.Fatalf("Parse(%q, %q): %v", expr, tz, err)
	}
	return e
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

func formatAll(ts []time.Time) string {
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = t.UTC().Format(time.RFC3339Nano)
	}
	return strings.Join(parts, " ")
}

// TestNextSecondsFirst guards the reason Normalize exists: cronexpr would
// read six fields as minutes…year and fire every 2 minutes.
func TestNextSecondsFirst(t *testing.T) {
	e := mustParse(t, "*/2 * * * * *", "")
	got := formatAll(e.NextN(utc("2026-05-20T03:00:00Z"), 4))
	want := "2026-05-20T03:00:02Z 2026-05-20T03:00:04Z 2026-05-20T03:00:06Z 2026-05-20T03:00:08Z"
	if got != want {
		t.Errorf("*/2 * * * * * = %s, want %s", got, want)
	}
}

func TestNextFiveFieldsOnMinutes(t *testing.T) {
	e := mustParse(t, "*/1 * * * *", "")
	got := formatAll(e.NextN(utc("2026-05-20T03:00:30.5Z"), 3))
	want := "2026-05-20T03:01:00Z 2026-05-20T03:02:00Z 2026-05-20T03:03:00Z"
	if got != want {
		t.Errorf("*/1 * * * * = %s, want %s", got, want)
	}
}

func TestNextTable(t *testing.T) {
	tests := []struct {
		name, expr, tz, after string
		want                  []string
	}{
		// Next is strictly after its argument, even on an exact match and
		// even a nanosecond before the next one.
		{"exact match is skipped", "0 0 * * * *", "", "2026-05-20T03:00:00Z", []string{"2026-05-20T04:00:00Z"}},
		{"nanosecond before", "0 0 * * * *", "", "2026-05-20T03:59:59.999999999Z", []string{"2026-05-20T04:00:00Z"}},
		{"sub-second after", "*/30 * * * * *", "", "2026-05-20T03:00:00.1Z", []string{"2026-05-20T03:00:30Z", "2026-05-20T03:01:00Z"}},
		{"every 5 min", "0 */5 * * * *", "", "2026-05-20T03:02:00Z", []string{"2026-05-20T03:05:00Z", "2026-05-20T03:10:00Z"}},
		// 2026-05-20 is a Wednesday.
		{"dow 7 is Sunday", "0 0 12 * * 7", "", "2026-05-20T00:00:00Z", []string{"2026-05-24T12:00:00Z", "2026-05-31T12:00:00Z"}},
		{"dow 0 is Sunday", "0 0 12 * * 0", "", "2026-05-20T00:00:00Z", []string{"2026-05-24T12:00:00Z"}},
		{"dow 5-7", "0 0 12 * * 5-7", "", "2026-05-20T00:00:00Z", []string{"2026-05-22T12:00:00Z", "2026-05-23T12:00:00Z", "2026-05-24T12:00:00Z", "2026-05-29T12:00:00Z"}},
		{"dow names", "0 0 9 * * Sun,Sat", "", "2026-05-20T00:00:00Z", []string{"2026-05-23T09:00:00Z", "2026-05-24T09:00:00Z", "2026-05-30T09:00:00Z"}},
		{"5-field weekdays", "30 8 * * Mon-Fri", "", "2026-05-22T09:00:00Z", []string{"2026-05-25T08:30:00Z"}},
		{"month name", "0 0 0 1 Jan *", "", "2026-05-20T00:00:00Z", []string{"2027-01-01T00:00:00Z"}},
		{"year field", "0 0 0 1 1 * 2028", "", "2026-05-20T00:00:00Z", []string{"2028-01-01T00:00:00Z"}},
		{"@weekly", "@weekly", "", "2026-05-20T00:00:00Z", []string{"2026-05-24T00:00:00Z"}},
		{"zone offset", "0 0 9 * * *", "Asia/Tokyo", "2026-05-20T00:00:00Z", []string{"2026-05-21T00:00:00Z"}},
		{"before 1970", "@yearly", "", "1900-06-01T00:00:00Z", []string{"1970-01-01T00:00:00Z"}},
		{"year runs out", "0 0 0 1 1 * 2026", "", "2026-05-20T00:00:00Z", nil},
		{"past 2099", "@hourly", "", "2099-12-31T23:30:00Z", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := mustParse(t, tt.expr, tt.tz)
			got := e.NextN(utc(tt.after), len(tt.want)+1)
			if len(got) > len(tt.want) {
				got = got[:len(tt.want)]
			}
			if formatAll(got) != strings.Join(tt.want, " ") {
				t.Errorf("%q in %q after %s:\n got %s\nwant %s", tt.expr, tt.tz, tt.after, formatAll(got), strings.Join(tt.want, " "))
			}
			if len(tt.want) == 0 && !e.Next(utc(tt.after)).IsZero() {
				t.Errorf("Next should be the zero Time when nothing matches")
			}
		})
	}
}

// TestNextDST pins the DST rules of behaviour.md §3: a wall time in the
// spring-forward gap fires at the transition (gap times collapse into one
// firing), a wall time in the fall-back overlap fires once, at its first
// occurrence. Expected instants are in UTC.
func TestNextDST(t *testing.T) {
	tests := []struct {
		name, tz, expr, after string
		want                  []string
	}{
		// New York, 2026-03-08: 02:00 EST (07:00Z) jumps to 03:00 EDT.
		{"NY spring hourly", "America/New_York", "0 0 * * * *", "2026-03-08T05:00:00Z",
			[]string{"2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z", "2026-03-08T09:00:00Z"}},
		{"NY spring daily 02:30", "America/New_York", "0 30 2 * * *", "2026-03-07T03:00:00Z",
			[]string{"2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"}},
		{"NY spring every 30 min", "America/New_York", "0 */30 * * * *", "2026-03-08T05:45:00Z",
			[]string{"2026-03-08T06:00:00Z", "2026-03-08T06:30:00Z", "2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z", "2026-03-08T08:00:00Z"}},
		{"NY spring from inside the jump", "America/New_York", "0 */30 * * * *", "2026-03-08T06:59:59.5Z",
			[]string{"2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z"}},
		// New York, 2026-11-01: 02:00 EDT (06:00Z) falls back to 01:00 EST.
		{"NY fall hourly", "America/New_York", "0 0 * * * *", "2026-11-01T04:00:00Z",
			[]string{"2026-11-01T05:00:00Z", "2026-11-01T07:00:00Z", "2026-11-01T08:00:00Z"}},
		{"NY fall daily 02:30", "America/New_York", "0 30 2 * * *", "2026-10-31T03:00:00Z",
			[]string{"2026-10-31T06:30:00Z", "2026-11-01T07:30:00Z", "2026-11-02T07:30:00Z"}},
		{"NY fall daily 01:30", "America/New_York", "0 30 1 * * *", "2026-10-31T03:00:00Z",
			[]string{"2026-10-31T05:30:00Z", "2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"}},
		{"NY fall every 30 min", "America/New_York", "0 */30 * * * *", "2026-11-01T04:45:00Z",
			[]string{"2026-11-01T05:00:00Z", "2026-11-01T05:30:00Z", "2026-11-01T07:00:00Z", "2026-11-01T07:30:00Z"}},
		{"NY fall from the second pass", "America/New_York", "0 */30 * * * *", "2026-11-01T06:10:00Z",
			[]string{"2026-11-01T07:00:00Z"}},
		{"NY fall every second from the second pass", "America/New_York", "* * * * * *", "2026-11-01T06:00:00Z",
			[]string{"2026-11-01T07:00:00Z", "2026-11-01T07:00:01Z"}},
		// Berlin, 2026-03-29: 02:00 CET (01:00Z) jumps to 03:00 CEST.
		{"Berlin spring hourly", "Europe/Berlin", "0 0 * * * *", "2026-03-28T23:00:00Z",
			[]string{"2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"}},
		{"Berlin spring daily 02:30", "Europe/Berlin", "0 30 2 * * *", "2026-03-28T00:00:00Z",
			[]string{"2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"}},
		{"Berlin spring every 30 min", "Europe/Berlin", "0 */30 * * * *", "2026-03-28T23:45:00Z",
			[]string{"2026-03-29T00:00:00Z", "2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z"}},
		// Berlin, 2026-10-25: 03:00 CEST (01:00Z) falls back to 02:00 CET.
		{"Berlin fall hourly", "Europe/Berlin", "0 0 * * * *", "2026-10-24T22:00:00Z",
			[]string{"2026-10-24T23:00:00Z", "2026-10-25T00:00:00Z", "2026-10-25T02:00:00Z"}},
		{"Berlin fall daily 02:30", "Europe/Berlin", "0 30 2 * * *", "2026-10-23T23:00:00Z",
			[]string{"2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"}},
		{"Berlin fall every 30 min", "Europe/Berlin", "0 */30 * * * *", "2026-10-24T23:45:00Z",
			[]string{"2026-10-25T00:00:00Z", "2026-10-25T00:30:00Z", "2026-10-25T02:00:00Z", "2026-10-25T02:30:00Z"}},
		// Lord Howe moves by 30 minutes: 02:00 → 02:30 on 2026-10-04
		// (2026-10-03T15:30Z), and 02:00 → 01:30 on 2026-04-05
		// (2026-04-04T15:00Z).
		{"Lord Howe spring half-hour gap", "Australia/Lord_Howe", "0 15 2 * * *", "2026-10-03T12:00:00Z",
			[]string{"2026-10-03T15:30:00Z", "2026-10-04T15:15:00Z"}},
		{"Lord Howe fall half-hour overlap", "Australia/Lord_Howe", "0 */15 1 * * *", "2026-04-04T13:00:00Z",
			[]string{"2026-04-04T14:00:00Z", "2026-04-04T14:15:00Z", "2026-04-04T14:30:00Z", "2026-04-04T14:45:00Z", "2026-04-05T14:30:00Z"}},
		// Day-of-month and day-of-week combine with AND (TestNextDayFieldsAND):
		// the AND decides the date, the rules above the instant on it.
		// The second Sunday of March 2026 is New York's spring-forward day:
		// 02:30 does not exist and fires at the jump (07:00Z).
		{"NY second Sunday 02:30", "America/New_York", "0 30 2 8-14 * SUN", "2026-02-15T00:00:00Z",
			[]string{"2026-03-08T07:00:00Z", "2026-04-12T06:30:00Z"}},
		// The first Sunday of November 2026 is the fall-back day: 01:30
		// fires once, at its first (EDT) occurrence.
		{"NY first Sunday 01:30", "America/New_York", "0 30 1 1-7 * SUN", "2026-10-15T00:00:00Z",
			[]string{"2026-11-01T05:30:00Z", "2026-12-06T06:30:00Z"}},
		// Berlin springs forward on the last Sunday of March.
		{"Berlin last Sunday of March 02:30", "Europe/Berlin", "0 30 2 25-31 3 SUN", "2026-01-01T00:00:00Z",
			[]string{"2026-03-29T01:00:00Z", "2027-03-28T01:00:00Z"}},
		{"Berlin first Monday 09:00", "Europe/Berlin", "0 0 9 1-7 * MON", "2026-03-01T00:00:00Z",
			[]string{"2026-03-02T08:00:00Z", "2026-04-06T07:00:00Z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := mustParse(t, tt.expr, tt.tz)
			got := formatAll(e.NextN(utc(tt.after), len(tt.want)))
			if got != strings.Join(tt.want, " ") {
				t.Errorf("%q in %s after %s:\n got %s\nwant %s", tt.expr, tt.tz, tt.after, got, strings.Join(tt.want, " "))
			}
		})
	}
}

// TestNextWholeDSTDay chains Next across both transition days of several
// zones and checks the sequence is strictly increasing (cronexpr alone
// repeats or goes backwards on the spring-forward day) and that every
// wall time fires at most once.
func TestNextWholeDSTDay(t *testing.T) {
	days := []struct {
		tz, day string
	}{
		{"America/New_York", "2026-03-08"},
		{"America/New_York", "2026-11-01"},
		{"Europe/Berlin", "2026-03-29"},
		{"Europe/Berlin", "2026-10-25"},
		{"Australia/Lord_Howe", "2026-10-04"},
		{"Australia/Lord_Howe", "2026-04-05"},
	}
	// Every-second schedules only walk the early hours that hold the
	// transition, so that the test stays fast under -race.
	exprs := []struct {
		expr string
		span time.Duration
	}{
		{"* * * * * *", 5 * time.Hour},
		{"*/7 * * * * *", 26 * time.Hour},
		{"0 */30 * * * *", 26 * time.Hour},
		{"0 0 * * * *", 26 * time.Hour},
		{"0 30 2 * * *", 26 * time.Hour},
		{"0 15,45 1-3 * * *", 26 * time.Hour},
	}
	for _, d := range days {
		for _, x := range exprs {
			expr := x.expr
			e := mustParse(t, expr, d.tz)
			loc := e.Location()
			day, _ := time.ParseInLocation("2006-01-02", d.day, loc)
			start := day.Add(-2 * time.Hour)
			end := day.Add(x.span)
			seen := map[string]bool{}
			prev := start
			for n := 0; ; n++ {
				next := e.Next(prev)
				if next.IsZero() || !next.Before(end) {
					break
				}
				if !next.After(prev) {
					t.Fatalf("%s %q: Next(%v) = %v does not advance", d.tz, expr, prev, next)
				}
				wall := next.In(loc).Format("2006-01-02 15:04:05")
				if seen[wall] {
					t.Fatalf("%s %q: wall time %s fired twice", d.tz, expr, wall)
				}
				seen[wall] = true
				prev = next
				if n > 200_000 {
					t.Fatalf("%s %q: too many firings", d.tz, expr)
				}
			}
		}
	}
}

// TestNextProperty drives random expressions through random instants and
// zones: Next is always strictly after its argument (or zero), and a result
// that is not a DST transition instant shows a wall time the expression
// matches.
func TestNextProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	zones := []string{"UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Australia/Sydney", "America/Santiago", "Asia/Kolkata", "Pacific/Apia", "America/St_Johns"}
	pick := func(opts ...string) string { return opts[r.IntN(len(opts))] }
	randomExpr := func() string {
		return strings.Join([]string{
			pick("*", "0", "*/7", "30", "0,15,45", "10-20"),
			pick("*", "0", "*/5", "30", "59", "0-29/10"),
			pick("*", "0", "1", "2", "3", "1-3", "*/6", "23"),
			pick("*", "*", "1", "15", "31", "L"),
			pick("*", "*", "*", "3", "Mar,Oct,Nov", "11"),
			pick("*", "*", "*", "0", "7", "Sun", "1-5", "5-7"),
		}, " ")
	}
	base := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	for range 3000 {
		expr, tz := randomExpr(), zones[r.IntN(len(zones))]
		e, err := Parse(expr, tz)
		if err != nil {
			// Only impossible dates (e.g. day 31 in November) may fail.
			if !strings.Contains(err.Error(), "never matches") {
				t.Fatalf("Parse(%q, %q): %v", expr, tz, err)
			}
			continue
		}
		after := base.Add(time.Duration(r.Int64N(int64(90 * 365 * 24 * time.Hour))))
		if r.IntN(2) == 0 {
			after = after.Truncate(time.Second)
		}
		for range 5 {
			next := e.Next(after)
			if next.IsZero() {
				break
			}
			if !next.After(after) {
				t.Fatalf("%q in %s: Next(%v) = %v, not strictly after", expr, tz, after, next)
			}
			if start, _ := next.ZoneBounds(); !start.Equal(next) {
				w := wallAsUTC(next.In(e.loc))
				if !e.wallNext(w.Add(-time.Nanosecond)).Equal(w) {
					t.Fatalf("%q in %s: Next(%v) = %v whose wall time %v does not match", expr, tz, after, next, w)
				}
			}
			after = next
		}
	}
}

// TestExprConcurrentUse runs under -race: cronexpr mutates its expression
// while searching, and Expr must serialise that.
func TestExprConcurrentUse(t *testing.T) {
	e := mustParse(t, "*/3 * * * * *", "Europe/Berlin")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			from := time.Date(2026, 3, 29, 0, 0, i, 0, time.UTC)
			for range 200 {
				from = e.Next(from)
			}
		})
	}
	wg.Wait()
}

func ExampleExpr_NextN() {
	e, err := Parse("0 30 2 * * *", "America/New_York")
	if err != nil {
		panic(err)
	}
	for _, t := range e.NextN(time.Date(2026, 3, 7, 0, 0, 0, 0, time.UTC), 3) {
		fmt.Println(t.Format(time.RFC3339))
	}
	// Output:
	// 2026-03-07T02:30:00-05:00
	// 2026-03-08T03:00:00-04:00
	// 2026-03-09T02:30:00-04:00
}
