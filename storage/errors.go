package storage

import (
	"errors"
	"strings"

	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// ErrUnavailable matches (errors.Is) every database failure caused by the
// database's environment rather than by the statement or its data: a full
// disk, a read-only file or mount, an I/O error, a lock held by another
// process, memory. Such a failure says nothing about the request or the
// message being written, so callers must neither blame the input (no 4xx,
// no poison message) nor give up: they answer 503 or retry later.
var ErrUnavailable = errors.New("storage unavailable")

// Causes of ErrUnavailable, as Cause reports them; they are also metric
// label values.
const (
	CauseDiskFull    = "disk_full"
	CauseReadOnly    = "read_only"
	CauseIO          = "io_error"
	CauseBusy        = "busy"
	CauseOutOfMemory = "out_of_memory"
)

// Cause reports whether err is (or wraps) a database failure of the
// environment and names it; "" for any other error, including a
// constraint or SQL error, which is the statement's or the data's fault.
func Cause(err error) string {
	var ue *unavailableError
	if errors.As(err, &ue) {
		return ue.cause
	}
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return ""
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_FULL:
		return CauseDiskFull
	case sqlite3.SQLITE_READONLY:
		return CauseReadOnly
	case sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB,
		sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_NOLFS, sqlite3.SQLITE_PERM:
		return CauseIO
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return CauseBusy
	case sqlite3.SQLITE_NOMEM:
		return CauseOutOfMemory
	}
	return ""
}

// Unavailable returns err marked as ErrUnavailable when Cause recognises
// it, so that layers above match it without knowing SQLite; any other
// error is returned unchanged. Its text is "storage unavailable: " and
// SQLite's own explanation ("database or disk is full"), which is what an
// operator needs to act on.
func Unavailable(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	cause := Cause(err)
	if cause == "" {
		return err
	}
	return &unavailableError{cause: cause, err: err}
}

type unavailableError struct {
	cause string
	err   error
}

func (e *unavailableError) Error() string {
	return "storage unavailable: " + Reason(e.err)
}

func (e *unavailableError) Unwrap() []error { return []error{ErrUnavailable, e.err} }

// Reason is SQLite's explanation of err without the wrapping context and
// the numeric code ("database or disk is full"), or err's text when it
// carries no SQLite error.
func Reason(err error) string {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return err.Error()
	}
	msg := se.Error()
	// modernc appends " (<code>)"; the code means nothing to an operator.
	if i := strings.LastIndex(msg, " ("); i > 0 && strings.HasSuffix(msg, ")") {
		msg = msg[:i]
	}
	return msg
}
