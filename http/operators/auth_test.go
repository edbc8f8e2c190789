package operators_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"kanade-backend/http/auth"
	"kanade-backend/http/operators"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

// authServer serves a handler that echoes the principal behind the auth
// middleware of mode, with operator tokens looked up in a real store.
func authServer(t *testing.T, cfg auth.Config, store *operators.Store, logs *bytes.Buffer) (*auth.Authenticator, *httptest.Server) {
	t.Helper()
	cfg.Operators = store
	a, err := auth.New(cfg, filepath.Join(t.TempDir(), "data"), slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := auth.PrincipalFrom(r.Context())
		_, _ = io.WriteString(w, p.Subject+" "+string(p.Role))
	})))
	t.Cleanup(srv.Close)
	return a, srv
}

func get(t *testing.T, srv *httptest.Server, tok string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", srv.URL+"/api/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// Operator tokens work beside the static token and beside JWTs, with their
// operator's name and role; unknown and revoked ones are refused with
// their reason; a store that cannot answer is a 503, not a 401; and no
// token ever reaches the log.
func TestOperatorTokensInEveryMode(t *testing.T) {
	storagetest.ForEachDialect(t, testOperatorTokensInEveryMode)
}

func testOperatorTokensInEveryMode(t *testing.T, st *storage.Store) {
	ctx := context.Background()
	store := operators.NewStore(st, nil)
	_, carol, err := store.Create(ctx, "carol", auth.RoleOperator, "admin")
	if err != nil {
		t.Fatal(err)
	}
	_, dave, err := store.Create(ctx, "dave", auth.RoleViewer, "admin")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := store.Update(ctx, "dave", operators.Change{Revoke: true}, "admin", false); err != nil {
		t.Fatal(err)
	}
	unknown, _ := auth.NewOperatorToken()
	var logs bytes.Buffer
	const static = "static-token-4b1e"

	for _, cfg := range []auth.Config{{StaticToken: static}, {JWTSecret: "jwt-secret-for-tests-0123456789abcdef"}} {
		_, srv := authServer(t, cfg, store, &logs)
		for _, c := range []struct {
			tok    string
			status int
			body   string
		}{
			{carol, 200, "carol operator"},
			{dave, 401, `{"error":"invalid token: operator token revoked"}`},
			{unknown, 401, `{"error":"invalid token: unknown operator token"}`},
		} {
			if status, body := get(t, srv, c.tok); status != c.status || body != c.body {
				t.Errorf("%+v: %d %s; want %d %s", cfg, status, body, c.status, c.body)
			}
		}
	}
	_, srv := authServer(t, auth.Config{StaticToken: static}, store, &logs)
	if status, body := get(t, srv, static); status != 200 || body != "admin admin" {
		t.Errorf("static token: %d %s", status, body)
	}
	if status, body := get(t, srv, "not-the-static-token"); status != 401 || body != `{"error":"invalid static token"}` {
		t.Errorf("wrong static token: %d %s", status, body)
	}

	// The store fails: 503, and the reason goes to the log only.
	if _, err := st.W.ExecContext(ctx, "ALTER TABLE operators RENAME TO operators_gone"); err != nil {
		t.Fatal(err)
	}
	if status, body := get(t, srv, carol); status != 503 || body != `{"error":"cannot check the operator token now; try again"}` {
		t.Errorf("store unavailable: %d %s", status, body)
	}
	if !strings.Contains(logs.String(), "operator store unavailable") {
		t.Errorf("the outage is not logged:\n%s", logs.String())
	}
	for _, tok := range []string{carol, dave, unknown, static} {
		if strings.Contains(logs.String(), tok) {
			t.Fatalf("log contains a token:\n%s", logs.String())
		}
	}
}

// In generated mode the token file's token is looked up in the store like
// an operator's, so the operator admin's role and revocation apply to it.
// A token file from before the prefix existed still works.
func TestGeneratedTokenGoesThroughTheStore(t *testing.T) {
	ctx := context.Background()
	store := operators.NewStore(storagetest.Open(t), nil)
	var logs bytes.Buffer
	a, srv := authServer(t, auth.Config{}, store, &logs)
	if status, body := get(t, srv, a.Token()); status != 401 || body != `{"error":"invalid token: unknown operator token"}` {
		t.Fatalf("generated token before Bootstrap: %d %s", status, body)
	}
	if err := store.Bootstrap(ctx, a.Token(), nil); err != nil {
		t.Fatal(err)
	}
	if status, body := get(t, srv, a.Token()); status != 200 || body != "admin admin" {
		t.Fatalf("generated token: %d %s", status, body)
	}
	if _, _, _, err := store.Update(ctx, "admin", operators.Change{Role: auth.RoleViewer}, "admin", false); err != nil {
		t.Fatal(err)
	}
	if status, body := get(t, srv, a.Token()); status != 200 || body != "admin viewer" {
		t.Fatalf("demoted generated token: %d %s", status, body)
	}
	// Bootstrap again with the same token (a restart) keeps the demotion.
	if err := store.Bootstrap(ctx, a.Token(), nil); err != nil {
		t.Fatal(err)
	}
	if _, body := get(t, srv, a.Token()); body != "admin viewer" {
		t.Fatalf("after a restart: %s", body)
	}

	// A hand-written token without the prefix, as older versions generated.
	legacy := "hand-written-legacy-token-0123456789abcdefghij"
	if err := store.Bootstrap(ctx, legacy, nil); err != nil {
		t.Fatal(err)
	}
	if status, body := get(t, srv, legacy); status != 200 || body != "admin admin" {
		t.Fatalf("legacy token: %d %s", status, body)
	}
	if status, body := get(t, srv, "wrong-legacy-token"); status != 401 || body != `{"error":"invalid static token"}` {
		t.Fatalf("wrong token without prefix: %d %s", status, body)
	}
}

// The lookup every authenticated request makes is one index search.
func TestTokenLookupUsesTheIndex(t *testing.T) {
	st := storagetest.Open(t)
	var id, parent, notused int
	var plan string
	if err := st.R.QueryRowContext(context.Background(), "EXPLAIN QUERY PLAN "+operators.TokenLookup, auth.TokenHash("x")).
		Scan(&id, &parent, &notused, &plan); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(plan, "USING INDEX operators_token_hash") {
		t.Fatalf("plan %q does not use operators_token_hash", plan)
	}
}
