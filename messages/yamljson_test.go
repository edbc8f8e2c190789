package messages

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestYAMLToJSON(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"scalars", "s: hello\nq: \"1.0\"\nb: true\nB: False\nn: null\nt: ~\ne:\n", `{"s":"hello","q":"1.0","b":true,"B":false,"n":null,"t":null,"e":null}`},
		{"numbers keep their text", "a: 1.0\nb: 1\nc: -2.50\nd: 1e3\n", `{"a":1.0,"b":1,"c":-2.50,"d":1e3}`},
		{"numbers JSON cannot spell become strings", "a: 0x1F\nb: 1_000\nc: .inf\nd: 0o17\ne: +1\n", `{"a":"0x1F","b":"1_000","c":".inf","d":"0o17","e":"+1"}`},
		{"yes/no stay strings (YAML 1.2)", "a: yes\nb: no\n", `{"a":"yes","b":"no"}`},
		{"timestamps stay text", "at: 2026-05-20T03:00:00Z\n", `{"at":"2026-05-20T03:00:00Z"}`},
		{"explicit string tag", "v: !!str 1.0\n", `{"v":"1.0"}`},
		{"sequences and flow", "target: { all: true, groups: [a, b] }\nlist:\n  - 1\n  - x\n", `{"target":{"all":true,"groups":["a","b"]},"list":[1,"x"]}`},
		{"block scalar", "script: |\n  line1\n  line2\n", `{"script":"line1\nline2\n"}`},
		{"anchors and aliases", "base: &b {shell: cmd}\ncopy: *b\n", `{"base":{"shell":"cmd"},"copy":{"shell":"cmd"}}`},
		{"merge keys, explicit wins", "base: &b {shell: cmd, timeout: 1m}\nexecute:\n  <<: *b\n  timeout: 2m\n", `{"base":{"shell":"cmd","timeout":"1m"},"execute":{"timeout":"2m","shell":"cmd"}}`},
		{"numeric keys become strings", "1: a\n", `{"1":"a"}`},
		{"top-level array", "- a\n- b\n", `["a","b"]`},
		{"html-ish text", "s: a && b <c>\n", `{"s":"a \u0026\u0026 b \u003cc\u003e"}`},
	}
	for _, tt := range tests {
		got, err := yamlToJSON([]byte(tt.in))
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if string(got) != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, got, tt.want)
		}
	}
}

func TestYAMLToJSONErrors(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{"empty", "", "empty YAML document"},
		{"comment only", "# nothing\n", "empty YAML document"},
		{"two documents", "a: 1\n---\nb: 2\n", "expected a single YAML document, found several"},
		{"duplicate key", "a: 1\na: 2\n", `line 2: duplicate key "a"`},
		{"complex key", "? [a, b]\n: 1\n", "line 1: mapping keys must be plain scalars"},
		{"syntax", "a: [1, 2\n", "malformed YAML: "},
		{"tab indentation", "a:\n\tb: 1\n", "malformed YAML: "},
		{"merge of a scalar", "a:\n  <<: 1\n", "line 2: a merge key (<<) needs a mapping"},
	}
	for _, tt := range tests {
		_, err := yamlToJSON([]byte(tt.in))
		if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
			t.Errorf("%s: error %v, want prefix %q", tt.name, err, tt.wantErr)
		}
	}
}

