package storage

import (
	"context"
	"database/sql/driver"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// ErrUnavailable matches (errors.Is) every database failure caused by the
// database's environment rather than by the statement or its data: a full
// disk, a read-only file or mount, an I/O error, a lock held by another
// process, memory; on PostgreSQL also a server that cannot be reached or
// closed the connection (shut down, restarted, network lost). Such a failure says nothing about the request or the
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
	// CauseConnection: the PostgreSQL server cannot be reached, or it
	// ended the session (shutdown, restart, an administrator, the network).
	CauseConnection = "connection_lost"
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
	if errors.As(err, &se) {
		return sqliteCause(se)
	}
	return postgresCause(err)
}

func sqliteCause(se *sqlite.Error) string {
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

// postgresCause classifies the errors of the PostgreSQL server (by
// SQLSTATE) and of the pgx driver's connection.
func postgresCause(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return sqlstateCause(pe.Code)
	}
	// The caller's own deadline or cancellation is not the database's
	// fault, even when pgx reports it as a broken connection.
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return ""
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) || errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, driver.ErrBadConn) {
		return CauseConnection
	}
	// pgx's other connection failures (the server closed the socket
	// mid-query: "failed to receive message: unexpected EOF", a network
	// error) are its own error types, which all say whether a retry is
	// safe; no error of a statement or of its data has that method.
	var pgconnErr interface{ SafeToRetry() bool }
	if errors.As(err, &pgconnErr) {
		return CauseConnection
	}
	return ""
}

// sqlstateCause maps PostgreSQL's SQLSTATE codes (Appendix A of its
// manual) that blame the server's environment, not the statement.
func sqlstateCause(code string) string {
	switch code {
	case "53100": // disk_full
		return CauseDiskFull
	case "25006": // read_only_sql_transaction: a standby, or a database set read-only
		return CauseReadOnly
	case "53200": // out_of_memory
		return CauseOutOfMemory
	case "53300", "57P03": // too_many_connections, cannot_connect_now (starting up, recovering)
		return CauseBusy
	case "57P01", "57P02", "57P04", "57P05": // admin_shutdown, crash_shutdown, database_dropped, idle_session_timeout
		return CauseConnection
	case "58030", "XX001", "XX002": // io_error, data_corrupted, index_corrupted
		return CauseIO
	}
	if strings.HasPrefix(code, "08") { // connection_exception and its subclasses
		return CauseConnection
	}
	return ""
}

// Unavailable returns err marked as ErrUnavailable when Cause recognises
// it, so that layers above match it without knowing the database; any
// other error is returned unchanged. Its text is "storage unavailable: "
// and the database's own explanation ("database or disk is full", "could
// not extend file …: No space left on device"), which is what an operator
// needs to act on.
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

// Reason is the database's explanation of err without the wrapping
// context and the numeric code ("database or disk is full" from SQLite,
// the message of a PostgreSQL error), or err's text when it carries
// neither.
func Reason(err error) string {
	var se *sqlite.Error
	if errors.As(err, &se) {
		msg := se.Error()
		// modernc appends " (<code>)"; the code means nothing to an operator.
		if i := strings.LastIndex(msg, " ("); i > 0 && strings.HasSuffix(msg, ")") {
			msg = msg[:i]
		}
		return msg
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Message
	}
	if postgresCause(err) == CauseConnection {
		// pgx's text names the user and database; the operator needs the
		// reason ("connection refused", "unexpected EOF"), which comes last.
		msg := err.Error()
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		return "no connection to the database server: " + msg
	}
	return err.Error()
}
