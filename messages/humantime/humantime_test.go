package humantime

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"0s", 0},
		{"0ns", 0},
		{"1ns", time.Nanosecond},
		{"1us", time.Microsecond},
		{"1ms", time.Millisecond},
		{"30s", 30 * time.Second},
		{"1sec", time.Second},
		{"2secs", 2 * time.Second},
		{"1second", time.Second},
		{"3seconds", 3 * time.Second},
		{"5m", 5 * time.Minute},
		{"1min", time.Minute},
		{"2mins", 2 * time.Minute},
		{"1minute", time.Minute},
		{"10minutes", 10 * time.Minute},
		{"1h", time.Hour},
		{"1hr", time.Hour},
		{"2hrs", 2 * time.Hour},
		{"1hour", time.Hour},
		{"3hours", 3 * time.Hour},
		{"1d", 24 * time.Hour},
		{"1day", 24 * time.Hour},
		{"2days", 48 * time.Hour},
		{"1w", 7 * 24 * time.Hour},
		{"2w", 14 * 24 * time.Hour},
		{"1week", 7 * 24 * time.Hour},
		{"2weeks", 14 * 24 * time.Hour},
		// A month is 30.44 days and a year 365.25 days, as in humantime.
		{"1M", 2_630_016 * time.Second},
		{"1month", 2_630_016 * time.Second},
		{"2months", 2 * 2_630_016 * time.Second},
		{"1y", 31_557_600 * time.Second},
		{"1year", 31_557_600 * time.Second},
		{"2years", 2 * 31_557_600 * time.Second},
		{"1h 30m", 90 * time.Minute},
		{"1h30m", 90 * time.Minute},
		{"1h  30m", 90 * time.Minute},
		{" 5m ", 5 * time.Minute},
		{"5 min", 5 * time.Minute},
		{"1d 2h 3m 4s 5ms 6us 7ns", 26*time.Hour + 3*time.Minute + 4*time.Second + 5*time.Millisecond + 6*time.Microsecond + 7},
		// Terms add up and need not be in order or unique.
		{"1m 90s", 150 * time.Second},
		{"30s1m", 90 * time.Second},
		{"007s", 7 * time.Second},
		{"9223372036854775807ns", math.MaxInt64},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): unexpected error %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Parse(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{"", `empty duration (expected e.g. "30s", "5m", "1h 30m")`},
		{"   ", `empty duration (expected e.g. "30s", "5m", "1h 30m")`},
		{"5", `missing unit after "5" in "5" (e.g. "5s")`},
		{"1h 5", `missing unit after "5" in "1h 5" (e.g. "5s")`},
		{"5 30s", `missing unit after "5" in "5 30s" (e.g. "5s")`},
		{"5x", `unknown unit "x" in "5x"`},
		{"5S", `unknown unit "S" in "5S"`},
		{"5H", `unknown unit "H" in "5H"`},
		{"5µs", `unknown unit "µs" in "5µs"`},
		{"-5s", `negative duration "-5s" is not allowed`},
		{"+5s", `unexpected sign in "+5s": write plain <integer><unit> terms`},
		{"1.5h", `fractions are not allowed in "1.5h": use a smaller unit (e.g. "1m 30s" for 1.5m)`},
		{"s", `expected a number at "s" in "s"`},
		{"1h,30m", `expected a number at ",30m" in "1h,30m"`},
		{"5!", `unexpected "!" in "5!"`},
		{"300y", `duration "300y" is too large`},
		{"9223372036854775808ns", `duration "9223372036854775808ns" is too large`},
		{"99999999999999999999999s", `duration "99999999999999999999999s" is too large`},
		{"292y 1y", `duration "292y 1y" is too large`},
	}
	for _, tt := range tests {
		_, err := Parse(tt.in)
		if err == nil {
			t.Errorf("Parse(%q): expected error %q, got none", tt.in, tt.wantErr)
			continue
		}
		if err.Error() != tt.wantErr {
			t.Errorf("Parse(%q) error = %q, want %q", tt.in, err.Error(), tt.wantErr)
		}
		if !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q) error does not match ErrSyntax", tt.in)
		}
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "0s"},
		{time.Nanosecond, "1ns"},
		{1500 * time.Microsecond, "1ms 500us"},
		{30 * time.Second, "30s"},
		{90 * time.Second, "1m 30s"},
		{90 * time.Minute, "1h 30m"},
		{24 * time.Hour, "1d"},
		{26 * time.Hour, "1d 2h"},
		{7 * 24 * time.Hour, "1w"},
		{15 * 24 * time.Hour, "2w 1d"},
		{time.Hour + time.Nanosecond, "1h 1ns"},
		{-90 * time.Second, "-1m 30s"},
		{math.MaxInt64, "15250w 1d 23h 47m 16s 854ms 775us 807ns"},
		{math.MinInt64, "-15250w 1d 23h 47m 16s 854ms 775us 808ns"},
	}
	for _, tt := range tests {
		if got := Format(tt.in); got != tt.want {
			t.Errorf("Format(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestFormatParseRoundTrip is the property the wire relies on: whatever the
// backend writes, it (and every other reader) reads back unchanged.
func TestFormatParseRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	check := func(d time.Duration) {
		t.Helper()
		s := Format(d)
		got, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(Format(%d) = %q): %v", int64(d), s, err)
		}
		if got != d {
			t.Fatalf("Parse(Format(%d) = %q) = %d", int64(d), s, int64(got))
		}
	}
	for _, d := range []time.Duration{0, 1, time.Second, Day, Week, Month, Year, math.MaxInt64} {
		check(d)
	}
	for range 20000 {
		// Mix magnitudes so that both short and multi-unit values occur.
		switch r.IntN(3) {
		case 0:
			check(time.Duration(r.Int64N(int64(time.Hour))))
		case 1:
			check(time.Duration(r.Int64N(int64(10 * Year))).Truncate(time.Second))
		default:
			check(time.Duration(r.Int64()))
		}
	}
}

// TestFormatNegativeRejected documents that a negative value is printed for
// humans but is not a valid wire duration.
func TestFormatNegativeRejected(t *testing.T) {
	s := Format(-time.Second)
	if !strings.HasPrefix(s, "-") {
		t.Fatalf("Format(-1s) = %q, want a leading '-'", s)
	}
	if _, err := Parse(s); err == nil {
		t.Fatalf("Parse(%q) accepted a negative duration", s)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"0s", "1h 30m", "1h30m", "5x", "-1s", "1.5h", "2w", "1M", "1y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := Parse(s)
		if err != nil {
			return
		}
		if d < 0 {
			t.Fatalf("Parse(%q) = %v: negative", s, d)
		}
		back, err := Parse(Format(d))
		if err != nil || back != d {
			t.Fatalf("round trip of %q: %v, %v", s, back, err)
		}
	})
}
