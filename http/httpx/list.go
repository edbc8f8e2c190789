package httpx

import (
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"kanade-backend/messages"
)

// TotalCap bounds the count behind X-Total-Count. Counting every row that
// matches a broad filter costs time proportional to the matches (≈ 50 ms per
// million rows even on a covering index, far beyond the 20 ms page budget of
// architecture.md §6), while a count that stops after TotalCap+1 rows costs
// at most a few milliseconds. Nobody pages 10 000 rows deep with offsets; a
// dashboard shows "10000+" and narrows the filter.
const TotalCap = 10_000

// HeaderTotalCapped is set to "true" when X-Total-Count stopped at the cap:
// there are at least that many rows, possibly more.
const HeaderTotalCapped = "X-Total-Count-Capped"

// Total is the X-Total-Count of one page.
type Total struct {
	N int
	// Capped means N is a lower bound.
	Capped bool
}

// PageTotal works out the total of a list whose page p returned got rows.
// A page that is not full ends the list, so the total follows from it
// without a count; otherwise count is asked (it returns a count capped at
// TotalCap). A capped count never reports less than the rows the client has
// already been shown.
func PageTotal(p Page, got int, count func() (n int, capped bool, err error)) (Total, error) {
	if got > 0 && got < p.Limit || got == 0 && p.Offset == 0 {
		return Total{N: p.Offset + got}, nil
	}
	n, capped, err := count()
	if err != nil {
		return Total{}, err
	}
	if capped {
		n = max(n, p.Offset+got)
	}
	return Total{N: n, Capped: capped}, nil
}

// WritePage writes one page of a list with X-Total-Count, and
// X-Total-Count-Capped when the count is a lower bound. A nil slice is
// written as [].
func WritePage[T any](w http.ResponseWriter, items []T, t Total) {
	if t.Capped {
		w.Header().Set(HeaderTotalCapped, "true")
	}
	WriteList(w, items, t.N)
}

// QueryTime reads an RFC 3339 timestamp from the query parameter name (any
// offset; callers compare it in UTC). An absent or empty parameter returns
// ok=false. A '+' offset that arrived unescaped reads as a space in a query
// string; it is put back, since "2026-01-02T03:04:05 09:00" has no other
// meaning.
func QueryTime(r *http.Request, name string) (t time.Time, ok bool, err error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return time.Time{}, false, nil
	}
	t, perr := time.Parse(time.RFC3339Nano, s)
	if perr != nil && strings.Contains(s, " ") {
		t, perr = time.Parse(time.RFC3339Nano, strings.ReplaceAll(s, " ", "+"))
	}
	if perr != nil {
		return time.Time{}, false, messages.Invalidf("invalid %s %q: must be an RFC 3339 time such as 2026-01-02T15:04:05Z or 2026-01-02T15:04:05+09:00", name, trimForError(s))
	}
	return t.UTC(), true, nil
}

// QueryToken reads an id filter (pc_id, job_id, exec_id, ...) from the query
// parameter name; "" when absent or empty. Ids follow the subject-token
// rules, so a value outside them cannot match anything and is reported as
// the client's mistake (400) rather than answered with an empty list.
func QueryToken(r *http.Request, name string) (string, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return "", nil
	}
	if err := messages.ValidateToken(name, s); err != nil {
		return "", err
	}
	return s, nil
}

// QueryText reads a free-text exact-match filter. It is bounded so that a
// huge parameter is refused instead of compared, and limited to printable
// UTF-8: no stored value contains control characters, and a NUL would end
// the SQL text early in SQLite's C parser (found by the robustness test).
func QueryText(r *http.Request, name string) (string, error) {
	s := r.URL.Query().Get(name)
	if len(s) > messages.MaxTokenLen {
		return "", messages.Invalidf("invalid %s %q: longer than %d bytes", name, trimForError(s), messages.MaxTokenLen)
	}
	if !utf8.ValidString(s) || strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return "", messages.Invalidf("invalid %s %q: must be printable UTF-8 text", name, trimForError(s))
	}
	return s, nil
}

// trimForError keeps error texts short when a client sends a huge value.
func trimForError(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max], "") + "..."
}

// ParseOptionalPage reads limit and offset for lists that are small by
// nature (one row per PC or per job) and that upstream clients read whole:
// without either parameter the whole list is returned (paged=false); with
// one of them, ParsePage's rules apply.
func ParseOptionalPage(r *http.Request) (p Page, paged bool, err error) {
	q := r.URL.Query()
	if q.Get("limit") == "" && q.Get("offset") == "" {
		return Page{}, false, nil
	}
	p, err = ParsePage(r)
	return p, err == nil, err
}
