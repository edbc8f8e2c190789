package messages

import "fmt"

// MaxTokenLen bounds ids used as subject tokens and KV keys. NATS accepts
// longer subjects, but an id this long is a mistake and would bloat every
// subject and log line that carries it.
const MaxTokenLen = 200

// ValidateToken checks an id that is used both as a NATS subject token and
// as a KV key (job ids, pc_ids, group names, schedule ids): non-empty, at
// most MaxTokenLen bytes, only [A-Za-z0-9_=-]. kind names the id in the
// error ("job id", "pc_id", "group", "schedule id"), e.g.
// `invalid job id "a.b": must match [A-Za-z0-9_=-]+ (no spaces, '.', '*', '>')`.
// Rejecting such ids at the API keeps a malformed subject (which would
// silently address the wrong agents) from ever being published.
func ValidateToken(kind, s string) error {
	switch {
	case s == "":
		return tokenErrorf("invalid %s %q: must not be empty", kind, s)
	case len(s) > MaxTokenLen:
		return tokenErrorf("invalid %s %q: longer than %d bytes", kind, s[:32]+"...", MaxTokenLen)
	}
	for i := 0; i < len(s); i++ {
		if !isTokenByte(s[i]) {
			return tokenErrorf("invalid %s %q: must match [A-Za-z0-9_=-]+ (no spaces, '.', '*', '>')", kind, s)
		}
	}
	return nil
}

func tokenErrorf(format string, args ...any) error {
	return &textError{msg: fmt.Sprintf(format, args...), err: ErrInvalidToken}
}

func isTokenByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '=' || c == '-'
}

// sanitizeToken turns arbitrary text into a well-formed subject token by
// replacing every character outside [A-Za-z0-9_=-] with '_' (one '_' per
// character, not per byte). Used where the text is informational (the
// target of an audit subject) and must never make publishing fail.
func sanitizeToken(s string) string {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		if r < 0x80 && isTokenByte(byte(r)) {
			out = append(out, byte(r))
		} else {
			out = append(out, '_')
		}
	}
	return string(out)
}
