package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"kanade-backend/messages"
)

// Mode is how the API authenticates requests; New picks exactly one.
type Mode string

// The four modes of api.md §2, in precedence order.
const (
	ModeDisabled  Mode = "disabled"
	ModeStatic    Mode = "static"
	ModeJWT       Mode = "jwt"
	ModeGenerated Mode = "generated"
)

// Subjects given to requests that carry no user identity of their own.
const (
	// SubjectAnonymous is the principal of every request when auth is disabled.
	SubjectAnonymous = "anonymous"
	// SubjectAdmin is the principal of a request that presented the static or
	// generated token: whoever holds it is the operator.
	SubjectAdmin = "admin"
)

// jwtAudience is the audience every accepted JWT must name, so tokens minted
// for other services sharing the issuer's key are not accepted here.
const jwtAudience = "kanade"

// minJWTSecretLen is the HS256 key size below which New warns: RFC 7518
// §3.2 asks for a key at least as long as the hash output (32 bytes).
const minJWTSecretLen = 32

// Principal is who made an authenticated request: Subject is the name the
// audit trail records as `sub` (an operator's name, a JWT's sub, "admin" for
// the static token), Role what it may do. Source is what the client says it
// is (the X-Kanade-Source header, e.g. "cli" or "dashboard"), kept for the
// audit trail; it is not authenticated.
type Principal struct {
	Subject string
	Role    Role
	Source  string
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p. The middleware uses it; tests and
// internal callers (a scheduler acting on its own) use it to call handlers
// that read the principal.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal stored by the middleware (or by
// WithPrincipal); ok is false on a context that never passed through either.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// Authenticator checks API requests in the mode New chose. Its settings are
// immutable after New; it is safe for concurrent use.
type Authenticator struct {
	mode      Mode
	token     string // static or generated token; empty otherwise
	tokenFile string // generated mode only
	jwtSecret []byte // jwt mode only
	// jwtRole is the role of a JWT without a role claim.
	jwtRole Role
	// operators looks up operator tokens; nil accepts none (and then the
	// generated token is compared in memory, as the only credential).
	operators OperatorStore
	// streams are the open event streams of operator tokens, ended when
	// the operator loses the token (EndSessions).
	streams sessions
	logger  *slog.Logger
}

// New resolves the mode in precedence order (disable > static > jwt >
// generated). In generated mode it reads `<dataDir>/admin.token`, creating it
// with a fresh random token if missing (see loadOrCreateToken). It logs the
// mode it chose but never a token: the caller decides whether to log the
// dashboard URL carrying Token().
func New(cfg Config, dataDir string, logger *slog.Logger) (*Authenticator, error) {
	if logger == nil {
		logger = slog.Default()
	}
	jwtRole := cfg.JWTDefaultRole
	if jwtRole == "" {
		jwtRole = RoleAdmin
	}
	if !jwtRole.Valid() {
		return nil, fmt.Errorf("auth: %s: unknown role %q: want viewer, operator or admin", EnvJWTDefaultRole, jwtRole)
	}
	a := &Authenticator{logger: logger, jwtRole: jwtRole, operators: cfg.Operators}
	// Trimmed for the same reason as in ConfigFromEnv, for callers that
	// build a Config by hand.
	static := strings.TrimSpace(cfg.StaticToken)
	switch {
	case cfg.Disable:
		a.mode = ModeDisabled
		logger.Warn("API authentication is disabled; every /api route is open to anyone who can reach the server",
			"env", EnvDisable)
	case static != "":
		a.mode = ModeStatic
		a.token = static
		logger.Info("API authentication: static bearer token", "env", EnvStaticToken)
	case strings.TrimSpace(cfg.JWTSecret) != "":
		a.mode = ModeJWT
		a.jwtSecret = []byte(cfg.JWTSecret)
		logger.Info("API authentication: HS256 JWT", "env", EnvJWTSecret, "audience", jwtAudience,
			"role_without_claim", string(jwtRole))
		if len(a.jwtSecret) < minJWTSecretLen {
			logger.Warn("JWT secret is shorter than 32 bytes and easier to brute-force; use a longer random secret",
				"env", EnvJWTSecret, "length", len(a.jwtSecret))
		}
	default:
		if dataDir == "" {
			return nil, errors.New("auth: no data directory to keep the generated admin token in; set one or configure " +
				EnvStaticToken + " or " + EnvJWTSecret)
		}
		tok, path, err := loadOrCreateToken(dataDir, logger)
		if err != nil {
			return nil, fmt.Errorf("auth: generated admin token: %w", err)
		}
		a.mode = ModeGenerated
		a.token = tok
		a.tokenFile = path
		// Not logged here: the "dashboard ready" line names this mode and
		// the token file once the server listens.
	}
	return a, nil
}

// Mode reports the mode New chose.
func (a *Authenticator) Mode() Mode { return a.mode }

// Token returns the static or generated token so the caller can log the
// dashboard URL `…/#token=<token>`; empty in jwt and disabled modes.
func (a *Authenticator) Token() string { return a.token }

// TokenFile returns the generated token's path; empty in other modes.
func (a *Authenticator) TokenFile() string { return a.tokenFile }

// OperatorEvent builds the audit event of an API call made by the request's
// principal: actor "operator", with the principal's subject as `sub` and the
// X-Kanade-Source header as `source` added to the payload without
// overwriting keys the caller set (wire.md §4).
func OperatorEvent(ctx context.Context, action, target string, payload map[string]any) messages.AuditEvent {
	ev := messages.AuditEvent{Actor: messages.ActorOperator, Action: action, Payload: payload}
	if target != "" {
		ev.Target = &target
	}
	if ev.Payload == nil {
		ev.Payload = map[string]any{}
	}
	if p, ok := PrincipalFrom(ctx); ok {
		if p.Subject != "" {
			ev.SetPayloadDefault("sub", p.Subject)
		}
		if p.Source != "" {
			ev.SetPayloadDefault("source", p.Source)
		}
	}
	return ev
}

// InitiatedBy is the executions.initiated_by text for the request's
// principal: "operator:<sub>".
func InitiatedBy(ctx context.Context) string {
	if p, ok := PrincipalFrom(ctx); ok && p.Subject != "" {
		return messages.ActorOperator + ":" + p.Subject
	}
	return messages.ActorOperator
}

// Subject is who made a change, for the created_by and revoked_by columns
// of what the API keeps (operators, agent credentials): the caller's name,
// or "operator" when the request names nobody (authentication disabled).
func Subject(ctx context.Context) string {
	if p, ok := PrincipalFrom(ctx); ok && p.Subject != "" {
		return p.Subject
	}
	return messages.ActorOperator
}
