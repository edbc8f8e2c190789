// Package cron parses the schedule expressions of the kanade wire and finds
// their fire times in a schedule's time zone.
//
// The syntax is upstream's: six fields with seconds first
// (sec min hour day-of-month month day-of-week), an optional seventh field
// for the year, 5-field POSIX expressions (seconds = 0) and the @-macros.
// Matching is delegated to github.com/gorhill/cronexpr, which reads six
// fields as minutes…year and misbehaves across DST transitions, so this
// package normalises every expression to cronexpr's 7-field form and lets it
// search on wall-clock time expressed in UTC (where no transition exists),
// then maps the wall time back to an instant with explicit rules for the
// spring-forward gap and the fall-back overlap.
//
// Day-of-month and day-of-week combine with AND when both are restricted,
// as upstream's parser (croner, "dom and dow") reads them: "0 0 9 1-7 *
// MON" is the first Monday of each month. cronexpr combines them with OR
// (Vixie cron), so such expressions are searched here as the intersection
// of two cronexpr matchers, one per day field (see Expr.wallNext).
package cron

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	// Embedded so that schedule zones resolve on hosts without
	// /usr/share/zoneinfo (minimal containers, Windows).
	_ "time/tzdata"

	"github.com/gorhill/cronexpr"
)

// Sentinel errors, wrapped by every error of Parse, Normalize and
// LoadLocation so that callers can tell a bad expression from a bad zone.
var (
	ErrSyntax      = errors.New("invalid cron expression")
	ErrUnknownZone = errors.New("unknown time zone")
)

// ErrNoFutureFire is wrapped by CheckFuture's error: the expression is
// valid but all its instants are past.
var ErrNoFutureFire = errors.New("cron expression never fires again")

// exprError keeps the user-facing text exact while still matching a
// sentinel (and the underlying cronexpr error, if any) with errors.Is.
type exprError struct {
	msg  string
	errs []error
}

func (e *exprError) Error() string   { return e.msg }
func (e *exprError) Unwrap() []error { return e.errs }

func syntaxErrorf(expr, format string, args ...any) error {
	return &exprError{
		msg:  fmt.Sprintf("cron %q: ", expr) + fmt.Sprintf(format, args...),
		errs: []error{ErrSyntax},
	}
}

// macros maps each accepted @-macro to its 7-field cronexpr form. They are
// expanded here rather than by cronexpr because cronexpr does not know
// @midnight and replaces macros anywhere in the text.
var macros = map[string]string{
	"@yearly":   "0 0 0 1 1 * *",
	"@annually": "0 0 0 1 1 * *",
	"@monthly":  "0 0 0 1 * * *",
	"@weekly":   "0 0 0 * * 0 *",
	"@daily":    "0 0 0 * * * *",
	"@midnight": "0 0 0 * * * *",
	"@hourly":   "0 0 * * * * *",
}

// fieldNames names the fields of the normalised 7-field form, in the words
// cronexpr uses in its own errors.
var fieldNames = [7]string{"second", "minute", "hour", "day-of-month", "month", "day-of-week", "year"}

const (
	fieldDOM   = 3
	fieldMonth = 4
	fieldDOW   = 5
)

var monthNames = map[string]int{
	"jan": 1, "january": 1, "feb": 2, "february": 2, "mar": 3, "march": 3,
	"apr": 4, "april": 4, "may": 5, "jun": 6, "june": 6, "jul": 7, "july": 7,
	"aug": 8, "august": 8, "sep": 9, "september": 9, "oct": 10, "october": 10,
	"nov": 11, "november": 11, "dec": 12, "december": 12,
}

var dowNames = map[string]int{
	"sun": 0, "sunday": 0, "mon": 1, "monday": 1, "tue": 2, "tuesday": 2,
	"wed": 3, "wednesday": 3, "thu": 4, "thursday": 4, "fri": 5, "friday": 5,
	"sat": 6, "saturday": 6,
}

