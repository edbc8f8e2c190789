package openapi_test

import (
	"bytes"
	"sort"
	"strings"
	"testing"

	"kanade-backend/http/openapi"
	"kanade-backend/internal/apptest"
)

// apiPattern reports whether a registered pattern belongs to the documented
// API: every /api route plus /health and /metrics. The dashboard's static
// files are served on the same router but are not an API.
func apiPattern(path string) bool {
	return strings.HasPrefix(path, "/api/") || path == "/health" || path == "/metrics"
}

// Every route registered on a whole backend's router is documented (strict:
// a route added without documentation fails here), and documented
// operations that no branch has registered yet are listed.
func TestEveryRouteIsDocumented(t *testing.T) {
	b := apptest.Start(t)
	d := loadDocument(t)
	documented := map[string]bool{}
	for _, op := range d.ops {
		documented[op.Method+" "+normalize(op.Path)] = true
	}

	registered := map[string]bool{}
	var undocumented, notAPI []string
	for _, p := range b.Router.Patterns() {
		method, path, hasMethod := strings.Cut(p, " ")
		if !hasMethod {
			method, path = "", p
		}
		if !apiPattern(path) {
			notAPI = append(notAPI, p)
			continue
		}
		key := method + " " + normalize(path)
		registered[key] = true
		if method == "" {
			// A pattern without a method serves every method; document at
			// least one.
			ok := false
			for k := range documented {
				if strings.HasSuffix(k, " "+normalize(path)) {
					ok = true
				}
			}
			if !ok {
				undocumented = append(undocumented, p)
			}
			continue
		}
		if !documented[key] {
			undocumented = append(undocumented, p)
		}
	}
	if len(undocumented) > 0 {
		t.Errorf("routes registered but not in http/openapi/openapi.yaml (document them):\n  %s", strings.Join(undocumented, "\n  "))
	}
	if len(notAPI) > 0 {
		t.Logf("non-API routes (dashboard files), not checked: %s", strings.Join(notAPI, ", "))
	}

	var pending []string
	for _, op := range d.ops {
		if !registered[op.Method+" "+normalize(op.Path)] {
			pending = append(pending, op.key())
		}
	}
	sort.Strings(pending)
	t.Logf("%d documented operations, %d registered; not yet registered on this branch (%d):\n  %s",
		len(d.ops), len(d.ops)-len(pending), len(pending), strings.Join(pending, "\n  "))
}

func TestServedDocument(t *testing.T) {
	b := apptest.Start(t)
	resp, body := b.Do(t, "GET", "/api/openapi.json", nil)
	want, err := openapi.JSON()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || !bytes.Equal(body, want) {
		t.Fatalf("%d %s: %.200s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}
