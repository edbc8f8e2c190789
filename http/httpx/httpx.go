// Package httpx holds the small pieces every API handler shares: JSON
// responses, the one place API errors are written (so codes and texts stay
// consistent across features), body limits and list paging.
package httpx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker"
)

// Body size limits of api.md §1.
const (
	MaxBodyBytes        = 1 << 20
	MaxPublishBodyBytes = 64 << 20
)

// Error is an API error with a status that no error kind of package
// messages gives (503 while shutting down, 504 when an agent stays
// silent). Everything else is reported with the kinds
// (messages.Invalidf, NotFoundf, Conflictf, Unavailablef, Timeoutf),
// which actors and stores use too, so that a handler has one way to say
// what went wrong. WriteError turns it into `{"error": "<message>"}` with
// its status.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return e.Message }

// Errorf builds an *Error with a formatted message.
func Errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Message: fmt.Sprintf(format, args...)}
}

// ErrorBody is the JSON shape of every API error.
type ErrorBody struct {
	Error string `json:"error"`
}

// WriteError writes err as a JSON error. An *Error anywhere in the chain sets
// status and message; a failure of the database's environment (full disk,
// read-only, I/O error) is 503 "storage unavailable: <cause>"; anything else
// is an internal error whose detail goes to the log only, so database or
// broker internals never leak to clients.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	var apiErr *Error
	if errors.As(err, &apiErr) {
		WriteJSON(w, apiErr.Status, ErrorBody{Error: apiErr.Message})
		return
	}
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) {
		WriteJSON(w, http.StatusRequestEntityTooLarge,
			ErrorBody{Error: fmt.Sprintf("request body larger than %d bytes", maxErr.Limit)})
		return
	}
	if broker.IsUnavailable(err) {
		// NATS is away: the operation failed at once without reaching
		// it (no reconnect buffer), and the client may try again later.
		slog.Default().WarnContext(r.Context(), "api request failed: nats unavailable",
			"method", r.Method, "path", r.URL.Path, "err", err)
		WriteJSON(w, http.StatusServiceUnavailable, ErrorBody{Error: natsUnavailable(err)})
		return
	}
	if status := KindStatus(err); status != 0 {
		WriteJSON(w, status, ErrorBody{Error: err.Error()})
		return
	}
	if storage.Cause(err) != "" {
		// A full disk or a read-only database is an outage of a
		// dependency, not a bug: 503 with the cause, which the operator
		// can fix, and which tells a client to try again later.
		slog.Default().WarnContext(r.Context(), "api request failed: storage unavailable",
			"method", r.Method, "path", r.URL.Path, "err", err)
		WriteJSON(w, http.StatusServiceUnavailable, ErrorBody{Error: "storage unavailable: " + storage.Reason(err)})
		return
	}
	slog.Default().ErrorContext(r.Context(), "api internal error",
		"method", r.Method, "path", r.URL.Path, "err", err)
	WriteJSON(w, http.StatusInternalServerError, ErrorBody{Error: "internal error; see the server log"})
}

// KindStatus maps the error kinds of package messages to HTTP statuses; 0
// means err carries no kind. Timeouts map to 408, the status upstream's
// /api/run and ping use; handlers that need another (504) check first.
func KindStatus(err error) int {
	switch {
	case errors.Is(err, messages.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, messages.ErrInvalid), errors.Is(err, messages.ErrInvalidToken),
		errors.Is(err, messages.ErrUnknownField), errors.Is(err, messages.ErrTargetUnspecified):
		return http.StatusBadRequest
	case errors.Is(err, messages.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, messages.ErrUnavailable):
		return http.StatusBadGateway
	case errors.Is(err, messages.ErrTimeout):
		return http.StatusRequestTimeout
	}
	return 0
}

// WriteJSON writes v as JSON with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// HandlerFunc is an http handler that returns its error instead of writing
// it, so every feature reports failures through WriteError.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Handle adapts a HandlerFunc to http.Handler.
func Handle(h HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			WriteError(w, r, err)
		}
	})
}

// ReadBody reads the whole request body up to limit bytes; beyond it the
// error maps to 413.
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return nil, err
		}
		return nil, messages.Invalidf("reading request body: %v", err)
	}
	return b, nil
}

// DecodeJSON reads a JSON body (≤ MaxBodyBytes) into v; an empty body is
// refused. Unknown fields are accepted (wire.md §1). It is the API's one
// way to decode a body; its 400 texts are messages.DecodeJSON's, which
// name the field and what it should be ("invalid target.all: expected a
// boolean, got string", "malformed JSON at offset 9: …").
func DecodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	b, err := ReadBody(w, r, MaxBodyBytes)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return messages.Invalidf("request body must be a JSON object")
	}
	return Decode(b, v)
}

// DecodeOptionalJSON is DecodeJSON for a request whose fields are all
// optional: an empty body leaves v as it is.
func DecodeOptionalJSON(w http.ResponseWriter, r *http.Request, v any) error {
	b, err := ReadBody(w, r, MaxBodyBytes)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	return Decode(b, v)
}

// Decode decodes a body already read (a handler that looks at it first)
// with messages.DecodeJSON, its error an ErrInvalid (400) with the same
// text.
func Decode(b []byte, v any) error {
	if err := messages.DecodeJSON(b, v); err != nil {
		return messages.Invalidf("%s", err.Error())
	}
	return nil
}

// IsYAML reports whether the request declares a YAML body
// (application/yaml, application/x-yaml or text/yaml).
func IsYAML(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return false
	}
	switch mt {
	case "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml":
		return true
	}
	return false
}

// Page is the paging window of a list request.
type Page struct {
	Limit  int
	Offset int
}

// Paging defaults of api.md §1.
const (
	DefaultLimit = 50
	MaxLimit     = 1000
)

// ParsePage reads `limit` and `offset` from the query string.
func ParsePage(r *http.Request) (Page, error) {
	p := Page{Limit: DefaultLimit}
	q := r.URL.Query()
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxLimit {
			return p, messages.Invalidf("invalid limit %q: must be an integer between 1 and %d", s, MaxLimit)
		}
		p.Limit = n
	}
	if s := q.Get("offset"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return p, messages.Invalidf("invalid offset %q: must be a non-negative integer", s)
		}
		p.Offset = n
	}
	return p, nil
}

// WriteList writes one page of a list with the X-Total-Count header. A nil
// slice is written as [] so clients never see null for an empty list.
func WriteList[T any](w http.ResponseWriter, items []T, total int) {
	if items == nil {
		items = []T{}
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	WriteJSON(w, http.StatusOK, items)
}

// natsUnavailable is the answer's text for an operation that failed because
// NATS is away: "nats unavailable: <cause>", said once.
func natsUnavailable(err error) string {
	msg := err.Error()
	if strings.HasPrefix(msg, broker.ErrNATSUnavailable.Error()) {
		return msg
	}
	return broker.ErrNATSUnavailable.Error() + ": " + msg
}
