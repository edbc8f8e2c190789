package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"kanade-backend/http/httpx"
	"kanade-backend/http/server"
	"kanade-backend/messages"
)

type observed struct {
	mu     sync.Mutex
	routes []string
}

func newServer(t *testing.T, obs *observed) *httptest.Server {
	t.Helper()
	r := server.NewRouter()
	r.API("GET /api/things/{id}", func(w http.ResponseWriter, req *http.Request) error {
		switch req.PathValue("id") {
		case "boom":
			panic("handler bug")
		case "missing":
			return messages.NotFoundf("thing %q not found", req.PathValue("id"))
		}
		httpx.WriteJSON(w, 200, map[string]string{"id": req.PathValue("id")})
		return nil
	})
	r.Public("GET /", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("<html>dashboard</html>"))
	}))
	ts := httptest.NewServer(r.Handler(server.Options{Observe: func(m, p string, s int, _ time.Duration) {
		obs.mu.Lock()
		defer obs.mu.Unlock()
		obs.routes = append(obs.routes, p)
	}}))
	t.Cleanup(ts.Close)
	return ts
}

// send makes one request and returns the response and its whole body.
func send(t *testing.T, ts *httptest.Server, method, path string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, ts.URL+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

func TestRouterErrorsAreJSON(t *testing.T) {
	obs := &observed{}
	ts := newServer(t, obs)
	cases := []struct {
		method, path string
		status       int
		errContains  string
	}{
		{"GET", "/api/things/a", 200, ""},
		{"GET", "/api/things/missing", 404, `thing "missing" not found`},
		{"DELETE", "/api/things/a", 405, "method DELETE not allowed on /api/things/a"},
		{"GET", "/api/unknown", 404, "no API route GET /api/unknown"},
		{"GET", "/api/things/boom", 500, "internal error"},
	}
	for _, c := range cases {
		resp, body := send(t, ts, c.method, c.path)
		if resp.StatusCode != c.status {
			t.Errorf("%s %s: status %d want %d (%s)", c.method, c.path, resp.StatusCode, c.status, body)
			continue
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: content-type %q", c.method, c.path, ct)
		}
		if c.errContains != "" {
			var e httpx.ErrorBody
			if err := json.Unmarshal(body, &e); err != nil || !strings.Contains(e.Error, c.errContains) {
				t.Errorf("%s %s: body %s, want error containing %q", c.method, c.path, body, c.errContains)
			}
		}
	}
	// The dashboard still serves everything outside /api.
	resp, err := http.Get(ts.URL + "/agents/pc1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "dashboard") {
		t.Fatalf("dashboard route: %s", body)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.routes) == 0 || obs.routes[0] != "GET /api/things/{id}" {
		t.Fatalf("metrics observed %v, want route patterns (bounded label values)", obs.routes)
	}
}

func TestPatternsAreRecorded(t *testing.T) {
	r := server.NewRouter()
	r.API("POST /api/b", func(http.ResponseWriter, *http.Request) error { return nil })
	r.API("GET /api/a", func(http.ResponseWriter, *http.Request) error { return nil })
	got := strings.Join(r.Patterns(), ",")
	if got != "GET /api/a,POST /api/b" {
		t.Fatalf("patterns = %s", got)
	}
}

// Guard wraps every API route, knowing its pattern, inside the mux (so
// unknown paths and wrong methods keep their JSON 404/405) and leaves the
// public routes alone.
func TestGuardWrapsEachAPIRoute(t *testing.T) {
	r := server.NewRouter()
	r.API("GET /api/open/{id}", func(w http.ResponseWriter, _ *http.Request) error {
		httpx.WriteJSON(w, 200, "open")
		return nil
	})
	r.API("POST /api/closed", func(w http.ResponseWriter, _ *http.Request) error {
		httpx.WriteJSON(w, 200, "closed")
		return nil
	})
	r.Public("GET /", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("public")) }))
	var mu sync.Mutex
	var guarded []string
	ts := httptest.NewServer(r.Handler(server.Options{Guard: func(pattern string, h http.Handler) http.Handler {
		mu.Lock()
		guarded = append(guarded, pattern)
		mu.Unlock()
		if pattern == "POST /api/closed" {
			return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				httpx.WriteJSON(w, http.StatusForbidden, httpx.ErrorBody{Error: "no"})
			})
		}
		return h
	}}))
	t.Cleanup(ts.Close)
	for _, c := range []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", "/api/open/x", 200, `"open"`},
		{"POST", "/api/closed", 403, `{"error":"no"}`},
		{"GET", "/api/closed", 405, `{"error":"method GET not allowed on /api/closed (allowed: POST)"}`},
		{"GET", "/api/nothing", 404, `{"error":"no API route GET /api/nothing"}`},
		{"GET", "/", 200, "public"},
	} {
		resp, body := send(t, ts, c.method, c.path)
		if resp.StatusCode != c.status || strings.TrimSpace(string(body)) != c.body {
			t.Errorf("%s %s: %d %s; want %d %s", c.method, c.path, resp.StatusCode, body, c.status, c.body)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(guarded, ","); got != "GET /api/open/{id},POST /api/closed" {
		t.Fatalf("guarded %s; want exactly the two API routes", got)
	}
}

type ctxKey struct{}

// The auth middleware serves a copy of the request (WithContext), which the
// API mux then routes: the metrics still see each route's pattern, also for
// a request refused before routing; paths no route serves share one label.
func TestMetricsSeeRoutePatternsBehindAuth(t *testing.T) {
	r := server.NewRouter()
	r.API("GET /api/things/{id}", func(w http.ResponseWriter, _ *http.Request) error {
		httpx.WriteJSON(w, 200, "thing")
		return nil
	})
	r.API("POST /api/things", func(w http.ResponseWriter, _ *http.Request) error {
		httpx.WriteJSON(w, 201, "made")
		return nil
	})
	r.Public("GET /health", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	auth := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if req.Header.Get("X-Deny") != "" {
				httpx.WriteJSON(w, http.StatusUnauthorized, httpx.ErrorBody{Error: "who are you"})
				return
			}
			next.ServeHTTP(w, req.WithContext(context.WithValue(req.Context(), ctxKey{}, "principal")))
		})
	}
	var mu sync.Mutex
	var got []string
	ts := httptest.NewServer(r.Handler(server.Options{Auth: auth, Observe: func(m, p string, s int, _ time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, fmt.Sprintf("%s|%s|%d", m, p, s))
	}}))
	t.Cleanup(ts.Close)
	send(t, ts, "GET", "/api/things/a")
	send(t, ts, "GET", "/api/things/b")
	send(t, ts, "POST", "/api/things")
	req, _ := http.NewRequest("GET", ts.URL+"/api/things/c", nil)
	req.Header.Set("X-Deny", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	send(t, ts, "GET", "/api/nothing/here")
	send(t, ts, "DELETE", "/api/things/a")
	send(t, ts, "GET", "/health")
	mu.Lock()
	defer mu.Unlock()
	want := []string{
		"GET|GET /api/things/{id}|200", "GET|GET /api/things/{id}|200", "POST|POST /api/things|201",
		"GET|GET /api/things/{id}|401", "GET|unmatched|404", "DELETE|unmatched|405", "GET|GET /health|200",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("observed\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
