package releases_test

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"kanade-backend/http/internal/fleettest"
	"kanade-backend/http/releases"
	"kanade-backend/http/server"
	"kanade-backend/internal/apptest"
	"kanade-backend/messages"
	"kanade-backend/storage/broker/brokertest"
)

// upload posts a multipart body to /api/agents/publish. file == nil
// leaves the file field out.
func upload(t *testing.T, b *apptest.Backend, file []byte, version string) (int, []byte) {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	if version != "" {
		_ = mw.WriteField("version", version)
	}
	if file != nil {
		fw, err := mw.CreateFormFile("file", "kanade-agent.exe")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = fw.Write(file)
	}
	_ = mw.Close()
	resp, out := b.Do(t, http.MethodPost, "/api/agents/publish", body.Bytes(), "Content-Type", mw.FormDataContentType(),
		"X-Kanade-Source", "cli")
	return resp.StatusCode, out
}

func TestPublishListRolloutDelete(t *testing.T) {
	b := apptest.Start(t)
	audit := fleettest.RecordAudit(t, b.Conn)

	out := b.JSON(t, http.MethodGet, "/api/agents/releases", nil, 200, nil)
	if strings.TrimSpace(string(out)) != "[]" {
		t.Fatalf("empty list: %s", out)
	}

	// Version from the binary's own resource.
	win := releases.BuildPE(releases.VersionInfo(releases.VersionStrings{{"ProductVersion", "0.21.2"}}))
	status, out := upload(t, b, win, "")
	if status != 200 {
		t.Fatalf("publish PE: %d %s", status, out)
	}
	var pub releases.PublishResponse
	if err := json.Unmarshal(out, &pub); err != nil {
		t.Fatal(err)
	}
	if pub.Version != "0.21.2" || pub.Source != "pe" || pub.Size != uint64(len(win)) ||
		!strings.HasPrefix(pub.Digest, "SHA-256=") || pub.Modified.IsZero() || pub.Replaced {
		t.Fatalf("publish response: %s", out)
	}
	// A matching field (leading v ignored) is fine and replaces it.
	if status, out = upload(t, b, win, "v0.21.2"); status != 200 || !strings.Contains(string(out), `"replaced":true`) {
		t.Fatalf("publish PE with matching field: %d %s", status, out)
	}
	// A contradicting field is refused: the binary decides.
	status, out = upload(t, b, win, "9.9.9")
	if status != 400 || !strings.Contains(apptest.ErrorText(t, out), "version field '9.9.9' disagrees with the binary's embedded version '0.21.2'") {
		t.Fatalf("contradicting field: %d %s", status, out)
	}
	// No version resource: the field names the release.
	elf := append([]byte("\x7fELF\x02\x01\x01"), bytes.Repeat([]byte{1}, 1000)...)
	if status, out = upload(t, b, elf, "0.22.0-linux"); status != 200 || !strings.Contains(string(out), `"source":"field"`) {
		t.Fatalf("publish with field: %d %s", status, out)
	}
	status, out = upload(t, b, elf, "")
	if status != 400 || !strings.HasPrefix(apptest.ErrorText(t, out), "no version: the uploaded file carries no Windows version resource") {
		t.Fatalf("no version at all: %d %s", status, out)
	}
	if status, out = upload(t, b, elf, "../etc"); status != 400 {
		t.Fatalf("bad version: %d %s", status, out)
	}
	status, out = upload(t, b, nil, "1.0.0")
	if status != 400 || apptest.ErrorText(t, out) != "missing 'file' field" {
		t.Fatalf("missing file: %d %s", status, out)
	}
	if status, out = upload(t, b, []byte{}, "1.0.0"); status != 400 || apptest.ErrorText(t, out) != "'file' field is empty" {
		t.Fatalf("empty file: %d %s", status, out)
	}
	b.WantError(t, http.MethodPost, "/api/agents/publish", map[string]any{"file": "x"}, 400, "")

	var list []releases.Release
	resp, raw := b.Do(t, http.MethodGet, "/api/agents/releases", nil)
	if err := json.Unmarshal(raw, &list); err != nil || resp.StatusCode != 200 {
		t.Fatalf("list: %d %s", resp.StatusCode, raw)
	}
	if resp.Header.Get("X-Total-Count") != "2" || len(list) != 2 || list[0].Version != "0.22.0-linux" || list[1].Version != "0.21.2" {
		t.Fatalf("list newest first: %s", raw)
	}
	b.JSON(t, http.MethodGet, "/api/agents/releases?limit=1&offset=1", nil, 200, &list)
	if len(list) != 1 || list[0].Version != "0.21.2" {
		t.Fatalf("paged list: %+v", list)
	}

	// Rollout: errors first.
	b.WantError(t, http.MethodPost, "/api/agents/rollout", map[string]any{"version": "7.7.7", "scope": map[string]any{"type": "global"}}, 404,
		"version '7.7.7' not found in agent_releases; publish it first")
	b.WantError(t, http.MethodPost, "/api/agents/rollout", map[string]any{"version": "0.21.2", "scope": map[string]any{"type": "fleet"}}, 400,
		`invalid scope.type "fleet": must be global, group or pc`)
	b.WantError(t, http.MethodPost, "/api/agents/rollout", map[string]any{"version": "0.21.2", "scope": map[string]any{"type": "group"}}, 400,
		"scope.value is required for type group")
	b.WantError(t, http.MethodPost, "/api/agents/rollout", map[string]any{"version": "0.21.2", "scope": map[string]any{"type": "pc", "value": "a.b"}}, 400, "")
	b.WantError(t, http.MethodPost, "/api/agents/rollout", map[string]any{"version": "0.21.2"}, 400, "")
	b.WantError(t, http.MethodPost, "/api/agents/rollout", map[string]any{"version": "0.21.2", "scope": map[string]any{"type": "global"}, "jitter": "later"}, 400, "")
	b.WantError(t, http.MethodPost, "/api/agents/rollout", map[string]any{"version": "", "scope": map[string]any{"type": "global"}}, 400, "version must not be empty")

	// A rollout keeps the scope's other fields.
	b.JSON(t, http.MethodPut, "/api/groups/canary/config", map[string]any{"heartbeat_interval": "10s"}, 200, nil)
	var ro releases.RolloutResponse
	out = b.JSON(t, http.MethodPost, "/api/agents/rollout",
		map[string]any{"version": "0.21.2", "scope": map[string]any{"type": "group", "value": "canary"}, "jitter": "30m"}, 200, &ro)
	if ro.Version != "0.21.2" || ro.ScopeKey != "groups.canary" || ro.ScopeLabel != "group:canary" || ro.Jitter == nil || *ro.Jitter != "30m" {
		t.Fatalf("rollout: %s", out)
	}
	out = b.JSON(t, http.MethodGet, "/api/groups/canary/config", nil, 200, nil)
	if strings.TrimSpace(string(out)) != `{"target_version":"0.21.2","target_version_jitter":"30m","heartbeat_interval":"10s"}` {
		t.Fatalf("scope after rollout: %s", out)
	}
	out = b.JSON(t, http.MethodPost, "/api/agents/rollout", map[string]any{"version": "0.22.0-linux", "scope": map[string]any{"type": "global"}}, 200, &ro)
	if ro.ScopeKey != "global" || ro.ScopeLabel != "global" || !strings.Contains(string(out), `"jitter":null`) {
		t.Fatalf("global rollout: %s", out)
	}
	b.JSON(t, http.MethodPost, "/api/agents/rollout", map[string]any{"version": "0.22.0-linux", "scope": map[string]any{"type": "pc", "value": "PC-1"}}, 200, &ro)
	if ro.ScopeKey != "pcs.PC-1" || ro.ScopeLabel != "pc:PC-1" {
		t.Fatalf("pc rollout: %+v", ro)
	}

	// Delete: refused while a scope targets the version.
	b.WantError(t, http.MethodDelete, "/api/agents/releases/0.21.2", nil, 409,
		"version '0.21.2' is the target_version of scope 'group:canary'; clear or change that scope first")
	b.WantError(t, http.MethodDelete, "/api/agents/releases/0.22.0-linux", nil, 409,
		"version '0.22.0-linux' is the target_version of scope 'global'; clear or change that scope first")
	b.WantError(t, http.MethodDelete, "/api/agents/releases/3.0.0", nil, 404, "version '3.0.0' not found in agent_releases")
	b.WantError(t, http.MethodDelete, "/api/agents/releases/-rf", nil, 400, "")
	b.WantError(t, http.MethodGet, "/api/agents/releases/0.21.2", nil, 405, "")
	b.WantError(t, http.MethodPut, "/api/agents/releases", nil, 405, "")

	b.JSON(t, http.MethodPut, "/api/groups/canary/config", map[string]any{"heartbeat_interval": "10s"}, 200, nil)
	resp, out = b.Do(t, http.MethodDelete, "/api/agents/releases/0.21.2", nil)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %d %s", resp.StatusCode, out)
	}
	b.WantError(t, http.MethodDelete, "/api/agents/releases/0.21.2", nil, 404, "")
	b.JSON(t, http.MethodGet, "/api/agents/releases", nil, 200, &list)
	if len(list) != 1 || list[0].Version != "0.22.0-linux" {
		t.Fatalf("list after delete: %+v", list)
	}

	if evs := audit.Wait(t, messages.ActionAgentPublish, 3); *evs[0].Target != "0.21.2" || evs[0].Payload["version_source"] != "pe" ||
		evs[0].Payload["source"] != "cli" || evs[0].Payload["sub"] != "admin" {
		t.Fatalf("agent_publish: %+v", evs[0])
	}
	if evs := audit.Wait(t, messages.ActionAgentRollout, 3); evs[0].Payload["scope_key"] != "groups.canary" || evs[0].Payload["sub"] != "admin" {
		t.Fatalf("agent_rollout: %+v", evs[0])
	}
	if evs := audit.Wait(t, messages.ActionReleaseDelete, 1); *evs[0].Target != "0.21.2" {
		t.Fatalf("release_delete: %+v", evs[0])
	}
}