// Normalize rewrites expr into the 7-field, seconds-first form that
// cronexpr parses: 5 fields get "0" seconds and a "*" year, 6 fields get a
// "*" year, macros are expanded. Day-of-week ranges ending at 7 (POSIX
// Sunday) are expanded into lists because cronexpr maps a lone 7 to Sunday
// but turns a range such as "5-7" into an empty set. Backwards ranges are
// rejected here because cronexpr would silently accept them and then match
// nothing (or panic on an empty seconds, minutes or hours list).
func Normalize(expr string) (string, error) {
	fields := strings.Fields(expr)
	if len(fields) == 0 {
		return "", syntaxErrorf(expr, "empty expression (expected e.g. \"0 0 * * * *\" or \"@hourly\")")
	}
	if strings.HasPrefix(fields[0], "@") {
		m, ok := macros[strings.ToLower(fields[0])]
		if !ok {
			return "", syntaxErrorf(expr, "unknown macro %q (known: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)", fields[0])
		}
		if len(fields) != 1 {
			return "", syntaxErrorf(expr, "macro %s must stand alone", fields[0])
		}
		return m, nil
	}
	switch len(fields) {
	case 5:
		fields = append(append([]string{"0"}, fields...), "*")
	case 6:
		fields = append(fields, "*")
	case 7:
	default:
		return "", syntaxErrorf(expr, "expected 5, 6 or 7 fields, got %d (seconds-first: sec min hour day-of-month month day-of-week [year])", len(fields))
	}
	for i, f := range fields {
		out, err := normalizeField(expr, i, f)
		if err != nil {
			return "", err
		}
		fields[i] = out
	}
	return strings.Join(fields, " "), nil
}

// normalizeField checks the ranges of one field and, for day-of-week,
// expands ranges that end at 7.
func normalizeField(expr string, idx int, field string) (string, error) {
	entries := strings.Split(field, ",")
	for j, entry := range entries {
		base, stepText, hasStep := strings.Cut(entry, "/")
		lo, hi, isRange := strings.Cut(base, "-")
		if !isRange {
			continue
		}
		a, okA := fieldValue(idx, lo)
		b, okB := fieldValue(idx, hi)
		if !okA || !okB {
			// Not something this function understands: cronexpr reports it.
			continue
		}
		if a > b {
			return "", syntaxErrorf(expr, "backwards range %q in %s field (ranges do not wrap around; use a list such as \"%s,%s\")", entry, fieldNames[idx], lo, hi)
		}
		if idx != fieldDOW || b != 7 {
			continue
		}
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepText)
			if err != nil || n < 1 {
				return "", syntaxErrorf(expr, "invalid step %q in day-of-week field", entry)
			}
			step = n
		}
		var days []int
		for v := a; v <= b; v += step {
			days = append(days, v%7)
		}
		slices.Sort(days)
		days = slices.Compact(days)
		parts := make([]string, len(days))
		for k, d := range days {
			parts[k] = strconv.Itoa(d)
		}
		entries[j] = strings.Join(parts, ",")
	}
	return strings.Join(entries, ","), nil
}

// fieldValue reads one bound of a range: a number, or a month or weekday
// name in the fields that allow names. A day-of-week 7 stays 7 here so that
// "7-2" is still recognised as backwards.
func fieldValue(idx int, s string) (int, bool) {
	if s != "" && strings.Trim(s, "0123456789") == "" {
		n, err := strconv.Atoi(s)
		return n, err == nil
	}
	switch idx {
	case fieldMonth:
		n, ok := monthNames[strings.ToLower(s)]
		return n, ok
	case fieldDOW:
		n, ok := dowNames[strings.ToLower(s)]
		return n, ok
	}
	return 0, false
}

// LoadLocation resolves a schedule's tz: "" and "UTC" mean UTC, anything
// else must be an IANA zone name. "Local" is refused because a schedule
// stored in KV must fire at the same instants on every host.
func LoadLocation(tz string) (*time.Location, error) {
	if tz == "" || tz == "UTC" {
		return time.UTC, nil
	}
	if tz == "Local" {
		return nil, &exprError{msg: fmt.Sprintf("unknown time zone %q (use an IANA name such as \"Europe/Berlin\")", tz), errs: []error{ErrUnknownZone}}
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, &exprError{msg: fmt.Sprintf("unknown time zone %q", tz), errs: []error{ErrUnknownZone, err}}
	}
	return loc, nil
}

// Expr is a parsed expression bound to its time zone.
//
// cronexpr keeps scratch state inside its expression while searching, so
// the matcher must never be shared unguarded; Expr serialises access with a
// mutex. One Expr per owner (a schedule actor, a preview request) is still
// the intended use, so that owners never wait on each other.
type Expr struct {
	mu         sync.Mutex
	text       string
	normalized string
	loc        *time.Location
	cx         *cronexpr.Expression
	// byDOM and byDOW are set when both day fields are restricted: the
	// expression with day-of-week (resp. day-of-month) widened to "*", so
	// that each finds the instants whose day satisfies one field, and a
	// day that both find satisfies the AND that cx would read as OR.
	byDOM, byDOW *cronexpr.Expression
}

