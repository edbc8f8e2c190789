package openapi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"kanade-backend/internal/apptest"
	"kanade-backend/storage/storagetest"
)

// The API-wide robustness test: hostile methods, paths, ids, query strings,
// content types and bodies against every documented operation of a whole
// backend. The server must never answer 5xx, except the 502/503/504 an
// operation documents (an absent agent, NATS away, degraded fleet health),
// and never panic (the recoverer would turn a panic into a 500).

// robustRequests is the number of requests of TestRobustness (fixed seed).
// KANADE_ROBUST_REQUESTS overrides it for a longer local run.
const robustRequests = 4000

// requestTimeout bounds one request. Some operations legitimately wait for
// an agent (run: timeout + 10 s, ping: wait_secs, logs: 10 s); for them a
// client-side timeout is not a failure. For every other operation it is.
const requestTimeout = 3 * time.Second

// waiting lists the operations that may hold a request while waiting for
// an agent or stream indefinitely.
var waiting = map[string]bool{
	"POST /api/run":                 true,
	"POST /api/agents/{pc_id}/ping": true,
	"GET /api/agents/{pc_id}/logs":  true,
	"POST /api/schedules/{id}/run":  true,
	"GET /api/events":               true,
}

// agentAnswer lists the operations that relay an agent's answer; their
// documented 502 (no responders) and 504 (timeout) are the only 5xx a
// healthy backend may send. Everything else talks to a running NATS and
// database here, so a 503 (or any other 5xx) is a bug.
var agentAnswer = map[string]bool{
	"GET /api/agents/{pc_id}/logs": true,
}

// workers send requests concurrently, so that handlers also run side by
// side as in production.
const workers = 4

// maxDiscard is how much of an unread request body net/http reads to keep a
// connection alive; beyond it the server closes the connection.
const maxDiscard = 256 << 10

type target struct {
	t   testing.TB
	b   *apptest.Backend
	doc document
	hc  *http.Client
}

func newTarget(t testing.TB) *target {
	b := apptest.Start(t)
	// Some rows to find, so that handlers go past "not found".
	f := storagetest.Fleet{Agents: 20, Results: 200, ResultsPerExec: 10, Jobs: 4, Audit: 50,
		FailureEvery: 3, End: time.Now().UTC(), Spacing: time.Minute}
	if err := storagetest.Seed(context.Background(), b.Store, f); err != nil {
		t.Fatal(err)
	}
	return &target{t: t, b: b, doc: loadDocument(t), hc: &http.Client{
		Timeout: requestTimeout,
		// A redirect (ServeMux cleans "/a/../b") is an answer, not a
		// request to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// req is one generated request.
type req struct {
	Method, Path, Query, ContentType, Accept string
	Auth                                     string // "", "good", or garbage
	Body                                     []byte
}

func (r req) String() string {
	return fmt.Sprintf("%s %s?%s (content-type %q, auth %q, %d body bytes: %.80q)",
		r.Method, trim(r.Path, 120), trim(r.Query, 120), r.ContentType, trim(r.Auth, 20), len(r.Body), r.Body)
}

func trim(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("...(%d bytes)", len(s))
}

// check sends r and returns a failure description, or "".
func (tg *target) check(r req) string {
	u := tg.b.URL + r.Path
	if r.Query != "" {
		u += "?" + r.Query
	}
	if !validMethod(r.Method) || !validHeader(r.ContentType) || !validHeader(r.Auth) {
		return "" // the client refuses to send it; nothing to test
	}
	hr, err := http.NewRequest(r.Method, u, bytes.NewReader(r.Body))
	if err != nil {
		return "" // not expressible as an HTTP request; nothing to test
	}
	switch r.Auth {
	case "":
	case "good":
		hr.Header.Set("Authorization", "Bearer "+apptest.Token)
	default:
		hr.Header.Set("Authorization", r.Auth)
	}
	if r.ContentType != "" {
		hr.Header.Set("Content-Type", r.ContentType)
	}
	if r.Accept != "" {
		hr.Header.Set("Accept", r.Accept)
	}
	op, documented := tg.doc.find(r.Method, hr.URL.EscapedPath())
	resp, err := tg.hc.Do(hr)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) && ue.Timeout() && documented && waiting[op.key()] {
			return ""
		}
		if len(r.Body) > maxDiscard && !(errors.As(err, &ue) && ue.Timeout()) {
			// The server answered (413, or 401/404/405 before reading) and
			// closed the connection without reading the rest of an
			// oversized body, which resets the upload: a refusal, as
			// intended.
			return ""
		}
		return fmt.Sprintf("%v: no response: %v", r, err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 8<<20))
	}
	if resp.StatusCode < 500 {
		return ""
	}
	if documented && op.Statuses[resp.StatusCode] && agentAnswer[op.key()] && (resp.StatusCode == 502 || resp.StatusCode == 504) {
		return "" // no agent answered: the agent's failure, not the API's
	}
	return fmt.Sprintf("%v: status %d (route %s, documented %v)", r, resp.StatusCode, op.key(), documented)
}