// TestYAMLSharesJSONRules checks that a YAML body obeys the JSON decoder's
// rules, since it is decoded by it.
func TestYAMLSharesJSONRules(t *testing.T) {
	_, err := ParseManifestYAML([]byte("id: j\nversion: 1\nexecute: {shell: cmd, script: x, timeout: 1s}\ntarget: {all: true}\n"))
	if err == nil || err.Error() != `unknown field "target"` {
		t.Errorf("unknown field in YAML: %v", err)
	}
	_, err = ParseManifestYAML([]byte("id: j\nversion: 1\nexecute: {shell: cmd, script: x, timeout: 30}\n"))
	if err == nil || !strings.Contains(err.Error(), `expected a duration string such as "30s"`) {
		t.Errorf("numeric timeout in YAML: %v", err)
	}
	_, err = ParseManifestYAML([]byte("id: j\nversion: 1\nexecute: {shell: bash, script: x, timeout: 30s}\n"))
	if err == nil || err.Error() != `unknown shell "bash"` {
		t.Errorf("bad shell in YAML: %v", err)
	}
	s, err := ParseScheduleYAML([]byte("id: s\ncron: '@daily'\njob_id: j\ntarget:\n  pcs: [PC-1]\nenabled: false\nmode: once_per_pc\ncooldown: 1d\ntz: Europe/Berlin\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Enabled || s.Mode != ModeOncePerPC || s.Cooldown == nil || *s.Cooldown != "1d" || s.TZ != "Europe/Berlin" || len(s.Target.Pcs) != 1 {
		t.Errorf("decoded %+v", s)
	}
	_, err = ParseScheduleYAML([]byte("id: s\ncron: '0 0 * * * *'\njob_id: j\n"))
	if err == nil || err.Error() != "target must specify at least one of all / groups / pcs (or set rollout.waves)" {
		t.Errorf("schedule without target: %v", err)
	}
}

// yamlBombs are documents of a few hundred bytes whose aliases expand to
// gigabytes, in the shapes an attacker would try: nested sequences,
// nested mappings, merge keys.
func yamlBombs() map[string]string {
	var seq, mapping, merge strings.Builder
	seq.WriteString("a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n")
	mapping.WriteString("a: &a {x: lol, y: lol, z: lol}\n")
	merge.WriteString("a: &a {k0: 0, k1: 1, k2: 2, k3: 3}\n")
	for i, l := range "bcdefghi" {
		prev := string("abcdefghi"[i])
		fmt.Fprintf(&seq, "%c: &%c [*%s,*%s,*%s,*%s,*%s,*%s,*%s,*%s,*%s]\n", l, l, prev, prev, prev, prev, prev, prev, prev, prev, prev)
		fmt.Fprintf(&mapping, "%c: &%c {p: *%s, q: *%s, r: *%s, s: *%s, t: *%s, u: *%s}\n", l, l, prev, prev, prev, prev, prev, prev)
		fmt.Fprintf(&merge, "%c: &%c {<<: [*%s, *%s], m%d: [*%s, *%s, *%s, *%s, *%s]}\n", l, l, prev, prev, i, prev, prev, prev, prev, prev)
	}
	return map[string]string{"sequences": seq.String(), "mappings": mapping.String(), "merge keys": merge.String()}
}

// A YAML bomb is refused in milliseconds with a clear error, without
// expanding it; a document that uses a few aliases the normal way still
// converts.
func TestYAMLAliasExpansionIsBounded(t *testing.T) {
	for name, doc := range yamlBombs() {
		if len(doc) < 300 || len(doc) > 700 {
			t.Fatalf("%s bomb is %d bytes, want a few hundred", name, len(doc))
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		took := time.Hour
		var err error
		for range 3 { // the best of three, against a busy machine
			start := time.Now()
			_, err = ParseManifestYAML([]byte(doc))
			took = min(took, time.Since(start))
		}
		runtime.ReadMemStats(&after)
		if err == nil || !strings.Contains(err.Error(), "YAML aliases expand too much") {
			t.Errorf("%s: error %v", name, err)
		}
		if took > 100*time.Millisecond {
			t.Errorf("%s: took %v", name, took)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 3*16<<20 {
			t.Errorf("%s: allocated %d bytes", name, alloc)
		}
	}
	m, err := ParseManifestYAML([]byte("defaults: &d {shell: cmd, timeout: 1m}\nid: j\nversion: '1'\nexecute:\n  <<: *d\n  script: ver\n"))
	if err == nil || !strings.Contains(err.Error(), `unknown field "defaults"`) {
		t.Fatalf("anchors in a top-level key: %v %+v", err, m)
	}
	s, err := ParseScheduleYAML([]byte("id: s\ncron: &c '@daily'\njob_id: j\ntarget: {pcs: &p [PC-1, PC-2]}\n"))
	if err != nil || len(s.Target.Pcs) != 2 {
		t.Fatalf("a document with anchors: %v %+v", err, s)
	}
}

func TestJSONDepthIsBounded(t *testing.T) {
	deep := `{"id":"j","version":"1","execute":{"shell":"cmd","script":"x","timeout":"1s"},"inventory":` +
		strings.Repeat(`[`, 100000) + strings.Repeat(`]`, 100000) + `}`
	start := time.Now()
	_, err := ParseManifestJSON([]byte(deep))
	if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "JSON nested deeper than 64 levels") {
		t.Fatalf("deep JSON: %v", err)
	}
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Fatalf("took %v", took)
	}
	// Brackets inside strings do not count; 64 levels are fine.
	ok := `{"a":"` + strings.Repeat("[", 1000) + `\"[[["}`
	if err := CheckJSONDepth([]byte(ok)); err != nil {
		t.Fatal(err)
	}
	if err := CheckJSONDepth([]byte(strings.Repeat("[", 64) + strings.Repeat("]", 64))); err != nil {
		t.Fatal(err)
	}
	if err := CheckJSONDepth([]byte(strings.Repeat("[", 65) + strings.Repeat("]", 65))); err == nil {
		t.Fatal("65 levels accepted")
	}
}
