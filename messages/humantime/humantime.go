// Package humantime parses and formats the human-readable durations used
// everywhere on the kanade wire ("30s", "5m", "1h 30m", "1d", "2w").
//
// Go's time.ParseDuration does not know days, weeks, months or years and
// accepts fractions and signs that the upstream (Rust humantime) grammar does
// not, so the backend uses this one parser for manifests, schedules, config
// scopes and HTTP bodies alike: a value accepted in one place is accepted in
// every other place.
package humantime

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Day and the longer units are fixed lengths of time, not calendar
// arithmetic: humantime defines a month as 30.44 days and a year as 365.25
// days, and a duration must mean the same thing whatever the date.
const (
	Day   = 24 * time.Hour
	Week  = 7 * Day
	Month = 2_630_016 * time.Second  // 30.44 days
	Year  = 31_557_600 * time.Second // 365.25 days
)

// ErrSyntax is wrapped by every error Parse returns, so callers can tell a
// rejected duration from other failures with errors.Is.
var ErrSyntax = errors.New("invalid duration")

// units maps every accepted unit spelling to its length. Matching is
// case-sensitive because "m" (minute) and "M" (month) differ.
var units = map[string]time.Duration{
	"ns": time.Nanosecond,
	"us": time.Microsecond,
	"ms": time.Millisecond,

	"s": time.Second, "sec": time.Second, "secs": time.Second,
	"second": time.Second, "seconds": time.Second,

	"m": time.Minute, "min": time.Minute, "mins": time.Minute,
	"minute": time.Minute, "minutes": time.Minute,

	"h": time.Hour, "hr": time.Hour, "hrs": time.Hour,
	"hour": time.Hour, "hours": time.Hour,

	"d": Day, "day": Day, "days": Day,
	"w": Week, "week": Week, "weeks": Week,
	"M": Month, "month": Month, "months": Month,
	"y": Year, "year": Year, "years": Year,
}

// syntaxError builds an error that reads well after a field prefix such as
// "invalid timeout: " and still matches ErrSyntax.
type syntaxError struct{ msg string }

func (e *syntaxError) Error() string { return e.msg }
func (e *syntaxError) Unwrap() error { return ErrSyntax }

func errorf(format string, args ...any) error {
	return &syntaxError{msg: fmt.Sprintf(format, args...)}
}

// Parse reads a duration written as a sequence of <integer><unit> terms,
// optionally separated by spaces ("1h 30m", "1h30m", "0s"). Terms add up, so
// "1m 90s" is 2m30s. Empty input, signs, fractions, a number without a unit,
// an unknown unit and a total beyond time.Duration's range are rejected.
func Parse(s string) (time.Duration, error) {
	if strings.TrimSpace(s) == "" {
		return 0, errorf("empty duration (expected e.g. \"30s\", \"5m\", \"1h 30m\")")
	}
	var total time.Duration
	i := 0
	for {
		for i < len(s) && s[i] == ' ' {
			i++
		}
		if i == len(s) {
			return total, nil
		}
		// Number.
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == start {
			switch s[i] {
			case '-':
				return 0, errorf("negative duration %q is not allowed", s)
			case '+':
				return 0, errorf("unexpected sign in %q: write plain <integer><unit> terms", s)
			default:
				return 0, errorf("expected a number at %q in %q", rest(s[i:]), s)
			}
		}
		numEnd := i
		var n uint64
		for _, c := range s[start:numEnd] {
			d := uint64(c - '0')
			if n > (math.MaxUint64-d)/10 {
				return 0, errorf("duration %q is too large", s)
			}
			n = n*10 + d
		}
		// Upstream humantime accepts blanks between a number and its unit
		// ("5 min"), so the same input must not be rejected here.
		for i < len(s) && s[i] == ' ' {
			i++
		}
		// Unit: every letter up to the next digit, space or end.
		ustart := i
		for i < len(s) && isUnitChar(s[i]) {
			i++
		}
		unit := s[ustart:i]
		if unit == "" {
			if i < len(s) && s[i] == '.' {
				return 0, errorf("fractions are not allowed in %q: use a smaller unit (e.g. \"1m 30s\" for 1.5m)", s)
			}
			if i < len(s) && (s[i] < '0' || s[i] > '9') {
				return 0, errorf("unexpected %q in %q", s[i:i+1], s)
			}
			return 0, errorf("missing unit after %q in %q (e.g. %q)", s[start:numEnd], s, s[start:numEnd]+"s")
		}
		size, ok := units[unit]
		if !ok {
			return 0, errorf("unknown unit %q in %q", unit, s)
		}
		if n > uint64(math.MaxInt64/int64(size)) {
			return 0, errorf("duration %q is too large", s)
		}
		term := time.Duration(n) * size
		if total > math.MaxInt64-term {
			return 0, errorf("duration %q is too large", s)
		}
		total += term
	}
}

// isUnitChar accepts letters: a unit ends at the next digit (the start of
// the next term), a space or punctuation, so that "5x!" reports the unit "x"
// rather than swallowing the punctuation. Bytes of multi-byte characters
// count as letters so that "5µs" reports the unknown unit "µs" whole.
func isUnitChar(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80
}

// rest shortens the unparsed tail quoted in an error so that a long garbage
// input does not produce a huge message.
func rest(s string) string {
	if len(s) > 16 {
		return s[:16] + "..."
	}
	return s
}

// formatUnits lists the units Format emits, largest first. Months and years
// are left out on purpose: they are not whole numbers of days, so "1M" would
// print as a less readable mix anyway, and weeks are exact.
var formatUnits = []struct {
	name string
	size time.Duration
}{
	{"w", Week},
	{"d", Day},
	{"h", time.Hour},
	{"m", time.Minute},
	{"s", time.Second},
	{"ms", time.Millisecond},
	{"us", time.Microsecond},
	{"ns", time.Nanosecond},
}

// Format writes d in the same grammar Parse reads, largest units first and
// separated by spaces ("0s", "30s", "1h 30m", "1d 2h", "1w"), so that
// Parse(Format(d)) == d for every d >= 0. A negative d gets a leading "-"
// so that it stays visible in logs; Parse rejects that form by design.
func Format(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	var b strings.Builder
	// Work on the magnitude as uint64 so that math.MinInt64 has a positive
	// counterpart.
	v := uint64(d)
	if d < 0 {
		b.WriteByte('-')
		v = -v
	}
	for _, u := range formatUnits {
		size := uint64(u.size)
		if v < size {
			continue
		}
		if b.Len() > 0 && b.String() != "-" {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%d%s", v/size, u.name)
		v %= size
	}
	return b.String()
}
