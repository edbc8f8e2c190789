package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"kanade-backend/http/httpx"
)

// HeaderSource names the client kind (cli, dashboard, …) for the audit trail.
const HeaderSource = "X-Kanade-Source"

// QueryAccessToken is the query parameter that may carry the token on an
// event-stream request; see tokenFromRequest for why and when.
const QueryAccessToken = "access_token"

// The 401 messages of api.md §2. JWT failures are "invalid token: <reason>".
const (
	msgMissingBearer = "missing bearer token"
	msgInvalidStatic = "invalid static token"
	msgInvalidJWT    = "invalid token: "
	// Operator tokens: one the store does not know, and one whose operator
	// was revoked (saying so tells its holder why; the token itself is
	// useless either way).
	msgUnknownOperator = "invalid token: unknown operator token"
	msgRevokedOperator = "invalid token: operator token revoked"
)

// jwtLeeway absorbs clock skew between the token issuer and this server, so
// a token is not rejected as expired or not-yet-valid by a few seconds.
const jwtLeeway = 30 * time.Second

// maxSourceLen bounds the client-supplied X-Kanade-Source: it is stored in
// audit rows and logs, and nothing legitimate needs more.
const maxSourceLen = 128

// jwtParser holds the JWT rules of api.md §2. Pinning the method to HS256
// closes the classic confusions (alg none, or an RS256 public key used as an
// HMAC secret); exp is required so no token lives forever; the audience
// keeps tokens minted for other services out. A Parser with these options is
// read-only while parsing, so one is shared by all requests.
var jwtParser = jwt.NewParser(
	jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
	jwt.WithAudience(jwtAudience),
	jwt.WithExpirationRequired(),
	jwt.WithLeeway(jwtLeeway),
)

