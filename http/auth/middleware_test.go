package auth

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"kanade-backend/http/httpx"
)

const (
	testStatic = "static-token-6c1d9e"
	testSecret = "jwt-secret-for-tests-0123456789abcdef"
)

// seen is what the wrapped handler reports about the request it received.
type seen struct {
	Subject    string `json:"subject"`
	Role       Role   `json:"role"`
	Source     string `json:"source"`
	RawQuery   string `json:"raw_query"`
	RequestURI string `json:"request_uri"`
}

// reqCase is one request against an authenticated server and its expected
// outcome: a 401 with wantErr as the exact message, or a 200 with the
// principal the handler saw.
type reqCase struct {
	name    string
	method  string // GET when empty
	query   string
	header  map[string]string
	wantErr string // exact 401 message; empty means 200 expected
	wantSub string
	wantSrc string
	// wantRole is checked when set.
	wantRole Role
}

// serve runs a real HTTP server whose /api handler reports the principal.
func serve(t *testing.T, a *Authenticator) *httptest.Server {
	t.Helper()
	h := a.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := PrincipalFrom(r.Context())
		if !ok {
			httpx.WriteJSON(w, http.StatusInternalServerError, httpx.ErrorBody{Error: "no principal in context"})
			return
		}
		httpx.WriteJSON(w, http.StatusOK, seen{
			Subject: p.Subject, Role: p.Role, Source: p.Source, RawQuery: r.URL.RawQuery, RequestURI: r.RequestURI,
		})
	}))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// run sends c to srv and checks status, body and headers.
func run(t *testing.T, srv *httptest.Server, c reqCase) seen {
	t.Helper()
	method := c.method
	if method == "" {
		method = http.MethodGet
	}
	url := srv.URL + "/api/things"
	if c.query != "" {
		url += "?" + c.query
	}
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}

	if c.wantErr != "" {
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d, body %s; want 401 %q", resp.StatusCode, body, c.wantErr)
		}
		if got := resp.Header.Get("WWW-Authenticate"); got != "Bearer" {
			t.Errorf("WWW-Authenticate = %q, want Bearer", got)
		}
		if got := resp.Header.Get("Content-Type"); got != "application/json" {
			t.Errorf("Content-Type = %q, want application/json", got)
		}
		want, _ := json.Marshal(httpx.ErrorBody{Error: c.wantErr})
		if strings.TrimSpace(string(body)) != string(want) {
			t.Fatalf("401 body = %s, want %s", body, want)
		}
		return seen{}
	}

	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, body %s; want 200", resp.StatusCode, body)
	}
	var s seen
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	if s.Subject != c.wantSub || s.Source != c.wantSrc {
		t.Fatalf("principal = {%q %q}, want {%q %q}", s.Subject, s.Source, c.wantSub, c.wantSrc)
	}
	if c.wantRole != "" && s.Role != c.wantRole {
		t.Fatalf("principal %q has role %q, want %q", s.Subject, s.Role, c.wantRole)
	}
	return s
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

// sign makes a JWT; key is a []byte secret, an RSA key, or
// jwt.UnsafeAllowNoneSignatureType for alg none.
func sign(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", m.Alg(), err)
	}
	return s
}

// claims returns valid claims for subject alice, minus the keys in drop, with
// the overrides applied.
func claims(overrides jwt.MapClaims, drop ...string) jwt.MapClaims {
	c := jwt.MapClaims{
		"sub": "alice",
		"aud": "kanade",
		"exp": time.Now().Add(time.Hour).Unix(),
		"iat": time.Now().Unix(),
	}
	for k, v := range overrides {
		c[k] = v
	}
	for _, k := range drop {
		delete(c, k)
	}
	return c
}

