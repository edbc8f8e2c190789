package exec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"kanade-backend/messages"
)

// commandTemplate encodes a Command once and stamps each copy with its
// request_id. The Commands of one exec differ only in request_id, and
// encoding 10 000 of them with encoding/json cost about as much as
// publishing them; splicing a UUID (which needs no escaping) into a
// pre-encoded payload costs a copy.
type commandTemplate struct {
	head, tail []byte
}

// requestIDField is how the encoder writes an empty request_id.
var requestIDField = []byte(`"request_id":""`)

func newCommandTemplate(cmd messages.Command) (*commandTemplate, error) {
	cmd.RequestID = ""
	b, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	i := bytes.Index(b, requestIDField)
	if i < 0 || bytes.Count(b, requestIDField) != 1 {
		return nil, errors.New("encode command: request_id field not found exactly once")
	}
	cut := i + len(requestIDField) - 1 // just before the closing quote
	return &commandTemplate{head: b[:cut], tail: b[cut:]}, nil
}

// with returns the payload carrying requestID, which must be a UUID.
func (t *commandTemplate) with(requestID string) []byte {
	out := make([]byte, 0, len(t.head)+len(requestID)+len(t.tail))
	out = append(out, t.head...)
	out = append(out, requestID...)
	return append(out, t.tail...)
}
