package messages

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// DecodeJSON decodes one JSON value (an API body or a KV value) into v and
// rewrites encoding/json's errors into texts fit for a 400 response:
// "invalid execute.shell: expected a string, got number" rather than a
// message naming Go types and internal helper structs. The original error
// stays reachable with errors.As.
func DecodeJSON(b []byte, v any) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return errors.New("empty body")
	}
	if err := CheckJSONDepth(b); err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return describeJSONError(err)
	}
	return nil
}

func describeJSONError(err error) error {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return &textError{msg: fmt.Sprintf("malformed JSON at offset %d: %v", syn.Offset, syn), err: err}
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		want := describeType(te.Type)
		if path := jsonPath(te.Field); path != "" {
			return &textError{msg: fmt.Sprintf("invalid %s: expected %s, got %s", path, want, te.Value), err: err}
		}
		return &textError{msg: fmt.Sprintf("expected %s, got %s", want, te.Value), err: err}
	}
	return err
}

// jsonPath keeps the wire names of a decoding path. encoding/json also
// lists embedded Go structs (FanoutPlan) and the alias types the
// UnmarshalJSON methods decode through; wire names are all snake_case, so
// anything else is dropped.
func jsonPath(field string) string {
	var parts []string
	for _, p := range strings.Split(field, ".") {
		if p == "" || p == "alias" || p[0] >= 'A' && p[0] <= 'Z' {
			continue
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ".")
}

func describeType(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return t.String()
}

// ParseConfigScopeJSON decodes and validates an agent_config scope. On a
// validation error the decoded scope is returned alongside the error.
func ParseConfigScopeJSON(b []byte) (ConfigScope, error) {
	var c ConfigScope
	if err := DecodeJSON(b, &c); err != nil {
		return ConfigScope{}, err
	}
	return c, c.Validate()
}