// newAuth builds an Authenticator whose log the test checks for tokens.
func newAuth(t *testing.T, cfg Config) *Authenticator {
	t.Helper()
	logger, logs := testLogger()
	a, err := New(cfg, filepath.Join(t.TempDir(), "data"), logger)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		for _, secret := range []string{testStatic, testSecret, a.Token()} {
			if secret != "" && strings.Contains(logs.String(), secret) {
				t.Errorf("log contains a token or secret:\n%s", logs)
			}
		}
	})
	return a
}

// missingBearerCases are the requests that carry no usable bearer token,
// rejected alike in every mode that checks tokens.
var missingBearerCases = []reqCase{
	{name: "no header", wantErr: msgMissingBearer},
	{name: "basic scheme", header: map[string]string{"Authorization": "Basic YWRtaW46cGFzcw=="}, wantErr: msgMissingBearer},
	{name: "scheme only", header: map[string]string{"Authorization": "Bearer"}, wantErr: msgMissingBearer},
	{name: "empty token", header: map[string]string{"Authorization": "Bearer    "}, wantErr: msgMissingBearer},
	{name: "token without scheme", header: map[string]string{"Authorization": testStatic}, wantErr: msgMissingBearer},
	{name: "bearer prefix glued", header: map[string]string{"Authorization": "Bearer" + testStatic}, wantErr: msgMissingBearer},
}

func TestMiddlewareStatic(t *testing.T) {
	// The JWT secret is set too: static takes precedence and JWTs are not
	// tried, so a valid JWT must be refused.
	a := newAuth(t, Config{StaticToken: testStatic, JWTSecret: testSecret})
	if a.Mode() != ModeStatic {
		t.Fatalf("Mode() = %q, want static", a.Mode())
	}
	srv := serve(t, a)
	validJWT := sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims(nil))

	cases := append([]reqCase{
		{name: "valid", header: bearer(testStatic), wantSub: SubjectAdmin, wantRole: RoleAdmin},
		{name: "valid with source", header: map[string]string{"Authorization": "Bearer " + testStatic, HeaderSource: "cli"}, wantSub: SubjectAdmin, wantSrc: "cli"},
		{name: "lowercase scheme", header: map[string]string{"Authorization": "bearer " + testStatic}, wantSub: SubjectAdmin},
		{name: "uppercase scheme, extra spaces", header: map[string]string{"Authorization": "  BEARER   " + testStatic + "  "}, wantSub: SubjectAdmin},
		{name: "tab separator", header: map[string]string{"Authorization": "Bearer\t" + testStatic}, wantSub: SubjectAdmin},
		{name: "wrong token", header: bearer("nope"), wantErr: msgInvalidStatic},
		{name: "prefix of token", header: bearer(testStatic[:len(testStatic)-1]), wantErr: msgInvalidStatic},
		{name: "token with suffix", header: bearer(testStatic + "x"), wantErr: msgInvalidStatic},
		{name: "valid JWT not tried", header: bearer(validJWT), wantErr: msgInvalidStatic},
	}, missingBearerCases...)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { run(t, srv, c) })
	}
}

func TestMiddlewareGenerated(t *testing.T) {
	a := newAuth(t, Config{})
	if a.Mode() != ModeGenerated {
		t.Fatalf("Mode() = %q, want generated", a.Mode())
	}
	srv := serve(t, a)
	validJWT := sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims(nil))

	cases := append([]reqCase{
		{name: "valid", header: map[string]string{"Authorization": "Bearer " + a.Token(), HeaderSource: "dashboard"}, wantSub: SubjectAdmin, wantSrc: "dashboard", wantRole: RoleAdmin},
		{name: "lowercase scheme", header: map[string]string{"Authorization": "bearer " + a.Token()}, wantSub: SubjectAdmin},
		{name: "wrong token", header: bearer(testStatic), wantErr: msgInvalidStatic},
		{name: "JWT not tried", header: bearer(validJWT), wantErr: msgInvalidStatic},
	}, missingBearerCases...)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { run(t, srv, c) })
	}
}

