package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
)

// OperatorTokenPrefix starts every operator token (and every newly
// generated admin token). Secret scanners (GitHub push protection,
// gitleaks, trufflehog) find credentials by such prefixes, so a token
// pasted into a repository or a ticket is caught; the prefix also tells
// operator tokens from JWTs without trying to parse them.
const OperatorTokenPrefix = "kanade_op_"

// NewOperatorToken returns a fresh operator token: the prefix and 256 bits
// of crypto randomness, base64url without padding so it can sit in a URL
// fragment without escaping.
func NewOperatorToken() (string, error) {
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random token: %w", err)
	}
	return OperatorTokenPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// TokenHash is what the operator store keeps instead of a token: its
// SHA-256. A fast hash is enough because the token is 256 random bits, so
// there is nothing to brute-force that a slow password hash would protect;
// a stolen database still yields no usable token.
func TokenHash(tok string) []byte {
	h := sha256.Sum256([]byte(tok))
	return h[:]
}

// IsOperatorToken reports whether tok has the operator token prefix.
func IsOperatorToken(tok string) bool { return strings.HasPrefix(tok, OperatorTokenPrefix) }

// OperatorCredential is an operator as the middleware needs it: who, what
// role, the stored token hash, and whether the token was revoked.
type OperatorCredential struct {
	Name      string
	Role      Role
	TokenHash []byte
	Revoked   bool
}

// OperatorStore finds the operator a token belongs to. Found is false when
// no operator has that hash; err is for a store that could not answer,
// which the middleware answers with 503 rather than 401, so an outage is
// not mistaken for a bad token.
type OperatorStore interface {
	OperatorByTokenHash(ctx context.Context, hash []byte) (cred OperatorCredential, found bool, err error)
}

// sessions tracks the open event streams of operator tokens by operator
// name, so that revoking an operator ends its live streams at once: an
// EventSource authenticated once would otherwise keep receiving events
// until it reconnects, which may be never.
type sessions struct {
	mu   sync.Mutex
	next uint64
	open map[string]map[uint64]context.CancelFunc
}

// add registers cancel under name and returns the function that removes it.
func (s *sessions) add(name string, cancel context.CancelFunc) (remove func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open == nil {
		s.open = map[string]map[uint64]context.CancelFunc{}
	}
	s.next++
	id := s.next
	if s.open[name] == nil {
		s.open[name] = map[uint64]context.CancelFunc{}
	}
	s.open[name][id] = cancel
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.open[name], id)
		if len(s.open[name]) == 0 {
			delete(s.open, name)
		}
	}
}

// end cancels every stream registered under name and returns how many.
func (s *sessions) end(name string) int {
	s.mu.Lock()
	streams := s.open[name]
	delete(s.open, name)
	s.mu.Unlock()
	for _, cancel := range streams {
		cancel()
	}
	return len(streams)
}

// EndSessions ends the open event streams that operator name authenticated
// with its token; the operators API calls it after revoking the operator or
// replacing its token. It returns how many streams it ended.
func (a *Authenticator) EndSessions(name string) int { return a.streams.end(name) }
