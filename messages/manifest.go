package messages

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Manifest is a job definition: KV jobs values and POST /api/jobs bodies.
// Unlike every other shape it rejects unknown top-level fields, so that an
// old-style manifest carrying its own "target" fails loudly instead of
// being stored without it.
type Manifest struct {
	ID      string `json:"id"`
	Version string `json:"version"`
	// Description is null when absent and always emitted.
	Description     *string        `json:"description"`
	Execute         Execute        `json:"execute"`
	RequireApproval bool           `json:"require_approval"`
	Inventory       *InventoryHint `json:"inventory"`
}

// Execute says how agents run a job. Unknown fields are ignored.
type Execute struct {
	Shell  Shell  `json:"shell"`
	Script string `json:"script"`
	// Timeout is a humantime duration; agents receive it as timeout_secs.
	Timeout Duration `json:"timeout"`
	// RunAs defaults to system and is always emitted.
	RunAs RunAs  `json:"run_as"`
	Cwd   string `json:"cwd,omitempty"`
}

// InventoryHint marks a job whose stdout is a JSON object of facts and
// tells the dashboard how to show them.
type InventoryHint struct {
	Display []DisplayField `json:"display"`
	Summary []DisplayField `json:"summary,omitzero"` // [] is kept, null omitted
}

// DisplayField is one column of an inventory table.
type DisplayField struct {
	Field string `json:"field"`
	Label string `json:"label"`
	// Type is one of DisplayNumber, DisplayBytes, DisplayTimestamp, or
	// empty for plain text.
	Type string `json:"type,omitempty"`
}

// Display types the dashboard knows how to format.
const (
	DisplayNumber    = "number"
	DisplayBytes     = "bytes"
	DisplayTimestamp = "timestamp"
)

// manifestFields lists the top-level fields a Manifest may carry.
var manifestFields = map[string]bool{
	"id": true, "version": true, "description": true, "execute": true,
	"require_approval": true, "inventory": true,
}

// UnmarshalJSON rejects unknown top-level fields (naming the first one in
// alphabetical order), keeps a numeric version's literal text ("1.0" stays
// "1.0") and fills run_as = system.
func (m *Manifest) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	if raw == nil {
		// JSON null: leave m untouched, as encoding/json does for structs.
		return nil
	}
	var unknown []string
	for k := range raw {
		if !manifestFields[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return &textError{msg: fmt.Sprintf("%v %q", ErrUnknownField, unknown[0]), err: ErrUnknownField}
	}
	type alias Manifest
	var a struct {
		*alias
		// Version shadows alias.Version so that numbers are accepted.
		Version versionText `json:"version"`
	}
	a.alias = (*alias)(&Manifest{})
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	a.alias.Version = string(a.Version)
	*m = Manifest(*a.alias)
	return nil
}

// versionText accepts a version written as a JSON string or, as YAML
// writers often do (`version: 1.0`), as a number, keeping the number's
// literal text.
type versionText string

func (v *versionText) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*v = versionText(s)
		return nil
	case len(b) > 0 && (b[0] == '-' || b[0] >= '0' && b[0] <= '9'):
		*v = versionText(b)
		return nil
	}
	return fmt.Errorf("version must be a string, got %s", b)
}

// MarshalJSON emits run_as explicitly even when unset.
func (e Execute) MarshalJSON() ([]byte, error) {
	type alias Execute
	a := alias(e)
	a.RunAs = a.RunAs.orDefault()
	return json.Marshal(a)
}

// UnmarshalJSON fills run_as = system when absent, null or empty.
func (e *Execute) UnmarshalJSON(b []byte) error {
	type alias Execute
	var a alias
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	a.RunAs = a.RunAs.orDefault()
	*e = Execute(a)
	return nil
}

// ParseManifestJSON decodes and validates a manifest. On a validation
// error the decoded manifest is returned alongside the error.
func ParseManifestJSON(b []byte) (Manifest, error) {
	var m Manifest
	if err := DecodeJSON(b, &m); err != nil {
		return Manifest{}, err
	}
	return m, m.Validate()
}

