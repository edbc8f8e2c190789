// Package assets embeds the operator dashboard and serves it: a single-page
// application of hand-written ES modules and CSS under web/, with no build
// step and nothing fetched from the network at run time, so `go run` and an
// air-gapped install show the same dashboard. The handler serves index.html
// for every non-API path (client-side routes survive a reload) and the
// static files under a content-versioned prefix, so browsers may cache them
// for good and still pick up a new binary's files at once.
package assets

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"sort"
	"strings"
	"time"
)

//go:embed web
var embedded embed.FS

// staticPrefix is where the files of web/ are served. index.html names them
// as "/static/_/…"; the handler rewrites "_" to the content version.
const staticPrefix = "/static/"

// placeholder is the version segment written in index.html.
const placeholder = staticPrefix + "_/"

// contentTypes is explicit rather than mime.TypeByExtension because the
// latter consults the host's /etc/mime.types, and a JavaScript module served
// with the wrong type is refused by the browser.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".json": "application/json",
}

// securityHeaders lock the page to its own origin: no inline script, no
// third-party anything, no framing. The token lives in the page, so an
// injected script or a clickjacking frame would be a full compromise.
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
	"X-Content-Type-Options": "nosniff",
	"Referrer-Policy":        "no-referrer",
	"X-Frame-Options":        "DENY",
}

type file struct {
	body        []byte
	contentType string
	etag        string
}

// Site is the loaded dashboard; build it once with New.
type Site struct {
	version string
	index   file
	files   map[string]file // by path relative to web/, e.g. "js/main.js"
}

// New loads the embedded files and computes the content version.
func New() (*Site, error) { return load(embedded) }

// Handler returns the dashboard handler. It panics if the embedded files are
// unusable, which only a broken build can cause.
func Handler() http.Handler {
	s, err := New()
	if err != nil {
		panic(err)
	}
	return s
}

func load(fsys fs.FS) (*Site, error) {
	root, err := fs.Sub(fsys, "web")
	if err != nil {
		return nil, err
	}
	s := &Site{files: map[string]file{}}
	var names []string
	err = fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(root, p)
		if err != nil {
			return err
		}
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			return fmt.Errorf("assets: no content type for %s", p)
		}
		s.files[p] = file{body: b, contentType: ct, etag: etag(b)}
		names = append(names, p)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("assets: load: %w", err)
	}
	idx, ok := s.files["index.html"]
	if !ok {
		return nil, fmt.Errorf("assets: web/index.html missing")
	}
	// The version covers every file, so any change to any module yields new
	// URLs for all of them; relative imports between modules inherit the
	// prefix, so index.html is the only file that needs rewriting.
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%s\x00%s\x00", n, s.files[n].etag)
	}
	s.version = hex.EncodeToString(h.Sum(nil))[:12]
	body := bytes.ReplaceAll(idx.body, []byte(placeholder), []byte(staticPrefix+s.version+"/"))
	s.index = file{body: body, contentType: idx.contentType, etag: etag(body)}
	return s, nil
}

func etag(b []byte) string {
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:])[:20] + `"`
}

// Version is the content version in the static URLs.
func (s *Site) Version() string { return s.version }

// ServeHTTP serves static files under /static/<version>/ and index.html for
// every other path. /api is never answered here: the router sends /api/ to
// the API mux, and the bare /api gets the API's JSON 404 rather than a page.
func (s *Site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/api" || strings.HasPrefix(r.URL.Path, "/api/") {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, "{\"error\":%q}\n", "no API route "+r.Method+" "+r.URL.Path)
		return
	}
	for k, v := range securityHeaders {
		w.Header().Set(k, v)
	}
	if rest, ok := strings.CutPrefix(r.URL.Path, staticPrefix); ok {
		s.serveStatic(w, r, rest)
		return
	}
	// index.html must be revalidated on every load: it names the versioned
	// files, so a stale copy would keep a browser on an old dashboard.
	w.Header().Set("Cache-Control", "no-cache")
	s.serve(w, r, s.index)
}

func (s *Site) serveStatic(w http.ResponseWriter, r *http.Request, rest string) {
	version, name, _ := strings.Cut(rest, "/")
	f, ok := s.files[name]
	if !ok || name == "index.html" {
		// A missing module must fail loudly as a 404, not as index.html
		// served where JavaScript was expected.
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	if version == s.version {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		// An old page still asking for its version's files gets today's,
		// but must not keep them.
		w.Header().Set("Cache-Control", "no-cache")
	}
	s.serve(w, r, f)
}

func (s *Site) serve(w http.ResponseWriter, r *http.Request, f file) {
	w.Header().Set("Content-Type", f.contentType)
	w.Header().Set("ETag", f.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
}
