package messages

// MaxJSONDepth bounds how deeply a JSON body may nest arrays and objects.
// No wire shape goes past a handful of levels; the bound keeps a hostile
// body (a megabyte of '[') from costing the decoder, and whatever later
// walks a stored free-form value (payloads, facts), a deep recursion.
const MaxJSONDepth = 64

// CheckJSONDepth reports an error when b nests deeper than MaxJSONDepth. It
// scans b once without decoding (strings are skipped, so brackets inside
// them do not count) and leaves syntax errors to the decoder.
func CheckJSONDepth(b []byte) error {
	depth := 0
	inString, escaped := false, false
	for i, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			if depth > MaxJSONDepth {
				return Invalidf("JSON nested deeper than %d levels (at offset %d)", MaxJSONDepth, i)
			}
		case c == ']' || c == '}':
			depth--
		}
	}
	return nil
}
