package openapi_test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"kanade-backend/http/openapi"
)

// operation is what the tests need to know about one documented operation.
type operation struct {
	Method string // upper case
	Path   string // as documented, e.g. /api/results/{request_id}
	Params []param
	// Bodies are the request body media types, if any.
	Bodies []string
	// Statuses are the documented response codes.
	Statuses map[int]bool
}

type param struct {
	Name, In string
	Type     string // integer, boolean, string
	Enum     []string
}

// document is the parsed document and its operations, sorted.
type document struct {
	raw map[string]any
	ops []operation
}

func loadDocument(t testing.TB) document {
	t.Helper()
	b, err := openapi.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	d := document{raw: raw}
	paths, _ := raw["paths"].(map[string]any)
	for path, v := range paths {
		item := v.(map[string]any)
		shared := d.params(t, item["parameters"])
		for _, m := range []string{"get", "put", "post", "delete", "patch", "head", "options"} {
			o, ok := item[m].(map[string]any)
			if !ok {
				continue
			}
			op := operation{Method: strings.ToUpper(m), Path: path, Statuses: map[int]bool{}}
			op.Params = append(append(op.Params, shared...), d.params(t, o["parameters"])...)
			if rb, ok := o["requestBody"].(map[string]any); ok {
				for mt := range rb["content"].(map[string]any) {
					op.Bodies = append(op.Bodies, mt)
				}
				sort.Strings(op.Bodies)
			}
			for code := range o["responses"].(map[string]any) {
				n, err := strconv.Atoi(code)
				if err != nil {
					t.Fatalf("%s %s: response code %q", op.Method, path, code)
				}
				op.Statuses[n] = true
			}
			d.ops = append(d.ops, op)
		}
	}
	sort.Slice(d.ops, func(i, j int) bool { return d.ops[i].key() < d.ops[j].key() })
	return d
}

func (o operation) key() string { return o.Method + " " + o.Path }

// params resolves a parameters list (with $refs).
func (d document) params(t testing.TB, v any) []param {
	list, _ := v.([]any)
	var out []param
	for _, p := range list {
		m := d.resolve(t, p.(map[string]any))
		pr := param{Name: m["name"].(string), In: m["in"].(string)}
		if s, ok := m["schema"].(map[string]any); ok {
			s = d.resolve(t, s)
			pr.Type, _ = s["type"].(string)
			for _, e := range asList(s["enum"]) {
				if str, ok := e.(string); ok {
					pr.Enum = append(pr.Enum, str)
				}
			}
		}
		out = append(out, pr)
	}
	return out
}

func asList(v any) []any { l, _ := v.([]any); return l }

// resolve follows a local $ref.
func (d document) resolve(t testing.TB, m map[string]any) map[string]any {
	t.Helper()
	ref, ok := m["$ref"].(string)
	if !ok {
		return m
	}
	var cur any = d.raw
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		next, ok := cur.(map[string]any)[part]
		if !ok {
			t.Fatalf("unresolvable $ref %s", ref)
		}
		cur = next
	}
	return d.resolve(t, cur.(map[string]any))
}

// find returns the documented operation that serves method and an escaped
// request path, matching wildcards per segment as ServeMux does, literals
// first.
func (d document) find(method, escapedPath string) (operation, bool) {
	if method == http.MethodHead {
		method = http.MethodGet
	}
	best, found, bestLiterals := operation{}, false, -1
	segs := strings.Split(escapedPath, "/")
	for _, op := range d.ops {
		if op.Method != method {
			continue
		}
		tsegs := strings.Split(op.Path, "/")
		if len(tsegs) != len(segs) {
			continue
		}
		literals, ok := 0, true
		for i, ts := range tsegs {
			if strings.HasPrefix(ts, "{") {
				if segs[i] == "" {
					ok = false
				}
				continue
			}
			if ts != segs[i] {
				ok = false
				break
			}
			literals++
		}
		if ok && literals > bestLiterals {
			best, found, bestLiterals = op, true, literals
		}
	}
	return best, found
}

var wildcard = regexp.MustCompile(`\{[^}]*\}`)

// normalize turns a documented path or a ServeMux pattern's path into a
// comparable form: wildcard names do not matter ({id} = {job_id}), a
// trailing {x...} is one "rest" wildcard, and {$} is the exact-match
// marker.
func normalize(path string) string {
	path = strings.ReplaceAll(path, "{$}", "")
	return wildcard.ReplaceAllStringFunc(path, func(w string) string {
		if strings.HasSuffix(w, "...}") {
			return "{...}"
		}
		return "{}"
	})
}

func TestDocumentIsWellFormed(t *testing.T) {
	d := loadDocument(t)
	if v, _ := d.raw["openapi"].(string); !strings.HasPrefix(v, "3.") {
		t.Fatalf("openapi version %q", v)
	}
	if len(d.ops) < 50 {
		t.Fatalf("only %d operations documented", len(d.ops))
	}
	// Every $ref resolves.
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if _, ok := x["$ref"]; ok {
				d.resolve(t, x)
			}
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(d.raw)
	for _, op := range d.ops {
		// Every path wildcard is declared as a path parameter, and the
		// other way round.
		declared := map[string]bool{}
		for _, p := range op.Params {
			if p.In == "path" {
				declared[p.Name] = true
			}
		}
		for _, w := range wildcard.FindAllString(op.Path, -1) {
			name := strings.Trim(w, "{}")
			if !declared[name] {
				t.Errorf("%s: path parameter %s not declared", op.key(), name)
			}
			delete(declared, name)
		}
		for name := range declared {
			t.Errorf("%s: declares path parameter %s that the path lacks", op.key(), name)
		}
		if len(op.Statuses) == 0 {
			t.Errorf("%s: no responses", op.key())
		}
		if strings.HasPrefix(op.Path, "/api/") && !op.Statuses[401] {
			t.Errorf("%s: /api route without its 401", op.key())
		}
	}
}