// ParseManifestYAML reads a manifest posted as YAML. It converts the YAML
// to JSON and reuses the JSON decoder, so both forms obey the same rules
// (unknown fields, defaults, numeric versions).
func ParseManifestYAML(b []byte) (Manifest, error) {
	j, err := yamlToJSON(b)
	if err != nil {
		return Manifest{}, err
	}
	return ParseManifestJSON(j)
}

// Validate checks a manifest before it is stored or executed: an id that
// is a valid subject token and KV key, a version, a runnable execute block
// and, when present, a usable inventory hint.
func (m *Manifest) Validate() error {
	if err := ValidateToken("job id", m.ID); err != nil {
		return err
	}
	if strings.TrimSpace(m.Version) == "" {
		return errors.New("version is required")
	}
	if err := m.Execute.Validate(); err != nil {
		return err
	}
	if m.Inventory != nil {
		return m.Inventory.Validate()
	}
	return nil
}

// Validate checks the execute block.
func (e *Execute) Validate() error {
	if err := validateShell(e.Shell); err != nil {
		return err
	}
	if strings.TrimSpace(e.Script) == "" {
		return errors.New("execute.script is required")
	}
	if _, err := e.TimeoutSecs(); err != nil {
		return err
	}
	return validateRunAs(e.RunAs)
}

// TimeoutSecs converts the timeout to the whole seconds agents receive
// (truncated). A zero timeout is refused: agents would kill the script at
// once.
func (e *Execute) TimeoutSecs() (uint64, error) {
	d, err := e.Timeout.Parse()
	if err != nil {
		return 0, fmt.Errorf("invalid timeout: %w", err)
	}
	if d < time.Second {
		return 0, fmt.Errorf("invalid timeout: %q is shorter than 1s", e.Timeout)
	}
	return uint64(d / time.Second), nil
}

func validateShell(s Shell) error {
	if s == "" {
		return errors.New(`execute.shell is required ("powershell" or "cmd")`)
	}
	if !s.Valid() {
		return fmt.Errorf("unknown shell %q", string(s))
	}
	return nil
}

// validateRunAs accepts the empty value as the default (system), because
// encoders send it as system.
func validateRunAs(r RunAs) error {
	if r != "" && !r.Valid() {
		return fmt.Errorf("unknown run_as %q", string(r))
	}
	return nil
}

// Validate checks that the hint names at least one display column and
// that every column is well formed.
func (h *InventoryHint) Validate() error {
	if len(h.Display) == 0 {
		return errors.New("inventory.display must not be empty")
	}
	for i, f := range h.Display {
		if err := f.validate(fmt.Sprintf("inventory.display[%d]", i)); err != nil {
			return err
		}
	}
	for i, f := range h.Summary {
		if err := f.validate(fmt.Sprintf("inventory.summary[%d]", i)); err != nil {
			return err
		}
	}
	return nil
}

func (f DisplayField) validate(where string) error {
	if f.Field == "" {
		return fmt.Errorf("%s.field is required", where)
	}
	switch f.Type {
	case "", DisplayNumber, DisplayBytes, DisplayTimestamp:
		return nil
	}
	return fmt.Errorf("%s.type: unknown type %q (want number, bytes or timestamp)", where, f.Type)
}

// NewCommand builds the Command that carries this job to agents, so that
// the exec endpoint and the scheduler map manifests the same way. execID
// becomes job_id (null for none); jitterSecs comes from the fan-out plan.
func (m *Manifest) NewCommand(requestID string, execID *string, jitterSecs *uint64) (Command, error) {
	secs, err := m.Execute.TimeoutSecs()
	if err != nil {
		return Command{}, err
	}
	return Command{
		ID:          m.ID,
		Version:     m.Version,
		RequestID:   requestID,
		JobID:       execID,
		Shell:       m.Execute.Shell,
		Script:      m.Execute.Script,
		TimeoutSecs: secs,
		JitterSecs:  jitterSecs,
		RunAs:       m.Execute.RunAs.orDefault(),
		Cwd:         m.Execute.Cwd,
	}, nil
}