func TestMiddlewareJWT(t *testing.T) {
	a := newAuth(t, Config{JWTSecret: testSecret})
	if a.Mode() != ModeJWT {
		t.Fatalf("Mode() = %q, want jwt", a.Mode())
	}
	srv := serve(t, a)
	secret := []byte(testSecret)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()

	cases := append([]reqCase{
		{name: "valid", header: map[string]string{
			"Authorization": "Bearer " + sign(t, jwt.SigningMethodHS256, secret, claims(nil)), HeaderSource: "cli",
		}, wantSub: "alice", wantSrc: "cli", wantRole: RoleAdmin},
		{name: "lowercase scheme", header: map[string]string{
			"Authorization": "bearer  " + sign(t, jwt.SigningMethodHS256, secret, claims(nil)),
		}, wantSub: "alice"},
		{name: "aud list containing kanade", header: bearer(sign(t, jwt.SigningMethodHS256, secret,
			claims(jwt.MapClaims{"aud": []string{"other", "kanade"}}))), wantSub: "alice"},
		{name: "expired within leeway", header: bearer(sign(t, jwt.SigningMethodHS256, secret,
			claims(jwt.MapClaims{"exp": now.Add(-10 * time.Second).Unix()}))), wantSub: "alice"},

		{name: "not a JWT", header: bearer("not-a-jwt"), wantErr: "invalid token: token is malformed"},
		{name: "static-looking token", header: bearer(testStatic), wantErr: "invalid token: token is malformed"},
		{name: "alg none", header: bearer(sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil))),
			wantErr: "invalid token: signing method none is invalid"},
		{name: "HS384 with the right secret", header: bearer(sign(t, jwt.SigningMethodHS384, secret, claims(nil))),
			wantErr: "invalid token: signing method HS384 is invalid"},
		{name: "HS512 with the right secret", header: bearer(sign(t, jwt.SigningMethodHS512, secret, claims(nil))),
			wantErr: "invalid token: signing method HS512 is invalid"},
		{name: "RS256", header: bearer(sign(t, jwt.SigningMethodRS256, rsaKey, claims(nil))),
			wantErr: "invalid token: signing method RS256 is invalid"},
		{name: "unknown alg", header: bearer(forgeAlg(t, "XX999")),
			wantErr: "invalid token: unsupported signing method"},
		{name: "wrong secret", header: bearer(sign(t, jwt.SigningMethodHS256, []byte("some-other-secret-0123456789abcdef"), claims(nil))),
			wantErr: "invalid token: token signature is invalid"},
		{name: "expired", header: bearer(sign(t, jwt.SigningMethodHS256, secret,
			claims(jwt.MapClaims{"exp": now.Add(-time.Hour).Unix()}))), wantErr: "invalid token: token is expired"},
		{name: "expired beyond leeway", header: bearer(sign(t, jwt.SigningMethodHS256, secret,
			claims(jwt.MapClaims{"exp": now.Add(-2 * time.Minute).Unix()}))), wantErr: "invalid token: token is expired"},
		{name: "not valid yet", header: bearer(sign(t, jwt.SigningMethodHS256, secret,
			claims(jwt.MapClaims{"nbf": now.Add(time.Hour).Unix()}))), wantErr: "invalid token: token is not valid yet"},
		{name: "missing exp", header: bearer(sign(t, jwt.SigningMethodHS256, secret, claims(nil, "exp"))),
			wantErr: "invalid token: missing exp claim"},
		{name: "missing sub", header: bearer(sign(t, jwt.SigningMethodHS256, secret, claims(nil, "sub"))),
			wantErr: "invalid token: missing sub claim"},
		{name: "empty sub", header: bearer(sign(t, jwt.SigningMethodHS256, secret, claims(jwt.MapClaims{"sub": ""}))),
			wantErr: "invalid token: missing sub claim"},
		{name: "wrong aud", header: bearer(sign(t, jwt.SigningMethodHS256, secret, claims(jwt.MapClaims{"aud": "other"}))),
			wantErr: "invalid token: aud claim must include kanade"},
		{name: "aud list without kanade", header: bearer(sign(t, jwt.SigningMethodHS256, secret,
			claims(jwt.MapClaims{"aud": []string{"a", "b"}}))), wantErr: "invalid token: aud claim must include kanade"},
		{name: "missing aud", header: bearer(sign(t, jwt.SigningMethodHS256, secret, claims(nil, "aud"))),
			wantErr: "invalid token: missing aud claim"},
	}, missingBearerCases...)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { run(t, srv, c) })
	}
}

