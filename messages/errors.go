package messages

import "errors"

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