// Middleware authenticates every request it wraps; the caller wraps only
// /api/*, since /health, /metrics and the dashboard's files are public. On
// success the Principal is in the request context (PrincipalFrom); on failure
// the response is 401 with `WWW-Authenticate: Bearer` and a JSON error body
// (503 when the operator store cannot be read), and next is not called.
func (a *Authenticator) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := tokenFromRequest(r)
		// Whatever happens next, the rest of the stack must not see a token
		// in the URL: handlers and loggers print URLs freely.
		r = withoutQueryToken(r)

		p, viaOperator, err := a.authenticate(r.Context(), tok)
		if err != nil {
			a.refuse(w, r, err)
			return
		}
		p.Source = sourceOf(r)
		ctx := WithPrincipal(r.Context(), p)
		if viaOperator && isEventStreamGET(r) {
			// A stream lives as long as the client keeps it open; it must
			// end when the operator's token stops being valid.
			var cancel context.CancelFunc
			ctx, cancel = context.WithCancel(ctx)
			defer cancel()
			defer a.streams.add(p.Subject, cancel)()
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// refusal is why a request was not authenticated: the status (401, or 503
// when the operator store could not answer) and the body's message.
type refusal struct {
	status int
	msg    string
	cause  error // logged, never sent
}

func unauthorized(msg string) *refusal { return &refusal{status: http.StatusUnauthorized, msg: msg} }

// authenticate checks tok in the Authenticator's mode and returns the
// principal and whether an operator token authenticated it, or why tok is
// not accepted.
func (a *Authenticator) authenticate(ctx context.Context, tok string) (Principal, bool, *refusal) {
	if a.mode == ModeDisabled {
		// An open API has no identities to tell apart: whoever reaches it
		// may do everything, as before roles existed.
		return Principal{Subject: SubjectAnonymous, Role: RoleAdmin}, false, nil
	}
	if tok == "" {
		return Principal{}, false, unauthorized(msgMissingBearer)
	}
	switch a.mode {
	case ModeStatic:
		// JWTs are deliberately not tried here: a configured static token
		// is the only shared credential, so a leaked or weak JWT secret
		// elsewhere cannot open this API. Operator tokens are personal and
		// revocable, and are accepted in every mode.
		if tokensEqual(tok, a.token) {
			return Principal{Subject: SubjectAdmin, Role: RoleAdmin}, false, nil
		}
		if a.operators != nil && IsOperatorToken(tok) {
			return a.operator(ctx, tok)
		}
		return Principal{}, false, unauthorized(msgInvalidStatic)
	case ModeGenerated:
		if a.operators == nil {
			if !tokensEqual(tok, a.token) {
				return Principal{}, false, unauthorized(msgInvalidStatic)
			}
			return Principal{Subject: SubjectAdmin, Role: RoleAdmin}, false, nil
		}
		// The generated token is the operator named admin: it is checked in
		// the store like every operator token, so revoking or demoting
		// admin takes effect. A token from before the prefix existed is
		// looked up too.
		p, ok, err := a.operator(ctx, tok)
		if err != nil && err.msg == msgUnknownOperator && !IsOperatorToken(tok) {
			// Not an operator token's form: to its holder it was the
			// static-like admin token, and that is what is wrong.
			err.msg = msgInvalidStatic
		}
		return p, ok, err
	case ModeJWT:
		if a.operators != nil && IsOperatorToken(tok) {
			return a.operator(ctx, tok)
		}
		sub, role, reason := a.verifyJWT(tok)
		if reason != "" {
			return Principal{}, false, unauthorized(msgInvalidJWT + reason)
		}
		return Principal{Subject: sub, Role: role}, false, nil
	}
	// Unreachable for an Authenticator built by New; fail closed for a zero
	// value rather than let requests through.
	return Principal{}, false, unauthorized(msgMissingBearer)
}

// operator authenticates an operator token through the store.
func (a *Authenticator) operator(ctx context.Context, tok string) (Principal, bool, *refusal) {
	hash := TokenHash(tok)
	cred, found, err := a.operators.OperatorByTokenHash(ctx, hash)
	if err != nil {
		return Principal{}, false, &refusal{status: http.StatusServiceUnavailable,
			msg: "cannot check the operator token now; try again", cause: err}
	}
	// The store found the row by its hash (an index lookup, whose timing
	// depends on the hash, not on the token); the comparison that decides
	// is constant-time all the same.
	if !found || subtle.ConstantTimeCompare(cred.TokenHash, hash) != 1 {
		return Principal{}, false, unauthorized(msgUnknownOperator)
	}
	if cred.Revoked {
		return Principal{}, false, unauthorized(msgRevokedOperator)
	}
	return Principal{Subject: cred.Name, Role: cred.Role}, true, nil
}

// tokensEqual compares in constant time so response timing does not reveal
// how much of a guess was right. Hashing first makes the comparison
// fixed-length too, so timing does not reveal the token's length either.
func tokensEqual(got, want string) bool {
	g := sha256.Sum256([]byte(got))
	w := sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// jwtClaims are the registered claims plus the role. Role is decoded as any
// so that a role of the wrong type is reported as such rather than as a
// malformed token.
type jwtClaims struct {
	jwt.RegisteredClaims
	Role any `json:"role,omitempty"`
}

// verifyJWT returns the token's subject and role, or a short reason it was
// rejected.
func (a *Authenticator) verifyJWT(tok string) (string, Role, string) {
	var claims jwtClaims
	parsed, err := jwtParser.ParseWithClaims(tok, &claims, func(t *jwt.Token) (any, error) {
		// WithValidMethods already refused other algorithms; checking again
		// here keeps the secret from ever being offered to a non-HMAC
		// verifier should the parser options change.
		if t.Method != jwt.SigningMethodHS256 {
			return nil, fmt.Errorf("signing method %s is invalid", t.Method.Alg())
		}
		return a.jwtSecret, nil
	})
	if err != nil {
		return "", "", jwtReason(err, parsed, &claims.RegisteredClaims)
	}
	// jwt/v5 can only require sub to equal a fixed value; any subject will
	// do here, but there must be one to attribute the audit trail to.
	if claims.Subject == "" {
		return "", "", "missing sub claim"
	}
	role := a.jwtRole
	switch v := claims.Role.(type) {
	case nil:
	case string:
		r, err := ParseRole(v)
		if err != nil {
			// Refused rather than given the default: an issuer that names a
			// role this server does not know meant something else.
			return "", "", "role claim: " + err.Error()
		}
		role = r
	default:
		return "", "", "role claim must be a string"
	}
	return claims.Subject, role, ""
}

// jwtReason turns a jwt/v5 parse error into the short reason of the 401
// body. The library's own texts nest ("token has invalid claims: token is
// missing required claim: exp claim is required"); operators need the last
// part. Claims are consulted only after the signature was verified, so a
// forged token learns nothing beyond "signature is invalid".
func jwtReason(err error, tok *jwt.Token, claims *jwt.RegisteredClaims) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "token is malformed"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// alg missing or not one jwt/v5 knows at all.
		return "unsupported signing method"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		if tok != nil && tok.Method != nil && tok.Method != jwt.SigningMethodHS256 {
			return fmt.Sprintf("signing method %s is invalid", tok.Method.Alg())
		}
		return "token signature is invalid"
	case errors.Is(err, jwt.ErrTokenInvalidClaims):
		switch {
		case claims.ExpiresAt == nil:
			return "missing exp claim"
		case errors.Is(err, jwt.ErrTokenExpired):
			return "token is expired"
		case errors.Is(err, jwt.ErrTokenNotValidYet):
			return "token is not valid yet"
		case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
			return "missing aud claim"
		case errors.Is(err, jwt.ErrTokenInvalidAudience):
			return "aud claim must include " + jwtAudience
		}
		return "token has invalid claims"
	}
	return "token is invalid"
}