// forgeAlg builds a token whose header names alg, which jwt/v5 cannot sign.
func forgeAlg(t *testing.T, alg string) string {
	t.Helper()
	valid := sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims(nil))
	parts := strings.Split(valid, ".")
	hdr, _ := json.Marshal(map[string]string{"alg": alg, "typ": "JWT"})
	return base64.RawURLEncoding.EncodeToString(hdr) + "." + parts[1] + "." + parts[2]
}

func TestMiddlewareDisabled(t *testing.T) {
	srv := serve(t, newAuth(t, Config{Disable: true, StaticToken: testStatic}))
	for _, c := range []reqCase{
		{name: "no header", wantSub: SubjectAnonymous, wantRole: RoleAdmin},
		{name: "source kept", header: map[string]string{HeaderSource: "  cli  "}, wantSub: SubjectAnonymous, wantSrc: "cli"},
		{name: "any token ignored", header: bearer("whatever"), wantSub: SubjectAnonymous},
		{name: "POST", method: http.MethodPost, wantSub: SubjectAnonymous},
	} {
		t.Run(c.name, func(t *testing.T) { run(t, srv, c) })
	}
}

// TestDisableFalseValuesKeepAuth drives the whole path from environment to
// response: values upstream treated as "disable" must leave the API closed.
func TestDisableFalseValuesKeepAuth(t *testing.T) {
	for _, v := range []string{"0", "false", "FALSE", "no", "", " "} {
		t.Run(v, func(t *testing.T) {
			cfg, err := ConfigFromEnv(func(k string) string {
				if k == EnvDisable {
					return v
				}
				return ""
			})
			if err != nil {
				t.Fatalf("ConfigFromEnv: %v", err)
			}
			a := newAuth(t, cfg)
			if a.Mode() != ModeGenerated {
				t.Fatalf("%s=%q: Mode() = %q, want generated", EnvDisable, v, a.Mode())
			}
			run(t, serve(t, a), reqCase{name: "no header", wantErr: msgMissingBearer})
		})
	}
}