// bigUpload posts a multipart body whose file part has size bytes; with
// declared the request carries a Content-Length, else it is chunked.
func bigUpload(t *testing.T, client *http.Client, url string, size int, declared bool) (int, []byte) {
	t.Helper()
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		_ = mw.WriteField("version", "1.0.0")
		fw, err := mw.CreateFormFile("file", "big.bin")
		if err != nil {
			return // the server answered and the pipe was closed
		}
		chunk := make([]byte, 64<<10)
		for n := 0; n < size; n += len(chunk) {
			if _, err := fw.Write(chunk[:min(len(chunk), size-n)]); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		_ = mw.Close()
		_ = pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, url+"/api/agents/publish", pr)
	if declared {
		req.ContentLength = int64(size) + 4096
	}
	req.Header.Set("Authorization", "Bearer "+apptest.Token)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := client.Do(req)
	_ = pr.CloseWithError(io.ErrClosedPipe) // stop the writer either way
	if err != nil {
		t.Fatalf("declared=%v: %v", declared, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// TestPublishTooLarge: a body declared past the 64 MiB limit is refused
// with 413 before it is read.
func TestPublishTooLarge(t *testing.T) {
	b := apptest.Start(t)
	status, out := bigUpload(t, b.Client, b.URL, 65<<20, true)
	if status != http.StatusRequestEntityTooLarge || apptest.ErrorText(t, out) != "request body larger than 67108864 bytes" {
		t.Fatalf("status %d body %s", status, out)
	}
}

// TestPublishLimitChunked checks that a chunked body is cut at the limit
// while reading. It uses a 1 MiB limit on the same handlers: streaming
// 64 MiB under the race detector would cost seconds and test the same
// code path.
func TestPublishLimitChunked(t *testing.T) {
	br := brokertest.Start(t)
	r := server.NewRouter()
	releases.Register(r, releases.Deps{JS: br.JS, MaxUploadBytes: 1 << 20})
	srv := httptest.NewServer(r.Handler(server.Options{}))
	t.Cleanup(srv.Close)

	status, out := bigUpload(t, srv.Client(), srv.URL, 2<<20, false)
	if status != http.StatusRequestEntityTooLarge || apptest.ErrorText(t, out) != "request body larger than 1048576 bytes" {
		t.Fatalf("chunked over the limit: %d %s", status, out)
	}
	status, out = bigUpload(t, srv.Client(), srv.URL, 512<<10, false)
	if status != http.StatusOK || !strings.Contains(string(out), `"size":524288`) {
		t.Fatalf("chunked under the limit: %d %s", status, out)
	}
}