// validMethod reports whether m is an HTTP token (RFC 9110 §5.6.2), which
// net/http requires before sending.
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for _, c := range []byte(m) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// validHeader reports whether net/http would send v as a header value.
func validHeader(v string) bool {
	for _, c := range []byte(v) {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func TestRobustness(t *testing.T) {
	n := robustRequests
	if s := os.Getenv("KANADE_ROBUST_REQUESTS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	tg := newTarget(t)
	gen := newGenerator(rand.New(rand.NewPCG(20261126, 6)), tg.doc)
	reqs := make([]req, n)
	for i := range reqs {
		reqs[i] = gen.request()
	}

	t0 := time.Now()
	var failures []string
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(reqs) {
					return
				}
				if f := tg.check(reqs[i]); f != "" {
					mu.Lock()
					failures = append(failures, f)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d requests in %v", n, time.Since(t0).Round(time.Millisecond))
	for i, f := range failures {
		if i == 20 {
			t.Errorf("... and %d more", len(failures)-20)
			break
		}
		t.Error(f)
	}

	// Every event stream the run opened has been closed by its client and
	// has left the hub.
	apptest.Eventually(t, 5*time.Second, func() error {
		_, body := tg.b.Do(t, "GET", "/metrics", nil)
		if !strings.Contains(string(body), "\nkanade_live_clients 0\n") {
			return errors.New("kanade_live_clients is not back to 0")
		}
		return nil
	})
	// The server is still whole afterwards.
	tg.b.JSON(t, "GET", "/api/results?limit=1", nil, 200, nil)
	resp, _ := tg.b.Do(t, "GET", "/health", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("/health after the run: %d", resp.StatusCode)
	}
}

// FuzzAPI sends one fuzzed request per input to a whole backend:
//
//	go test -run '^$' -fuzz FuzzAPI -fuzztime 60s ./http/openapi/
func FuzzAPI(f *testing.F) {
	tg := newTarget(f)
	gen := newGenerator(rand.New(rand.NewPCG(1, 2)), tg.doc)
	for i := 0; i < 40; i++ {
		r := gen.request()
		f.Add(r.Method, r.Path, r.Query, r.ContentType, r.Auth == "good", r.Body)
	}
	f.Fuzz(func(t *testing.T, method, path, query, contentType string, auth bool, body []byte) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		r := req{Method: method, Path: path, Query: query, ContentType: contentType, Body: body}
		if auth {
			r.Auth = "good"
		}
		if fail := tg.check(r); fail != "" {
			t.Error(fail)
		}
	})
}

// generator makes hostile requests, mostly aimed at documented operations
// so that they get past routing and into the handlers.
type generator struct {
	rng *rand.Rand
	doc document
}

func newGenerator(rng *rand.Rand, doc document) *generator {
	return &generator{rng: rng, doc: doc}
}

func (g *generator) pick(list []string) string { return list[g.rng.IntN(len(list))] }

func (g *generator) chance(p float64) bool { return g.rng.Float64() < p }

// Path ids, already escaped for a URL path: valid ones (some exist in the
// seeded store), the characters subject tokens forbid, unicode, and sizes
// far past the 200-byte limit.
var ids = []string{
	"pc-00001", "pc-00003", "job-00", "job-01", "exec-000001", "req-000002", "g1", "all", "jobs", "by-job",
	".", "..", "a.b", "*", "%2A", ">", "%3E", "a%20b", "%20", "a>b", "a*b", "commands.all",
	"%2F", "a%2Fb", "%C3%BC%E6%97%A5%E6%9C%AC", "%F0%9F%92%A5", "%00", "%25", "%0A", "%FF%FE",
	"'%20OR%201=1%20--", "%7B%7D", "null", "-1", "0", "1.0", "v1.2.3", "=", "-", "_",
	strings.Repeat("a", 201), strings.Repeat("x", 4096), strings.Repeat("%E6%97%A5", 300),
}

var queryValues = []string{
	"", "0", "1", "-1", "50", "1000", "1001", "99999999999999999999", "1e3", "abc", "true", "false",
	"success", "failure", "pending", "2026-01-02T15:04:05Z", "2026-01-02T15:04:05%2B09:00",
	"2026-01-02T15:04:05+09:00", "2026-13-45T99:99:99Z", "yesterday", "0001-01-01T00:00:00Z",
	"9999-12-31T23:59:59.999999999Z", "a.b", "*", "%3E", "%00", "%C3%BC", "%FF", "pc-00001", "job-01",
	"exec-000001", "operator", "exec", "*/30%20*%20*%20*%20*%20*", "0%200%20*%20*%20*", "@daily",
	"Europe%2FParis", "Mars%2FOlympus", strings.Repeat("z", 5000),
	// Past SQLite's 50 000-byte LIKE pattern limit (a 500 once) and past
	// the 4 KiB query limit: 400, never 5xx.
	strings.Repeat("q", 50001), strings.Repeat("%25", 2000),
}

var extraParams = []string{"limit", "offset", "since", "status", "pc_id", "job_id", "exec_id", "q", "online",
	"tail", "wait_secs", "cron", "tz", "n", "actor", "action", "access_token", "x", ""}

var contentTypes = []string{
	"application/json", "application/json", "application/json; charset=utf-8", "application/yaml", "text/yaml",
	"multipart/form-data; boundary=XyZ", "multipart/form-data", "text/plain", "application/x-www-form-urlencoded",
	"application/octet-stream", "", "garbage", "a/b;;=;", "application/json; charset=utf-16",
}

var methods = []string{"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "PROPFIND", "TRACE"}

// Bodies that are valid for some operation, so handlers get past decoding.
var validBodies = []string{
	`{"target":{"all":true}}`,
	`{"target":{"groups":["g1"],"pcs":["pc-00001"]},"jitter":"5s"}`,
	`{"target":{},"rollout":{"waves":[{"group":"g1","delay":"0s"},{"group":"g2","delay":"1h"}]}}`,
	`{"id":"job-fz","version":"1.0","execute":{"shell":"powershell","script":"Get-Date","timeout":"30s"}}`,
	`{"id":"job-inv","version":"2","execute":{"shell":"cmd","script":"ver","timeout":"1m"},"inventory":{"display":[{"field":"os","label":"OS"}]}}`,
	"id: job-yaml\nversion: 1.0\nexecute:\n  shell: powershell\n  script: Get-Date\n  timeout: 30s\n",
	`{"id":"s-fz","cron":"*/30 * * * * *","job_id":"job-fz","target":{"all":true},"mode":"once_per_pc"}`,
	"id: s-yaml\ncron: \"0 0 * * * *\"\njob_id: job-00\ntarget:\n  all: true\n",
	`{"groups":["g1","g2","g1"]}`, `{"group":"g3"}`, `{"group":""}`,
	`{"target_version":"1.2.3","heartbeat_interval":"30s","target_version_jitter":"1h 30m"}`,
	`{"heartbeat_interval":"1d"}`, `{"heartbeat_interval":"0s"}`,
	`{"pc_id":"pc-00001","shell":"powershell","script":"echo hi","timeout_secs":1}`,
	`{"pc_id":"pc-00001","shell":"bash","script":"x"}`,
	`{"version":"1.2.3","scope":{"type":"global"}}`, `{"version":"9.9.9","scope":{"type":"group","value":"g1"},"jitter":"1m"}`,
}

// Bodies that are wrong in every way a decoder can meet.
var hostileBodies = []string{
	"", "{", "}", "[]", "null", "0", `"str"`, "{}", `{"id":null}`, `{"id":1e400}`, `{"target":"all"}`,
	`{"target":{"all":"yes"}}`, `{"target":{"groups":[null,1,{}]}}`, `{"id":"a.b","version":"1","execute":{}}`,
	`{"id":"x","version":"1","execute":{"shell":"powershell","script":"x","timeout":"30"},"target":{"all":true}}`,
	`{"jitter":"-5s","target":{"all":true}}`, `{"jitter":"99999999999999999999h","target":{"all":true}}`,
	`{"rollout":{"strategy":"canary","waves":[{"group":"*","delay":"x"}]}}`,
	`{"cron":"61 * * * * *","id":"s","job_id":"j","tz":"Nowhere/Zone"}`,
	"\xff\xfe\x00\x00", "{\"a\":\"\\ud800\"}", `{"a":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}`,
	"a: &a [*a, *a]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\nd: [*c, *c, *c, *c]\n",
	// Alias bombs of about 500 bytes (once an OOM), as a whole body and
	// under a key a decoder reads; and JSON nested past any limit.
	apptest.AliasBomb(9, 9, ""), "id: j\nversion: '1'\nexecute: {shell: cmd, script: x, timeout: 1m}\ndescription:\n" + apptest.AliasBomb(8, 8, "  "),
	"id: s\njob_id: job-00\ncron: '@daily'\ntarget:\n  all: true\n  pcs:\n" + apptest.AliasBomb(8, 8, "    "),
	"a: &a {x: 1}\nb: &b {<<: [*a, *a], p: *a, q: *a}\nc: &c {<<: [*b, *b], p: *b, q: *b}\nd: &d {<<: *c, p: *c, q: *c}\n",
	strings.Repeat("[", 200000) + strings.Repeat("]", 200000),
	`{"target":{"pcs":` + strings.Repeat(`[`, 100) + strings.Repeat(`]`, 100) + `}}`,
	"!!binary gIGC", "- - - - -\n", "key: [unclosed", "--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nMZ\r\n--XyZ--\r\n",
}

func (g *generator) body() []byte {
	switch r := g.rng.Float64(); {
	case r < 0.30:
		return nil
	case r < 0.55:
		return []byte(g.pick(validBodies))
	case r < 0.80:
		return []byte(g.pick(hostileBodies))
	case r < 0.90:
		return g.randomJSON()
	case r < 0.95:
		return g.multipart()
	case r < 0.98:
		b := make([]byte, g.rng.IntN(4096))
		for i := range b {
			b[i] = byte(g.rng.IntN(256))
		}
		return b
	default:
		// Past the 1 MiB limit: 413, not 500.
		return oversized
	}
}

// oversized is a JSON body just past the 1 MiB body limit (shared: the
// client only reads it).
var oversized = bytes.Repeat([]byte(`{"a":1}`), (1<<20)/7+100)

func (g *generator) randomJSON() []byte {
	var val func(depth int) string
	val = func(depth int) string {
		switch k := g.rng.IntN(8); {
		case depth > 4 || k == 0:
			return g.pick([]string{"null", "true", "false", "0", "-1", "1.5e300", `""`, `"x"`, `"30s"`, `"*"`, `"a.b"`})
		case k <= 3:
			var fields []string
			for i := 0; i < g.rng.IntN(5); i++ {
				key := g.pick([]string{"id", "version", "target", "all", "groups", "pcs", "execute", "shell", "script",
					"timeout", "cron", "job_id", "mode", "enabled", "group", "pc_id", "jitter", "rollout", "waves",
					"scope", "type", "value", "heartbeat_interval", "inventory", "display", "x"})
				fields = append(fields, strconv.Quote(key)+":"+val(depth+1))
			}
			return "{" + strings.Join(fields, ",") + "}"
		default:
			var items []string
			for i := 0; i < g.rng.IntN(4); i++ {
				items = append(items, val(depth+1))
			}
			return "[" + strings.Join(items, ",") + "]"
		}
	}
	return []byte(val(0))
}

func (g *generator) multipart() []byte {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	_ = w.SetBoundary("XyZ")
	if g.chance(0.7) {
		fw, _ := w.CreateFormFile("file", g.pick([]string{"kanade-agent.exe", "../../etc/passwd", "a b.exe", ""}))
		content := make([]byte, g.rng.IntN(2048))
		for i := range content {
			content[i] = byte(g.rng.IntN(256))
		}
		_, _ = fw.Write(content)
	}
	if g.chance(0.5) {
		_ = w.WriteField("version", g.pick([]string{"1.2.3", "", "a.b*", strings.Repeat("9", 300)}))
	}
	_ = w.Close()
	b := buf.Bytes()
	if g.chance(0.2) {
		b = b[:g.rng.IntN(len(b)+1)] // truncated
	}
	return b
}

func (g *generator) request() req {
	var r req
	var op *operation
	switch x := g.rng.Float64(); {
	case x < 0.85:
		o := g.doc.ops[g.rng.IntN(len(g.doc.ops))]
		// /metrics is costly to render (especially under -race) and takes
		// no input; a few hits are enough.
		for o.Path == "/metrics" && g.chance(0.9) {
			o = g.doc.ops[g.rng.IntN(len(g.doc.ops))]
		}
		op = &o
		r.Path = g.fillPath(o.Path)
		r.Method = o.Method
		if g.chance(0.12) {
			r.Method = g.pick(methods)
		}
	case x < 0.95:
		r.Path = g.pick([]string{"/api/", "/api", "/api/x", "/api/results/a/b/c", "/api//results", "/api/results/",
			"/api/inventory/", "/api/agents/pc-00001/", "/", "/index.html", "/health/", "/metrics/x", "/api/../etc/passwd",
			"/api/%2e%2e/x", "/api/events/", "/API/results", "/api/results%2Fx"})
		r.Method = g.pick(methods)
	default:
		segs := make([]string, 1+g.rng.IntN(5))
		for i := range segs {
			segs[i] = g.pick(ids)
		}
		r.Path = "/api/" + strings.Join(segs, "/")
		r.Method = g.pick(methods)
	}
	r.Query = g.query(op)
	r.Body = g.body()
	r.ContentType = g.pick(contentTypes)
	if len(r.Body) == 0 && g.chance(0.5) {
		r.ContentType = ""
	}
	switch x := g.rng.Float64(); {
	case x < 0.90:
		r.Auth = "good"
	case x < 0.94:
		r.Auth = ""
	default:
		r.Auth = g.pick([]string{"Bearer wrong", "bearer " + apptest.Token, "Basic dXNlcjpwdw==", "Bearer", "Bearer " + strings.Repeat("x", 9000),
			"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."})
	}
	if g.chance(0.1) {
		r.Accept = "text/event-stream"
		if g.chance(0.5) {
			r.Query += "&access_token=" + g.pick([]string{apptest.Token, "nope", ""})
		}
	}
	return r
}

// fillPath replaces each {wildcard} with an id from the pool.
func (g *generator) fillPath(tmpl string) string {
	return wildcard.ReplaceAllStringFunc(tmpl, func(string) string { return g.pick(ids) })
}

// query fills some of the operation's documented query parameters (and
// some it does not document) with values from the pool.
func (g *generator) query(op *operation) string {
	var parts []string
	if op != nil {
		for _, p := range op.Params {
			if p.In != "query" || !g.chance(0.5) {
				continue
			}
			v := g.pick(queryValues)
			if len(p.Enum) > 0 && g.chance(0.5) {
				v = g.pick(p.Enum)
			}
			parts = append(parts, p.Name+"="+v)
		}
	}
	for i := 0; i < g.rng.IntN(3); i++ {
		parts = append(parts, g.pick(extraParams)+"="+g.pick(queryValues))
	}
	if g.chance(0.03) {
		parts = append(parts, "%zz=%", "a=%", ";;&&==")
	}
	return strings.Join(parts, "&")
}