func TestMiddlewareEventStreamQueryToken(t *testing.T) {
	sse := "text/event-stream"
	static := serve(t, newAuth(t, Config{StaticToken: testStatic}))
	jwtSrv := serve(t, newAuth(t, Config{JWTSecret: testSecret}))
	validJWT := sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims(nil))

	tests := []struct {
		srv       *httptest.Server
		c         reqCase
		wantQuery string // the query the handler sees, without the token
	}{
		{srv: static, c: reqCase{name: "static: GET event-stream", query: "access_token=" + testStatic,
			header: map[string]string{"Accept": sse}, wantSub: SubjectAdmin}},
		{srv: static, c: reqCase{name: "static: other params kept", query: "topic=results&access_token=" + testStatic,
			header: map[string]string{"Accept": sse, HeaderSource: "dashboard"}, wantSub: SubjectAdmin, wantSrc: "dashboard"},
			wantQuery: "topic=results"},
		{srv: static, c: reqCase{name: "static: event-stream among types", query: "access_token=" + testStatic,
			header: map[string]string{"Accept": "application/json;q=0.5, Text/Event-Stream; q=0.9"}, wantSub: SubjectAdmin}},
		{srv: static, c: reqCase{name: "static: percent-encoded name", query: "access%5Ftoken=" + testStatic,
			header: map[string]string{"Accept": sse}, wantSub: SubjectAdmin}},
		{srv: static, c: reqCase{name: "static: beside a proxy's Basic auth", query: "access_token=" + testStatic,
			header: map[string]string{"Accept": sse, "Authorization": "Basic YWRtaW46cGFzcw=="}, wantSub: SubjectAdmin}},
		{srv: static, c: reqCase{name: "static: header wins over query", query: "access_token=wrong",
			header: map[string]string{"Accept": sse, "Authorization": "Bearer " + testStatic}, wantSub: SubjectAdmin}},
		{srv: static, c: reqCase{name: "static: wrong query token", query: "access_token=wrong",
			header: map[string]string{"Accept": sse}, wantErr: msgInvalidStatic}},
		{srv: static, c: reqCase{name: "static: empty query token", query: "access_token=",
			header: map[string]string{"Accept": sse}, wantErr: msgMissingBearer}},
		{srv: static, c: reqCase{name: "static: GET JSON", query: "access_token=" + testStatic,
			header: map[string]string{"Accept": "application/json"}, wantErr: msgMissingBearer}},
		{srv: static, c: reqCase{name: "static: GET no Accept", query: "access_token=" + testStatic,
			wantErr: msgMissingBearer}},
		{srv: static, c: reqCase{name: "static: GET any type", query: "access_token=" + testStatic,
			header: map[string]string{"Accept": "*/*"}, wantErr: msgMissingBearer}},
		{srv: static, c: reqCase{name: "static: POST event-stream", method: http.MethodPost, query: "access_token=" + testStatic,
			header: map[string]string{"Accept": sse}, wantErr: msgMissingBearer}},
		{srv: static, c: reqCase{name: "static: DELETE event-stream", method: http.MethodDelete, query: "access_token=" + testStatic,
			header: map[string]string{"Accept": sse}, wantErr: msgMissingBearer}},
		{srv: jwtSrv, c: reqCase{name: "jwt: GET event-stream", query: "access_token=" + validJWT,
			header: map[string]string{"Accept": sse}, wantSub: "alice"}},
		{srv: jwtSrv, c: reqCase{name: "jwt: GET JSON", query: "access_token=" + validJWT,
			header: map[string]string{"Accept": "application/json"}, wantErr: msgMissingBearer}},
	}
	for _, tt := range tests {
		t.Run(tt.c.name, func(t *testing.T) {
			s := run(t, tt.srv, tt.c)
			if tt.c.wantErr != "" {
				return
			}
			// Handlers and their loggers must never see the token.
			if s.RawQuery != tt.wantQuery {
				t.Errorf("handler saw query %q, want %q", s.RawQuery, tt.wantQuery)
			}
			if strings.Contains(s.RequestURI, "token") {
				t.Errorf("handler saw RequestURI %q carrying the token", s.RequestURI)
			}
		})
	}
}

func TestMiddlewareSourceBounded(t *testing.T) {
	srv := serve(t, newAuth(t, Config{Disable: true}))
	long := strings.Repeat("é", maxSourceLen) // 2 bytes each: the cut falls mid-rune
	run(t, srv, reqCase{name: "long source", header: map[string]string{HeaderSource: long},
		wantSub: SubjectAnonymous, wantSrc: strings.Repeat("é", maxSourceLen/2)})
}

func TestPrincipalContext(t *testing.T) {
	if _, ok := PrincipalFrom(t.Context()); ok {
		t.Fatal("PrincipalFrom on a bare context reported a principal")
	}
	want := Principal{Subject: "scheduler", Source: "internal"}
	got, ok := PrincipalFrom(WithPrincipal(t.Context(), want))
	if !ok || got != want {
		t.Fatalf("PrincipalFrom(WithPrincipal(p)) = %+v, %v; want %+v", got, ok, want)
	}
}
