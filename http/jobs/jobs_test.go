package jobs_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"kanade-backend/internal/apptest"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

const echoJob = `{"id":"echo-test","version":"0.0.1","execute":{"shell":"powershell","script":"echo 'kanade'","timeout":"30s"}}`

const spoolerYAML = `id: restart-spooler
version: 1.2.0
execute:
  shell: cmd
  script: net stop spooler && net start spooler
  timeout: 2m
require_approval: true
`

// audits records the audit events the backend publishes.
type audits struct {
	mu  sync.Mutex
	evs []messages.AuditEvent
}

func recordAudits(t *testing.T, b *apptest.Backend) *audits {
	t.Helper()
	a := &audits{}
	sub, err := b.Conn.Subscribe("audit.>", func(m *nats.Msg) {
		var ev messages.AuditEvent
		if json.Unmarshal(m.Data, &ev) == nil {
			a.mu.Lock()
			a.evs = append(a.evs, ev)
			a.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := b.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	return a
}

// wait returns the first event with action and target, polling.
func (a *audits) wait(t *testing.T, action, target string) messages.AuditEvent {
	t.Helper()
	var found messages.AuditEvent
	apptest.Eventually(t, 5*time.Second, func() error {
		a.mu.Lock()
		defer a.mu.Unlock()
		for _, ev := range a.evs {
			if ev.Action == action && ev.Target != nil && *ev.Target == target {
				found = ev
				return nil
			}
		}
		return errNoEvent(action + " " + target)
	})
	return found
}

type errNoEvent string

func (e errNoEvent) Error() string { return "no audit event " + string(e) }

func TestJobsCatalogRoundTrip(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t)
	au := recordAudits(t, b)

	// An empty bucket lists as [] (upstream answered 500, defect 15).
	resp, body := b.Do(t, "GET", "/api/jobs", nil)
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "[]" || resp.Header.Get("X-Total-Count") != "0" {
		t.Fatalf("empty catalog: %d %q total=%q", resp.StatusCode, body, resp.Header.Get("X-Total-Count"))
	}

	var up map[string]any
	b.JSON(t, "POST", "/api/jobs", echoJob, http.StatusOK, &up)
	if up["id"] != "echo-test" || up["version"] != "0.0.1" || up["description"] != nil || up["inventory"] != false || len(up) != 4 {
		t.Fatalf("upsert JSON = %v", up)
	}
	resp, body = b.Do(t, "POST", "/api/jobs", spoolerYAML, "Content-Type", "application/yaml")
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"id":"restart-spooler"`) {
		t.Fatalf("upsert YAML: %d %s", resp.StatusCode, body)
	}
	resp, body = b.Do(t, "POST", "/api/jobs", strings.Replace(spoolerYAML, "restart-spooler", "a-inventory", 1)+
		"inventory:\n  display:\n    - field: name\n      label: Name\n", "Content-Type", "text/yaml")
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"inventory":true`) {
		t.Fatalf("upsert YAML with inventory: %d %s", resp.StatusCode, body)
	}

	var list []messages.Manifest
	b.JSON(t, "GET", "/api/jobs", nil, http.StatusOK, &list)
	if len(list) != 3 || list[0].ID != "a-inventory" || list[1].ID != "echo-test" || list[2].ID != "restart-spooler" {
		t.Fatalf("list = %+v", list)
	}
	if !list[2].RequireApproval || list[2].Execute.Timeout != "2m" || list[2].Execute.RunAs != messages.RunAsSystem {
		t.Fatalf("stored YAML manifest = %+v", list[2])
	}
	resp, body = b.Do(t, "GET", "/api/jobs?limit=1&offset=1", nil)
	if resp.Header.Get("X-Total-Count") != "3" || !strings.HasPrefix(string(body), `[{"id":"echo-test"`) {
		t.Fatalf("page: total=%s body=%s", resp.Header.Get("X-Total-Count"), body)
	}

	// Read-your-writes in the mirror the scheduler and the API query.
	var row storage.Job
	if err := b.Store.R.NewSelect().Model(&row).Where("id = ?", "echo-test").Scan(context.Background()); err != nil {
		t.Fatalf("mirror row: %v", err)
	}
	if row.Version != "0.0.1" || row.KVRevision == 0 || row.HasInventory {
		t.Fatalf("mirror row = %+v", row)
	}
	ev := au.wait(t, messages.ActionJobUpsert, "echo-test")
	if ev.Actor != "operator" || ev.Payload["version"] != "0.0.1" || ev.Payload["sub"] != "admin" {
		t.Fatalf("job_upsert audit = %+v", ev)
	}

	// An edit replaces the manifest and the mirror row.
	b.JSON(t, "POST", "/api/jobs", strings.Replace(echoJob, "0.0.1", "0.0.2", 1), http.StatusOK, nil)
	if err := b.Store.R.NewSelect().Model(&row).Where("id = ?", "echo-test").Scan(context.Background()); err != nil || row.Version != "0.0.2" {
		t.Fatalf("mirror after edit = %+v (%v)", row, err)
	}

	b.JSON(t, "DELETE", "/api/jobs/echo-test", nil, http.StatusNoContent, nil)
	b.JSON(t, "DELETE", "/api/jobs/echo-test", nil, http.StatusNoContent, nil) // idempotent
	b.JSON(t, "DELETE", "/api/jobs/never-existed", nil, http.StatusNoContent, nil)
	b.JSON(t, "GET", "/api/jobs", nil, http.StatusOK, &list)
	if len(list) != 2 {
		t.Fatalf("after delete: %+v", list)
	}
	if n, _ := b.Store.R.NewSelect().Model((*storage.Job)(nil)).Where("id = ?", "echo-test").Count(context.Background()); n != 0 {
		t.Fatal("mirror row survived the delete")
	}
	au.wait(t, messages.ActionJobDelete, "echo-test")
}

func TestJobsErrorsUseTheAPITexts(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t)
	kv := jetKV(t, b, messages.BucketSchedules)
	b.JSON(t, "POST", "/api/jobs", `{"id":"J","version":"1","execute":{"shell":"cmd","script":"x","timeout":"1m"}}`, http.StatusOK, nil)
	// A schedule written a moment ago (straight to KV, not yet mirrored)
	// still blocks the delete.
	if _, err := kv.Put(context.Background(), "nightly", []byte(`{"id":"nightly","cron":"0 0 2 * * *","job_id":"J","target":{"all":true}}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), "another", []byte(`{"id":"another","cron":"0 0 3 * * *","job_id":"J","target":{"all":true}}`)); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name, method, path, body, ctype string
		status                          int
		text                            string // exact, or prefix ending in "…"
	}{
		{"delete referenced job", "DELETE", "/api/jobs/J", "", "", 409, "job 'J' is referenced by schedule 'another'; remove the schedule first"},
		{"unknown field", "POST", "/api/jobs", `{"id":"old-style","version":"1","execute":{"shell":"cmd","script":"echo hi","timeout":"30s"},"target":{"all":true}}`, "", 400, `unknown field "target"`},
		{"unknown field yaml", "POST", "/api/jobs", "id: y\nversion: 1\ntarget:\n  all: true\nexecute:\n  shell: cmd\n  script: x\n  timeout: 1m\n", "application/yaml", 400, `unknown field "target"`},
		{"bad timeout", "POST", "/api/jobs", `{"id":"t","version":"1","execute":{"shell":"cmd","script":"x","timeout":"forever"}}`, "", 400, "invalid timeout: …"},
		{"bare number timeout", "POST", "/api/jobs", `{"id":"t","version":"1","execute":{"shell":"cmd","script":"x","timeout":30}}`, "", 400, "expected a duration string such as …"},
		{"bad id", "POST", "/api/jobs", `{"id":"a.b","version":"1","execute":{"shell":"cmd","script":"x","timeout":"1m"}}`, "", 400, `invalid job id "a.b": …`},
		{"empty body", "POST", "/api/jobs", "", "", 400, "empty body"},
		{"malformed json", "POST", "/api/jobs", `{"id":`, "", 400, "malformed JSON …"},
		{"bad path id delete", "DELETE", "/api/jobs/a.b", "", "", 400, `invalid job id "a.b": …`},
		{"bad path id revoke", "POST", "/api/scripts/a*b/revoke", "", "", 400, `invalid job id "a*b": …`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body any
			if c.body != "" {
				body = c.body
			}
			hdr := []string{}
			if c.ctype != "" {
				hdr = []string{"Content-Type", c.ctype}
			}
			resp, out := b.Do(t, c.method, c.path, body, hdr...)
			var e struct{ Error string }
			if err := json.Unmarshal(out, &e); err != nil {
				t.Fatalf("body %q is not a JSON error: %v", out, err)
			}
			if resp.StatusCode != c.status {
				t.Errorf("status %d, want %d (%s)", resp.StatusCode, c.status, e.Error)
			}
			if prefix, ok := strings.CutSuffix(c.text, "…"); ok {
				if !strings.HasPrefix(e.Error, prefix) {
					t.Errorf("error %q, want prefix %q", e.Error, prefix)
				}
			} else if e.Error != c.text {
				t.Errorf("error %q, want %q", e.Error, c.text)
			}
		})
	}
	var list []messages.Manifest
	b.JSON(t, "GET", "/api/jobs", nil, http.StatusOK, &list)
	if len(list) != 1 || list[0].ID != "J" {
		t.Fatalf("catalog after refusals = %+v", list)
	}
}

func TestRevokeAndUnrevokeWriteRawStatus(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t)
	au := recordAudits(t, b)
	kv := jetKV(t, b, messages.BucketScriptStatus)
	for _, c := range []struct{ path, want, action string }{
		{"/api/scripts/J/revoke", "REVOKED", messages.ActionScriptRevoke},
		{"/api/scripts/J/unrevoke", "ACTIVE", messages.ActionScriptUnrevoke},
	} {
		b.JSON(t, "POST", c.path, nil, http.StatusNoContent, nil)
		e, err := kv.Get(context.Background(), "J")
		if err != nil || string(e.Value()) != c.want {
			t.Fatalf("%s: script_status[J] = %v (%v), want raw %s", c.path, e, err, c.want)
		}
		au.wait(t, c.action, "J")
	}
}
