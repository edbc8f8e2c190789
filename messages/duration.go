package messages

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"kanade-backend/messages/humantime"
)

// Duration is a duration exactly as written on the wire ("60s", "1h 30m").
// It is kept verbatim rather than as a time.Duration so that a stored
// manifest or schedule re-encodes byte for byte ("60s" does not become
// "1m"); Parse gives the value.
type Duration string

// Parse returns the length of d using the humantime grammar.
func (d Duration) Parse() (time.Duration, error) {
	return humantime.Parse(string(d))
}

// UnmarshalJSON accepts a JSON string only. A bare number is refused with a
// hint because "timeout: 30" in YAML is a common slip and the unit cannot be
// guessed.
func (d *Duration) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	if len(b) > 0 && b[0] != '"' {
		return fmt.Errorf("expected a duration string such as \"30s\" or \"5m\", got %s", b)
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*d = Duration(s)
	return nil
}

// optionalDuration parses a duration that may be absent; set reports
// whether it was present.
func optionalDuration(d *Duration) (v time.Duration, set bool, err error) {
	if d == nil {
		return 0, false, nil
	}
	v, err = d.Parse()
	return v, true, err
}