// tokenFromRequest returns the bearer token of r, or "" when it has none.
//
// The token normally comes from `Authorization: Bearer <t>`; the scheme is
// matched case-insensitively (RFC 7235 §2.1) and surrounding spaces are
// tolerated. Browsers' EventSource, which the dashboard uses for
// /api/events, cannot set request headers, so a GET that asks for
// text/event-stream may carry the token in the access_token query parameter
// instead (as RFC 6750 §2.3 allows). Only that request kind may: a token in
// a URL ends up in browser history and proxy logs, so it is not accepted
// where a header would do, which also keeps a crafted link from carrying a
// credential into a state-changing request.
func tokenFromRequest(r *http.Request) string {
	if tok := parseBearer(r.Header.Get("Authorization")); tok != "" {
		return tok
	}
	// Reached also when Authorization holds another scheme, e.g. Basic added
	// by a reverse proxy's login, which the browser replays on EventSource.
	if isEventStreamGET(r) {
		return strings.TrimSpace(r.URL.Query().Get(QueryAccessToken))
	}
	return ""
}

// parseBearer returns the token of a `Bearer <token>` credential, or "" for
// an empty header, another scheme or an empty token.
func parseBearer(h string) string {
	h = strings.TrimSpace(h)
	i := strings.IndexAny(h, " \t")
	if i < 0 || !strings.EqualFold(h[:i], "Bearer") {
		return ""
	}
	return strings.TrimSpace(h[i+1:])
}

// isEventStreamGET reports whether r is a GET whose Accept lists
// text/event-stream, which is what EventSource sends.
func isEventStreamGET(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	for _, v := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			mediaType, _, _ := strings.Cut(part, ";")
			if strings.EqualFold(strings.TrimSpace(mediaType), "text/event-stream") {
				return true
			}
		}
	}
	return false
}

// withoutQueryToken returns r, or a shallow copy whose URL lacks the
// access_token parameter. The copy has its own URL so the caller's request,
// which outer middleware may still log, is left as it came.
func withoutQueryToken(r *http.Request) *http.Request {
	if r.URL.RawQuery == "" {
		return r
	}
	// Parsed rather than searched for, so a percent-encoded name
	// (access%5Ftoken), which Query().Get decodes and accepts, is removed too.
	q := r.URL.Query()
	if !q.Has(QueryAccessToken) {
		return r
	}
	q.Del(QueryAccessToken)
	u := *r.URL
	u.RawQuery = q.Encode()
	r2 := r.WithContext(r.Context())
	r2.URL = &u
	r2.RequestURI = u.RequestURI()
	return r2
}

// sourceOf returns the trimmed, bounded X-Kanade-Source header.
func sourceOf(r *http.Request) string {
	s := strings.TrimSpace(r.Header.Get(HeaderSource))
	if len(s) > maxSourceLen {
		s = strings.ToValidUTF8(s[:maxSourceLen], "")
	}
	return s
}

// refuse writes the 401 (or 503). A 401's log line is at debug level
// because failed attempts are routine (expired sessions, scanners) and would
// drown the log at info; it carries the reason but never the presented
// token. A 503 is an outage of the operator store and is logged as one.
func (a *Authenticator) refuse(w http.ResponseWriter, r *http.Request, f *refusal) {
	if f.status != http.StatusUnauthorized {
		a.logger.ErrorContext(r.Context(), "API request not authenticated: operator store unavailable",
			"method", r.Method, "path", r.URL.Path, "err", f.cause)
		httpx.WriteJSON(w, f.status, httpx.ErrorBody{Error: f.msg})
		return
	}
	a.logger.DebugContext(r.Context(), "API request unauthorized",
		"method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "reason", f.msg)
	w.Header().Set("WWW-Authenticate", "Bearer")
	httpx.WriteJSON(w, http.StatusUnauthorized, httpx.ErrorBody{Error: f.msg})
}
