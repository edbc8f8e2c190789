package auth

import (
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
// the response is 401 with `WWW-Authenticate: Bearer` and a JSON error body,
// and next is not called.
func (a *Authenticator) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := tokenFromRequest(r)
		// Whatever happens next, the rest of the stack must not see a token
		// in the URL: handlers and loggers print URLs freely.
		r = withoutQueryToken(r)

		p, failure := a.authenticate(tok)
		if failure != "" {
			a.unauthorized(w, r, failure)
			return
		}
		p.Source = sourceOf(r)
		next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
	})
}

// authenticate checks tok in the Authenticator's mode and returns the
// principal, or the 401 message when tok is not accepted.
func (a *Authenticator) authenticate(tok string) (Principal, string) {
	if a.mode == ModeDisabled {
		return Principal{Subject: SubjectAnonymous}, ""
	}
	if tok == "" {
		return Principal{}, msgMissingBearer
	}
	switch a.mode {
	case ModeStatic, ModeGenerated:
		// JWTs are deliberately not tried here: a configured static token
		// is the only credential, so a leaked or weak JWT secret elsewhere
		// cannot open this API.
		if !tokensEqual(tok, a.token) {
			return Principal{}, msgInvalidStatic
		}
		return Principal{Subject: SubjectAdmin}, ""
	case ModeJWT:
		sub, reason := a.verifyJWT(tok)
		if reason != "" {
			return Principal{}, msgInvalidJWT + reason
		}
		return Principal{Subject: sub}, ""
	}
	// Unreachable for an Authenticator built by New; fail closed for a zero
	// value rather than let requests through.
	return Principal{}, msgMissingBearer
}

// tokensEqual compares in constant time so response timing does not reveal
// how much of a guess was right. Hashing first makes the comparison
// fixed-length too, so timing does not reveal the token's length either.
func tokensEqual(got, want string) bool {
	g := sha256.Sum256([]byte(got))
	w := sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// verifyJWT returns the token's subject, or a short reason it was rejected.
func (a *Authenticator) verifyJWT(tok string) (string, string) {
	var claims jwt.RegisteredClaims
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
		return "", jwtReason(err, parsed, &claims)
	}
	// jwt/v5 can only require sub to equal a fixed value; any subject will
	// do here, but there must be one to attribute the audit trail to.
	if claims.Subject == "" {
		return "", "missing sub claim"
	}
	return claims.Subject, ""
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

// unauthorized writes the 401. The log line is at debug level because
// failed attempts are routine (expired sessions, scanners) and would drown
// the log at info; it carries the reason but never the presented token.
func (a *Authenticator) unauthorized(w http.ResponseWriter, r *http.Request, msg string) {
	a.logger.DebugContext(r.Context(), "API request unauthorized",
		"method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "reason", msg)
	w.Header().Set("WWW-Authenticate", "Bearer")
	httpx.WriteJSON(w, http.StatusUnauthorized, httpx.ErrorBody{Error: msg})
}
