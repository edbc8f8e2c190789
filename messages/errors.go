package messages

import (
	"errors"
	"fmt"
)

// Sentinel errors. The concrete errors keep user-facing texts exact (the
// HTTP layer returns them verbatim) and match these with errors.Is.
var (
	// ErrUnknownField is returned when a Manifest carries a top-level field
	// the contract does not define; the error text names the field.
	ErrUnknownField = errors.New("unknown field")
	// ErrInvalidToken is matched by every ValidateToken error.
	ErrInvalidToken = errors.New("invalid token")
)

// textError carries an exact message and the sentinel it belongs to.
type textError struct {
	msg string
	err error
}

func (e *textError) Error() string { return e.msg }
func (e *textError) Unwrap() error { return e.err }

// Error kinds. Actors and stores report failures with these so that the
// HTTP layer can pick the status code (httpx.WriteError) without any actor
// knowing about HTTP. The message text is returned to the client verbatim,
// so write it for the operator: what was wrong and how to fix it.
var (
	// ErrNotFound: the named thing does not exist (404).
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the request is malformed or contradicts the contract (400).
	ErrInvalid = errors.New("invalid request")
	// ErrConflict: the request contradicts current state (409).
	ErrConflict = errors.New("conflict")
	// ErrUnavailable: a dependency (NATS, an agent) failed or did not
	// answer (502).
	ErrUnavailable = errors.New("unavailable")
	// ErrTimeout: waiting for an agent took too long (408 for /api/run and
	// ping, 504 for the logs proxy; the handler decides).
	ErrTimeout = errors.New("timeout")
)

// NotFoundf returns an ErrNotFound error with exactly the given text.
func NotFoundf(format string, args ...any) error { return kindf(ErrNotFound, format, args...) }

// Invalidf returns an ErrInvalid error with exactly the given text.
func Invalidf(format string, args ...any) error { return kindf(ErrInvalid, format, args...) }

// Conflictf returns an ErrConflict error with exactly the given text.
func Conflictf(format string, args ...any) error { return kindf(ErrConflict, format, args...) }

// Unavailablef returns an ErrUnavailable error with exactly the given text.
func Unavailablef(format string, args ...any) error { return kindf(ErrUnavailable, format, args...) }

// Timeoutf returns an ErrTimeout error with exactly the given text.
func Timeoutf(format string, args ...any) error { return kindf(ErrTimeout, format, args...) }

func kindf(kind error, format string, args ...any) error {
	return &textError{msg: fmt.Sprintf(format, args...), err: kind}
}
