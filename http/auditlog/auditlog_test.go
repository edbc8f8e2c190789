package auditlog_test

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/http/httpx"
	"kanade-backend/internal/apptest"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func fixture(t *testing.T, d storagetest.Dialect) *apptest.Backend {
	b := apptest.Start(t, apptest.Options{DBURL: d.URL(t)})
	target := "job-a"
	rows := []storage.AuditRow{
		{StreamSeq: 1, Actor: "operator", Action: "job_upsert", Target: &target, Payload: json.RawMessage(`{"sub":"admin"}`), OccurredAt: storage.T(t0)},
		{StreamSeq: 2, Actor: "operator", Action: "exec", Target: &target, Payload: json.RawMessage(`{"exec_id":"e1","target_count":2}`), OccurredAt: storage.T(t0.Add(time.Minute))},
		// Same instant as the previous row: id breaks the tie.
		{StreamSeq: 3, Actor: "scheduler", Action: "exec", Target: &target, Payload: json.RawMessage(`{}`), OccurredAt: storage.T(t0.Add(time.Minute))},
		{StreamSeq: 4, Actor: "operator", Action: "config_put", Payload: json.RawMessage(`{}`), OccurredAt: storage.T(t0.Add(2 * time.Minute))},
	}
	for i := range rows {
		rows[i].RecordedAt = rows[i].OccurredAt
	}
	err := b.Store.InTx(context.Background(), func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewInsert().Model(&rows).Exec(ctx)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type row struct {
	ID         int64           `json:"id"`
	Actor      string          `json:"actor"`
	Action     string          `json:"action"`
	Target     *string         `json:"target"`
	Payload    json.RawMessage `json:"payload"`
	OccurredAt string          `json:"occurred_at"`
}

func ids(rows []row) string {
	var s []string
	for _, r := range rows {
		s = append(s, r.Action+"#"+string(rune('0'+r.ID)))
	}
	return strings.Join(s, " ")
}

func TestList(t *testing.T) {
	storagetest.RunDialects(t, testList)
}

func testList(t *testing.T, d storagetest.Dialect) {
	b := fixture(t, d)
	cases := []struct{ query, want, total string }{
		{"", "config_put#4 exec#3 exec#2 job_upsert#1", "4"},
		{"?actor=operator", "config_put#4 exec#2 job_upsert#1", "3"},
		{"?action=exec", "exec#3 exec#2", "2"},
		{"?actor=scheduler&action=exec", "exec#3", "1"},
		{"?since=2026-03-01T13:01:00%2B01:00", "config_put#4 exec#3 exec#2", "3"},
		{"?limit=1&offset=1", "exec#3", "4"},
		{"?actor=nobody", "", "0"},
	}
	for _, c := range cases {
		var got []row
		resp, body := b.Do(t, "GET", "/api/audit"+c.query, nil)
		if resp.StatusCode != 200 || json.Unmarshal(body, &got) != nil {
			t.Fatalf("%s: %d %s", c.query, resp.StatusCode, body)
		}
		if ids(got) != c.want || resp.Header.Get("X-Total-Count") != c.total {
			t.Errorf("%s: got %q total %s, want %q total %s", c.query, ids(got), resp.Header.Get("X-Total-Count"), c.want, c.total)
		}
	}

	// The row shape: id, actor, action, target (null when none), payload,
	// occurred_at; nothing else (stream_seq and recorded_at are internal).
	var raw []map[string]any
	b.JSON(t, "GET", "/api/audit?action=config_put", nil, 200, &raw)
	want := map[string]any{"id": 4.0, "actor": "operator", "action": "config_put", "target": nil,
		"payload": map[string]any{}, "occurred_at": "2026-03-01T12:02:00Z"}
	if len(raw) != 1 || !reflect.DeepEqual(raw[0], want) {
		t.Fatalf("row %v, want %v", raw, want)
	}
}

// Bad filters are refused before any query: one dialect is enough.
func TestBadFilters(t *testing.T) {
	b := fixture(t, storagetest.Dialects[0])
	for query, want := range map[string]string{
		"?since=now":                         `invalid since "now": must be an RFC 3339 time`,
		"?limit=5000":                        `invalid limit "5000"`,
		"?actor=" + strings.Repeat("a", 300): `invalid actor "aaaa`,
	} {
		resp, body := b.Do(t, "GET", "/api/audit"+query, nil)
		var e httpx.ErrorBody
		if resp.StatusCode != 400 || json.Unmarshal(body, &e) != nil || !strings.HasPrefix(e.Error, want) {
			t.Errorf("%s: %d %s, want 400 %q", query[:min(len(query), 40)], resp.StatusCode, body, want)
		}
	}
	resp, _ := b.Do(t, "POST", "/api/audit", nil)
	if resp.StatusCode != 405 {
		t.Fatalf("POST /api/audit: %d", resp.StatusCode)
	}
}
