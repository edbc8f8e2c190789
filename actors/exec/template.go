package exec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"kanade-backend/messages"
)

// commandTemplate encodes a Command once and stamps each copy with its
// exec id (job_id) and request_id. The Commands of one exec differ only in
// request_id, and the execs of a burst of scheduled fires of one job only
// in job_id as well: encoding 10 000 of them with encoding/json cost about
// as much as publishing them; splicing two UUIDs (which need no escaping)
// into a pre-encoded payload costs a copy.
type commandTemplate struct {
	// parts surround the two ids; execFirst says which comes first.
	parts     [3][]byte
	execFirst bool
}

// The fields as the encoder writes them for the template: an empty
// request_id and the placeholder exec id.
var (
	requestIDField = []byte(`"request_id":""`)
	execIDHolder   = "00000000-0000-0000-0000-00000000e0e0"
	execIDField    = []byte(`"job_id":"` + execIDHolder + `"`)
)

// newCommandTemplate encodes cmd (its RequestID and JobID are replaced).
func newCommandTemplate(cmd messages.Command) (*commandTemplate, error) {
	cmd.RequestID = ""
	holder := execIDHolder
	cmd.JobID = &holder
	b, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	if bytes.Count(b, requestIDField) != 1 || bytes.Count(b, execIDField) != 1 {
		return nil, errors.New("encode command: request_id or job_id field not found exactly once")
	}
	// Cut just after the opening quote of each value.
	r := bytes.Index(b, requestIDField) + len(requestIDField) - 1
	e := bytes.Index(b, execIDField) + len(`"job_id":"`)
	t := &commandTemplate{execFirst: e < r}
	if t.execFirst {
		t.parts = [3][]byte{b[:e], b[e+len(execIDHolder) : r], b[r:]}
	} else {
		t.parts = [3][]byte{b[:r], b[r:e], b[e+len(execIDHolder):]}
	}
	return t, nil
}

// with returns the payload carrying execID and requestID, which must be
// UUIDs.
func (t *commandTemplate) with(execID, requestID string) []byte {
	first, second := requestID, execID
	if t.execFirst {
		first, second = execID, requestID
	}
	out := make([]byte, 0, len(t.parts[0])+len(t.parts[1])+len(t.parts[2])+len(first)+len(second))
	out = append(out, t.parts[0]...)
	out = append(out, first...)
	out = append(out, t.parts[1]...)
	out = append(out, second...)
	return append(out, t.parts[2]...)
}