// wallFloor is the latest wall time before cronexpr's first supported year
// (1970): searching from it finds the first match of an expression.
var wallFloor = time.Date(1969, 12, 31, 23, 59, 59, 999_999_999, time.UTC)

// Parse parses expr for the zone tz ("" = UTC). Errors name the expression
// and what is wrong with it, e.g. `cron "x": expected 5, 6 or 7 fields, got 1`.
// An expression that can never match (such as February 30th, or day fields
// that never meet under the AND rule, such as "0 0 0 1-7 * MON#2") is
// rejected so that a schedule does not silently never fire. Proving that
// takes a search up to 2099; its worst case (two dense day sets that never
// meet) costs some 20 ms, a common expression microseconds.
func Parse(expr, tz string) (*Expr, error) {
	loc, err := LoadLocation(tz)
	if err != nil {
		return nil, err
	}
	norm, err := Normalize(expr)
	if err != nil {
		return nil, err
	}
	cx, err := cronexpr.Parse(norm)
	if err != nil {
		return nil, &exprError{msg: fmt.Sprintf("cron %q: %v", expr, err), errs: []error{ErrSyntax, err}}
	}
	e := &Expr{text: expr, normalized: norm, loc: loc, cx: cx}
	fields := strings.Fields(norm)
	if restricted(fields[fieldDOM]) && restricted(fields[fieldDOW]) {
		// Both derived forms differ from norm only by a "*", so they parse.
		e.byDOM = cronexpr.MustParse(withField(fields, fieldDOW, "*"))
		e.byDOW = cronexpr.MustParse(withField(fields, fieldDOM, "*"))
	}
	if e.wallNext(wallFloor).IsZero() {
		if e.byDOM != nil {
			return nil, syntaxErrorf(expr, "never matches any date between 1970 and 2099 (day-of-month and day-of-week must both match)")
		}
		return nil, syntaxErrorf(expr, "never matches any date between 1970 and 2099")
	}
	return e, nil
}

// restricted reports whether a day field limits the days: anything but a
// lone "*" or "?". A list such as
// "*,1" counts as restricted here although cronexpr widens it to every
// day; the AND with every day is then the other field alone, which is
// what the intersection search finds anyway.
func restricted(field string) bool { return field != "*" && field != "?" }

// withField returns the 7-field form with field idx replaced.
func withField(fields []string, idx int, v string) string {
	out := slices.Clone(fields)
	out[idx] = v
	return strings.Join(out, " ")
}

// CheckFuture returns an error when the expression has no fire time after
// now: it parses, but every instant it names is past (a year field such as
// 1970). A schedule written with it would be accepted and never fire, so
// the API refuses it at create time.
func (e *Expr) CheckFuture(now time.Time) error {
	if !e.Next(now).IsZero() {
		return nil
	}
	return &exprError{
		msg:  fmt.Sprintf("cron %q: no fire time after %s (every instant it matches is in the past)", e.text, now.UTC().Format(time.RFC3339)),
		errs: []error{ErrNoFutureFire},
	}
}

// String returns the expression exactly as it was given to Parse.
func (e *Expr) String() string { return e.text }

// Normalized returns the 7-field form handed to cronexpr (useful in status
// output when a user wonders how a 5- or 6-field expression was read).
func (e *Expr) Normalized() string { return e.normalized }

// Location returns the zone the expression is evaluated in.
func (e *Expr) Location() *time.Location { return e.loc }

// maxSteps bounds the search in next. Each step moves to a later wall time,
// and only wall times whose first occurrence is already past are skipped, so
// a handful of steps suffices in practice; the bound only guarantees that a
// matcher bug can never hang a schedule.
const maxSteps = 10_000

// Next returns the first fire time strictly after after, in the
// expression's zone, or the zero Time when there is none (past year 2099 or
// a year field that has run out).
//
// DST rules: a wall time that does not exist (spring-forward gap) fires at
// the transition instant, so several gap times collapse into one firing; a
// wall time that occurs twice (fall-back overlap) fires once, at its first
// occurrence.
func (e *Expr) Next(after time.Time) time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.next(after)
}

// NextN returns up to n successive fire times after after; fewer when the
// expression runs out of matches.
func (e *Expr) NextN(after time.Time, n int) []time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []time.Time
	for range max(n, 0) {
		t := e.next(after)
		if t.IsZero() {
			break
		}
		out = append(out, t)
		after = t
	}
	return out
}

