package compat_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"kanade-backend/http/internal/fleettest"
	"kanade-backend/internal/apptest"
	"kanade-backend/messages"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// t0 is long past, so that every agent is offline whenever the test runs
// and the online flags of the golden file never change.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const probeNoSummary = `id: inv-sw
version: "1"
description: Installed software
execute:
  shell: powershell
  script: echo-json {"name":"7zip"}
  timeout: 30s
inventory:
  display:
    - {field: name, label: Name}
`

// golden compares a response body with testdata/<name>.json, both
// re-indented, after replacing the values of the keys in volatile (times
// the backend stamps when it projects) with a placeholder.
func golden(t *testing.T, name string, body []byte, volatile ...string) {
	t.Helper()
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("%s: not JSON: %v: %s", name, err, body)
	}
	mask(v, volatile)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	got := buf.Bytes()
	path := filepath.Join("testdata", name+".json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./http/compat -update to write it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s:\n got %s\nwant %s", name, path, got, want)
	}
}

func mask(v any, keys []string) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			for _, m := range keys {
				if k == m {
					x[k] = "<" + k + ">"
				}
			}
			mask(e, keys)
		}
	case []any:
		for _, e := range x {
			mask(e, keys)
		}
	}
}

func get(t *testing.T, b *apptest.Backend, path string) []byte {
	t.Helper()
	resp, body := b.Do(t, "GET", path, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s, want 200", path, resp.StatusCode, body)
	}
	return body
}

func TestUpstreamShapes(t *testing.T) {
	b := apptest.Start(t)

	t.Run("agents without limit: every agent", func(t *testing.T) {
		var agents []fleettest.Agent
		for i := 1; i <= 60; i++ {
			agents = append(agents, fleettest.Agent{PcID: fmt.Sprintf("PC-%03d", i), Hostname: fmt.Sprintf("host-%03d", i),
				OS: "windows", Seen: t0.Add(time.Duration(i) * time.Second)})
		}
		fleettest.InsertAgents(t, b.Store, agents...)
		resp, body := b.Do(t, "GET", "/api/agents", nil)
		if resp.StatusCode != 200 || resp.Header.Get("X-Total-Count") != "60" {
			t.Fatalf("%d, X-Total-Count %q", resp.StatusCode, resp.Header.Get("X-Total-Count"))
		}
		golden(t, "agents", body)
		// The dashboard's explicit pages are unchanged.
		resp, body = b.Do(t, "GET", "/api/agents?limit=50&offset=50", nil)
		var page []map[string]any
		if err := json.Unmarshal(body, &page); err != nil || len(page) != 10 || resp.Header.Get("X-Total-Count") != "60" {
			t.Fatalf("second page: %d rows, total %s: %s", len(page), resp.Header.Get("X-Total-Count"), body)
		}
	})

	// A broadcast answered by two PCs, projected from the RESULTS stream
	// as agents' results are; the probe has no summary.
	if resp, body := b.Do(t, "POST", "/api/jobs", probeNoSummary, "Content-Type", "application/yaml"); resp.StatusCode != 200 {
		t.Fatalf("create probe: %d %s", resp.StatusCode, body)
	}
	for i, pc := range []string{"PC-001", "PC-002"} {
		job := "inv-sw"
		r := messages.ExecResult{RequestID: "6f1d3c1e-0000-4000-8000-000000000001", PcID: pc, ExitCode: 0,
			Stdout: `{"name":"7zip"}` + "\n", Stderr: "", ManifestID: &job,
			StartedAt: t0.Add(time.Duration(i) * time.Minute), FinishedAt: t0.Add(time.Duration(i)*time.Minute + 1500*time.Millisecond)}
		data, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.JS.Publish(context.Background(), messages.ResultsSubject(r.RequestID), data); err != nil {
			t.Fatal(err)
		}
	}
	apptest.Eventually(t, 10*time.Second, func() error {
		resp, _ := b.Do(t, "GET", "/api/inventory/PC-002", nil)
		if resp.Header.Get("X-Total-Count") != "1" {
			return fmt.Errorf("PC-002's facts not projected yet")
		}
		return nil
	})

	t.Run("result by request_id: one object", func(t *testing.T) {
		golden(t, "result-by-request", get(t, b, "/api/results/6f1d3c1e-0000-4000-8000-000000000001"), "recorded_at")
		golden(t, "result-by-request-pc", get(t, b, "/api/results/6f1d3c1e-0000-4000-8000-000000000001?pc_id=PC-001"), "recorded_at")
	})
	t.Run("unknown inventory job: the empty shape", func(t *testing.T) {
		golden(t, "inventory-by-job-unknown", get(t, b, "/api/inventory/by-job/no-such-probe"))
	})
	t.Run("absent summary: null", func(t *testing.T) {
		golden(t, "inventory-jobs", get(t, b, "/api/inventory/jobs"))
		golden(t, "inventory-by-job", get(t, b, "/api/inventory/by-job/inv-sw"))
		golden(t, "inventory-pc", get(t, b, "/api/inventory/PC-001"), "recorded_at")
	})
}
