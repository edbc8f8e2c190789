package storage

import (
	"database/sql/driver"
	"fmt"
	"time"
)

// TimeLayout is the one text form every time column is stored in: UTC with a
// fixed nine-digit fraction. Fixed width makes lexical order equal time order,
// so range filters and ORDER BY work on the text itself. Upstream mixed
// SQLite's CURRENT_TIMESTAMP text with RFC 3339 and broke range filters
// (behaviour.md §5, defect 6); nothing in this schema uses database-side
// time defaults.
const TimeLayout = "2006-01-02T15:04:05.000000000Z"

// Time is a time column. The zero Time is stored as NULL so that a forgotten
// timestamp trips a NOT NULL constraint instead of writing year 0001.
type Time struct{ time.Time }

// T wraps t for storage.
func T(t time.Time) Time { return Time{t} }

// FormatTime renders t in the canonical column form; use it for raw SQL
// arguments so parameters compare correctly with stored values.
func FormatTime(t time.Time) string { return t.UTC().Format(TimeLayout) }

// Value implements driver.Valuer.
func (t Time) Value() (driver.Value, error) {
	if t.IsZero() {
		return nil, nil
	}
	return FormatTime(t.Time), nil
}

// Scan implements sql.Scanner. Besides the canonical form it accepts any
// RFC 3339 text and time.Time, so rows written by hand still read back.
func (t *Time) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		t.Time = time.Time{}
		return nil
	case time.Time:
		t.Time = v.UTC()
		return nil
	case string:
		return t.parse(v)
	case []byte:
		return t.parse(string(v))
	default:
		return fmt.Errorf("storage.Time: cannot scan %T", src)
	}
}

func (t *Time) parse(s string) error {
	p, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("storage.Time: %w", err)
	}
	t.Time = p.UTC()
	return nil
}

// MarshalJSON emits RFC 3339 with nanoseconds in UTC, the wire form, and
// null for the zero time.
func (t Time) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return []byte(`"` + t.UTC().Format(time.RFC3339Nano) + `"`), nil
}

// UnmarshalJSON accepts RFC 3339 text or null.
func (t *Time) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		t.Time = time.Time{}
		return nil
	}
	if len(b) < 2 || b[0] != '"' {
		return fmt.Errorf("storage.Time: expected a string, got %s", b)
	}
	return t.parse(string(b[1 : len(b)-1]))
}