func (e *Expr) next(after time.Time) time.Time {
	local := after.In(e.loc)
	w := wallAsUTC(local)
	// Inside the second pass of a fall-back overlap every wall time up to
	// the end of the overlap has already occurred once (before after), so
	// none of them may fire again: jump past them instead of skipping them
	// one by one (an every-second schedule would otherwise need thousands
	// of steps).
	if end, ok := repeatedWallEnd(local); ok {
		w = end.Add(-time.Nanosecond)
	}
	if w.Before(wallFloor) {
		w = wallFloor
	}
	for range maxSteps {
		c := e.wallNext(w)
		if c.IsZero() {
			return time.Time{}
		}
		if t := instantOf(c, e.loc); t.After(after) {
			return t
		}
		w = c
	}
	return time.Time{}
}

// maxDaySteps bounds the intersection search of wallNext. Each step moves
// one of the two matchers to a later date than it held, and the steps
// alternate between them, so a search from 1970 that finds nothing before
// cronexpr's last year (2099) takes at most about twice the 47 482 days of
// that range: the bound never cuts a search short, it only guarantees that
// a matcher bug cannot spin forever.
const maxDaySteps = 2*47_482 + 16

// wallNext is cronexpr's Next on wall time (carried as UTC) with the day
// fields combined by AND: the first wall time strictly after w that
// matches, or the zero Time when none exists up to 2099.
//
// When both day fields are restricted, the two matchers leapfrog: the one
// behind is searched again from the start of the other's date, until both
// land on the same date. Their time-of-day fields are the same, so on a
// common date both return the same wall time, which satisfies both days.
func (e *Expr) wallNext(w time.Time) time.Time {
	if e.byDOM == nil {
		return e.cx.Next(w)
	}
	a, b := e.byDOM.Next(w), e.byDOW.Next(w)
	for range maxDaySteps {
		if a.IsZero() || b.IsZero() {
			return time.Time{}
		}
		da, db := startOfDay(a), startOfDay(b)
		switch {
		case da.Equal(db):
			if b.Before(a) {
				return b
			}
			return a
		case da.Before(db):
			a = e.byDOM.Next(db.Add(-time.Nanosecond))
		default:
			b = e.byDOW.Next(da.Add(-time.Nanosecond))
		}
	}
	return time.Time{}
}

// startOfDay truncates a wall time (carried as UTC) to its midnight.
func startOfDay(w time.Time) time.Time {
	y, m, d := w.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// wallAsUTC carries the wall-clock reading of t as a UTC time, the form in
// which cronexpr can search without meeting a DST transition.
func wallAsUTC(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
}

// repeatedWallEnd reports whether local lies in the second occurrence of a
// fall-back overlap and, if so, the wall time (as UTC) at which the overlap
// ends.
func repeatedWallEnd(local time.Time) (time.Time, bool) {
	start, _ := local.ZoneBounds()
	if start.IsZero() {
		return time.Time{}, false
	}
	_, cur := local.Zone()
	_, prev := start.Add(-time.Nanosecond).Zone()
	if prev <= cur {
		return time.Time{}, false
	}
	if !local.Before(start.Add(time.Duration(prev-cur) * time.Second)) {
		return time.Time{}, false
	}
	return time.Unix(start.Unix()+int64(prev), 0).UTC(), true
}

// instantOf maps a wall time (carried as UTC) to the instant it denotes in
// loc: the earliest instant showing that wall time, or, when the wall time
// falls in a spring-forward gap, the transition instant right after the
// jump. Offsets are probed a day either side, which assumes that a zone
// does not change its offset twice within a day (true of every zone in
// tzdata since the 1940s).
func instantOf(wall time.Time, loc *time.Location) time.Time {
	u := wall.Unix()
	ns := int64(wall.Nanosecond())
	var first, latest time.Time
	for _, probe := range [3]int64{u - 86_400, u, u + 86_400} {
		_, off := time.Unix(probe, 0).In(loc).Zone()
		cand := time.Unix(u-int64(off), ns).In(loc)
		if latest.IsZero() || cand.After(latest) {
			latest = cand
		}
		if _, got := cand.Zone(); got == off && (first.IsZero() || cand.Before(first)) {
			first = cand
		}
	}
	if !first.IsZero() {
		return first
	}
	// No offset produces this wall time: it lies in a gap. The latest
	// candidate (computed with the offset from before the jump) lands just
	// after the transition, so the start of its zone period is the jump.
	if start, _ := latest.ZoneBounds(); !start.IsZero() {
		return start
	}
	return latest
}
