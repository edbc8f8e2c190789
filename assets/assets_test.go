package assets_test

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"kanade-backend/internal/apptest"
)

// TestServing checks the dashboard's HTTP contract through the whole
// backend router: index.html for client routes, versioned static files
// with their types and cache headers, and /api never answered with HTML.
func TestServing(t *testing.T) {
	b := apptest.Start(t)
	get := func(path string, hdr ...string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", b.URL+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := b.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}

	resp, index := get("/")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if resp.Header.Get("Cache-Control") != "no-cache" {
		t.Errorf("index Cache-Control = %q, want no-cache", resp.Header.Get("Cache-Control"))
	}
	if !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Errorf("index lacks the CSP: %q", resp.Header.Get("Content-Security-Policy"))
	}
	m := regexp.MustCompile(`/static/([0-9a-f]{12})/js/main\.js`).FindStringSubmatch(index)
	if m == nil {
		t.Fatalf("index.html does not name a versioned main.js:\n%s", index)
	}
	version := m[1]

	// Client-side routes, including deep ones, serve the same page.
	for _, p := range []string{"/agents", "/agents/pc-001", "/executions/abc", "/no/such/page"} {
		resp, body := get(p)
		if resp.StatusCode != 200 || body != index {
			t.Errorf("GET %s = %d, want index.html", p, resp.StatusCode)
		}
	}

	for _, tc := range []struct{ path, ctype string }{
		{"/static/" + version + "/js/main.js", "text/javascript; charset=utf-8"},
		{"/static/" + version + "/app.css", "text/css; charset=utf-8"},
		{"/static/" + version + "/favicon.svg", "image/svg+xml"},
	} {
		resp, _ := get(tc.path)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != tc.ctype {
			t.Errorf("GET %s = %d %q, want 200 %q", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), tc.ctype)
		}
		if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "immutable") {
			t.Errorf("GET %s Cache-Control = %q, want immutable", tc.path, cc)
		}
		etag := resp.Header.Get("ETag")
		if again, _ := get(tc.path, "If-None-Match", etag); etag == "" || again.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with If-None-Match %q = %d, want 304", tc.path, etag, again.StatusCode)
		}
	}

	// Another version's URL still works but must not be cached for good.
	if resp, _ := get("/static/0123456789ab/js/main.js"); resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Errorf("old-version static = %d %q", resp.StatusCode, resp.Header.Get("Cache-Control"))
	}
	// A missing module is a 404, never index.html with a JavaScript URL.
	if resp, _ := get("/static/" + version + "/js/missing.js"); resp.StatusCode != 404 {
		t.Errorf("missing static = %d, want 404", resp.StatusCode)
	}

	// /api paths never fall through to the dashboard.
	for _, p := range []string{"/api/no-such-route", "/api"} {
		resp, body := get(p, "Authorization", "Bearer "+apptest.Token)
		if resp.StatusCode == 200 || strings.Contains(body, "<html") {
			t.Errorf("GET %s = %d %q, want a JSON error", p, resp.StatusCode, body)
		}
	}
	// /health keeps its own handler.
	if resp, body := get("/health"); resp.StatusCode != 200 || body != "ok" {
		t.Errorf("GET /health = %d %q", resp.StatusCode, body)
	}
}
