package schedules_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/internal/apptest"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

func putJob(t *testing.T, b *apptest.Backend, id string) {
	t.Helper()
	kv, err := b.JS.KeyValue(context.Background(), messages.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	m := fmt.Sprintf(`{"id":%q,"version":"1.0.0","description":null,"execute":{"shell":"powershell","script":"echo hi","timeout":"30s","run_as":"system"},"require_approval":false,"inventory":null}`, id)
	if _, err := kv.Put(context.Background(), id, []byte(m)); err != nil {
		t.Fatal(err)
	}
}

type errBody struct {
	Error string `json:"error"`
}

func TestEmptyListIsEmptyArray(t *testing.T) {
	b := apptest.Start(t)
	resp, body := b.Do(t, http.MethodGet, "/api/schedules", nil)
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "[]" || resp.Header.Get("X-Total-Count") != "0" {
		t.Fatalf("%d %q %v", resp.StatusCode, body, resp.Header)
	}
}

func TestUpsertValidation(t *testing.T) {
	b := apptest.Start(t)
	putJob(t, b, "job")
	base := map[string]any{"id": "s1", "cron": "*/30 * * * * *", "job_id": "job", "target": map[string]any{"all": true}}
	with := func(k string, v any) map[string]any {
		m := map[string]any{}
		for kk, vv := range base {
			m[kk] = vv
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	cases := []struct {
		name string
		body any
		want string
	}{
		{"bad cron", with("cron", "61 * * * * *"), `invalid schedule: cron "61 * * * * *"`},
		{"too few fields", with("cron", "* *"), "expected 5, 6 or 7 fields"},
		{"day fields never meet", with("cron", "0 0 0 1-7 * MON#2"), "never matches any date between 1970 and 2099 (day-of-month and day-of-week must both match)"},
		{"February 30th on a Monday", with("cron", "0 30 2 30 2 MON"), "never matches"},
		{"a year in the past", with("cron", "0 0 0 1 1 * 1970"), `cron "0 0 0 1 1 * 1970": no fire time after `},
		{"bad tz", with("tz", "Mars/Olympus"), `unknown time zone "Mars/Olympus"`},
		{"bad cooldown", with("cooldown", "soon"), "invalid cooldown"},
		{"bad jitter", with("jitter", "5 parsecs"), "invalid jitter"},
		{"bad starting_deadline", with("starting_deadline", "x"), "invalid starting_deadline"},
		{"cooldown as a number", with("cooldown", 60), "expected a duration string"},
		{"no target", with("target", nil), "target must specify at least one of all / groups / pcs"},
		{"bad pc in target", with("target", map[string]any{"pcs": []string{"a b"}}), `invalid pc_id "a b"`},
		{"unknown job", with("job_id", "nope"), "invalid schedule: job 'nope' not found in catalog"},
		{"bad id", with("id", "a.b"), `invalid schedule id "a.b"`},
		{"reserved id", with("id", "preview"), "reserved"},
		{"bad mode", with("mode", "sometimes"), `unknown mode "sometimes"`},
		{"malformed JSON", `{"id":`, "invalid schedule: malformed JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var e errBody
			b.JSON(t, http.MethodPost, "/api/schedules", c.body, http.StatusBadRequest, &e)
			if !strings.HasPrefix(e.Error, "invalid schedule: ") || !strings.Contains(e.Error, c.want) {
				t.Fatalf("error %q, want it to contain %q", e.Error, c.want)
			}
		})
	}
	var list []messages.Schedule
	b.JSON(t, http.MethodGet, "/api/schedules", nil, 200, &list)
	if len(list) != 0 {
		t.Fatalf("a rejected schedule was stored: %+v", list)
	}
}

func auditEvents(t *testing.T, b *apptest.Backend, action string) []messages.AuditEvent {
	t.Helper()
	ctx := context.Background()
	c, err := b.JS.OrderedConsumer(ctx, messages.StreamAudit, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"audit.operator." + action + ".>"}})
	if err != nil {
		t.Fatal(err)
	}
	var out []messages.AuditEvent
	for {
		msg, err := c.Next(jetstream.FetchMaxWait(300 * time.Millisecond))
		if err != nil {
			return out
		}
		var ev messages.AuditEvent
		if err := json.Unmarshal(msg.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
}

func TestUpsertListStatusDelete(t *testing.T) {
	b := apptest.Start(t)
	putJob(t, b, "job")
	putJob(t, b, "scheduled-echo")

	// JSON: the answer is upstream's {id, cron, job_id, enabled}, plus a
	// warning: no agent has reported yet.
	var up map[string]any
	b.JSON(t, http.MethodPost, "/api/schedules", map[string]any{
		"id": "b-every-2s", "cron": "*/2 * * * * *", "job_id": "job", "target": map[string]any{"all": true},
		"mode": "once_per_pc", "cooldown": "1h",
	}, 200, &up)
	if len(up) != 5 || up["id"] != "b-every-2s" || up["cron"] != "*/2 * * * * *" || up["job_id"] != "job" || up["enabled"] != true ||
		up["warning"] != "target matches no PCs (no agent has sent a heartbeat yet)" {
		t.Fatalf("upsert answer %v", up)
	}
	// YAML, as `curl --data-binary @schedule.yaml` sends it.
	yml, err := os.ReadFile("../../messages/testdata/vectors/schedule-minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, ct := range []string{"application/yaml", "text/yaml"} {
		resp, body := b.Do(t, http.MethodPost, "/api/schedules", yml, "Content-Type", ct)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", ct, resp.StatusCode, body)
		}
	}
	b.JSON(t, http.MethodPost, "/api/schedules", map[string]any{
		"id": "a-ny", "cron": "0 30 2 * * *", "tz": "America/New_York", "job_id": "job", "target": map[string]any{"groups": []string{"office"}},
	}, 200, nil)

	var list []messages.Schedule
	resp, _ := b.Do(t, http.MethodGet, "/api/schedules", nil)
	b.JSON(t, http.MethodGet, "/api/schedules", nil, 200, &list)
	ids := []string{}
	for _, s := range list {
		ids = append(ids, s.ID)
	}
	if strings.Join(ids, ",") != "a-ny,b-every-2s,every-10s" || resp.Header.Get("X-Total-Count") != "3" {
		t.Fatalf("list %v (total %s)", ids, resp.Header.Get("X-Total-Count"))
	}
	// Stored in canonical form with the defaults explicit.
	if s := list[2]; s.Mode != messages.ModeEveryTick || !s.Enabled || !s.Target.All {
		t.Fatalf("stored %+v", s)
	}
	b.JSON(t, http.MethodGet, "/api/schedules?limit=1&offset=1", nil, 200, &list)
	if len(list) != 1 || list[0].ID != "b-every-2s" {
		t.Fatalf("page %+v", list)
	}

	// Status: the actor runs; next fire times two seconds apart, in UTC and
	// in its zone.
	var st struct {
		Schedule messages.Schedule `json:"schedule"`
		Status   struct {
			State     string  `json:"state"`
			Error     *string `json:"error"`
			TZ        string  `json:"tz"`
			Restarts  int     `json:"restarts"`
			NextFires []struct {
				UTC   time.Time `json:"utc"`
				Local string    `json:"local"`
			} `json:"next_fires"`
			LastTicks []map[string]any `json:"last_ticks"`
		} `json:"status"`
	}
	apptest.Eventually(t, 5*time.Second, func() error {
		b.JSON(t, http.MethodGet, "/api/schedules/b-every-2s", nil, 200, &st)
		if st.Status.State != "running" {
			return fmt.Errorf("state %s", st.Status.State)
		}
		return nil
	})
	if st.Schedule.ID != "b-every-2s" || st.Status.Error != nil || len(st.Status.NextFires) != 10 || st.Status.TZ != "UTC" ||
		st.Status.NextFires[1].UTC.Sub(st.Status.NextFires[0].UTC) != 2*time.Second || st.Status.LastTicks == nil {
		t.Fatalf("status %+v", st)
	}
	b.JSON(t, http.MethodGet, "/api/schedules/a-ny", nil, 200, &st)
	if st.Status.TZ != "America/New_York" || !strings.HasSuffix(st.Status.NextFires[0].Local, "-05:00") && !strings.HasSuffix(st.Status.NextFires[0].Local, "-04:00") {
		t.Fatalf("zoned status %+v", st.Status)
	}

	// Delete: 204, idempotent; then 404.
	for range 2 {
		resp, body := b.Do(t, http.MethodDelete, "/api/schedules/b-every-2s", nil)
		if resp.StatusCode != http.StatusNoContent || len(body) != 0 {
			t.Fatalf("delete: %d %s", resp.StatusCode, body)
		}
	}
	// The scheduler learns of the delete through its KV watch, a moment
	// later.
	apptest.Eventually(t, 5*time.Second, func() error {
		resp, body := b.Do(t, http.MethodGet, "/api/schedules/b-every-2s", nil)
		if resp.StatusCode != 404 || !strings.Contains(string(body), `"schedule 'b-every-2s' not found"`) {
			return fmt.Errorf("%d %s", resp.StatusCode, body)
		}
		return nil
	})
	// Path ids are validated.
	for _, p := range []string{"/api/schedules/a.b", "/api/schedules/a%20b", "/api/schedules/a%3Eb/run"} {
		method := http.MethodGet
		if strings.HasSuffix(p, "/run") {
			method = http.MethodPost
		}
		resp, body := b.Do(t, method, p, nil)
		if resp.StatusCode != 400 || !strings.Contains(string(body), "invalid schedule id") {
			t.Fatalf("%s: %d %s", p, resp.StatusCode, body)
		}
	}
	resp, _ = b.Do(t, http.MethodDelete, "/api/schedules/a.b", nil)
	if resp.StatusCode != 400 {
		t.Fatalf("delete of a bad id: %d", resp.StatusCode)
	}
	resp, _ = b.Do(t, http.MethodPut, "/api/schedules", nil)
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("PUT: %d", resp.StatusCode)
	}

	// The scheduler's collectors are on /metrics.
	apptest.Eventually(t, 5*time.Second, func() error {
		resp, body := b.Do(t, http.MethodGet, "/metrics", nil)
		for _, m := range []string{"kanade_schedule_actors_running 2", "kanade_schedule_ticks_total", "kanade_schedule_fire_lateness_seconds",
			"kanade_schedule_actor_restarts_total", "kanade_schedules_faulted 0", "kanade_schedules_invalid 0"} {
			if resp.StatusCode != 200 || !strings.Contains(string(body), m) {
				return fmt.Errorf("/metrics lacks %q", m)
			}
		}
		return nil
	})

	// Every change was audited as the operator.
	ups := auditEvents(t, b, "schedule_upsert")
	if len(ups) != 4 || *ups[0].Target != "b-every-2s" || ups[0].Payload["sub"] != "admin" || ups[0].Payload["job_id"] != "job" {
		t.Fatalf("upsert audit %+v", ups)
	}
	dels := auditEvents(t, b, "schedule_delete")
	if len(dels) != 2 || dels[0].Payload["existed"] != true || dels[1].Payload["existed"] != false {
		t.Fatalf("delete audit %+v", dels)
	}
}

// GET /api/schedules/preview is its own route, not the status of a
// schedule called "preview" (ServeMux: the literal segment wins).
func TestPreview(t *testing.T) {
	b := apptest.Start(t)
	var p struct {
		Cron       string `json:"cron"`
		TZ         string `json:"tz"`
		Normalized string `json:"normalized"`
		Next       []struct {
			UTC   time.Time `json:"utc"`
			Local string    `json:"local"`
		} `json:"next"`
	}
	q := url.Values{"cron": {"*/2 * * * * *"}, "n": {"3"}}
	b.JSON(t, http.MethodGet, "/api/schedules/preview?"+q.Encode(), nil, 200, &p)
	if p.Normalized != "*/2 * * * * * *" || p.TZ != "UTC" || len(p.Next) != 3 || p.Next[1].UTC.Sub(p.Next[0].UTC) != 2*time.Second ||
		p.Next[0].UTC.Second()%2 != 0 {
		t.Fatalf("preview %+v", p)
	}
	// Five fields: seconds are 0, minute boundaries.
	q = url.Values{"cron": {"*/1 * * * *"}, "n": {"2"}}
	b.JSON(t, http.MethodGet, "/api/schedules/preview?"+q.Encode(), nil, 200, &p)
	if p.Next[0].UTC.Second() != 0 || p.Next[1].UTC.Sub(p.Next[0].UTC) != time.Minute {
		t.Fatalf("5-field preview %+v", p)
	}
	// Default n is 10.
	q = url.Values{"cron": {"@daily"}, "tz": {"America/New_York"}}
	b.JSON(t, http.MethodGet, "/api/schedules/preview?"+q.Encode(), nil, 200, &p)
	if len(p.Next) != 10 || p.TZ != "America/New_York" {
		t.Fatalf("preview %+v", p)
	}
	for _, c := range []struct{ q, want string }{
		{"cron=61+*+*+*+*+*", `cron "61 * * * * *"`},
		{"cron=*+*+*+*+*+*&tz=Nowhere/Else", `unknown time zone "Nowhere/Else"`},
		{"", "cron is required"},
		{"cron=@daily&n=0", "invalid n"},
		{"cron=@daily&n=1000", "invalid n"},
	} {
		var e errBody
		b.JSON(t, http.MethodGet, "/api/schedules/preview?"+c.q, nil, 400, &e)
		if !strings.Contains(e.Error, c.want) {
			t.Fatalf("%s: %q, want %q", c.q, e.Error, c.want)
		}
	}
}

// The DST acceptance through the API: a 02:30 New York schedule that runs
// every day of March fires at the jump, 03:00 EDT, on each spring-forward
// day (the second Sunday of March), and at 02:30 on every other day.
func TestPreviewAcrossDST(t *testing.T) {
	b := apptest.Start(t)
	q := url.Values{"cron": {"0 30 2 * 3 *"}, "tz": {"America/New_York"}, "n": {"100"}}
	var p struct {
		Next []struct {
			UTC   time.Time `json:"utc"`
			Local string    `json:"local"`
		} `json:"next"`
	}
	b.JSON(t, http.MethodGet, "/api/schedules/preview?"+q.Encode(), nil, 200, &p)
	var jumps []string
	for _, n := range p.Next {
		switch {
		case strings.Contains(n.Local, "T03:00:00-04:00"):
			jumps = append(jumps, n.Local[:10])
			if n.UTC.Hour() != 7 || n.UTC.Minute() != 0 {
				t.Fatalf("jump %s at %v UTC", n.Local, n.UTC)
			}
		case !strings.Contains(n.Local, "T02:30:00"):
			t.Fatalf("local %s", n.Local)
		}
	}
	if len(jumps) < 2 {
		t.Fatalf("only %d spring-forward fires in %d instants", len(jumps), len(p.Next))
	}
	var want []string
	first, _ := time.Parse("2006-01-02", jumps[0])
	for y := first.Year(); len(want) < len(jumps); y++ {
		d := time.Date(y, 3, 8, 0, 0, 0, 0, time.UTC) // the second Sunday is the first Sunday from the 8th
		for d.Weekday() != time.Sunday {
			d = d.AddDate(0, 0, 1)
		}
		want = append(want, d.Format("2006-01-02"))
	}
	if strings.Join(jumps, ",") != strings.Join(want, ",") {
		t.Fatalf("spring-forward fires on %v, want %v", jumps, want)
	}
}

// A run without an exec engine is answered with the failed tick; unknown
// schedules are 404.
func TestRunNowRoute(t *testing.T) {
	b := apptest.Start(t)
	putJob(t, b, "job")
	b.JSON(t, http.MethodPost, "/api/schedules", map[string]any{
		"id": "r", "cron": "0 0 0 1 1 *", "job_id": "job", "target": map[string]any{"all": true},
	}, 200, nil)
	var tk map[string]any
	apptest.Eventually(t, 5*time.Second, func() error {
		resp, body := b.Do(t, http.MethodPost, "/api/schedules/r/run", nil)
		if resp.StatusCode != 200 {
			return fmt.Errorf("%d %s", resp.StatusCode, body)
		}
		return json.Unmarshal(body, &tk)
	})
	if tk["trigger"] != "manual" || (tk["outcome"] != "fired" && tk["outcome"] != "failed") {
		t.Fatalf("run %v", tk)
	}
	var e errBody
	b.JSON(t, http.MethodPost, "/api/schedules/nope/run", nil, 404, &e)
	if e.Error != "schedule 'nope' not found" {
		t.Fatalf("%q", e.Error)
	}
}

// A schedule may target a group nobody has joined yet (groups fill as PCs
// are set up): it is saved, and the answer says so. A target that reaches
// online PCs answers upstream's four fields only.
func TestUpsertWarnsAboutTheTarget(t *testing.T) {
	b := apptest.Start(t)
	putJob(t, b, "job")
	now := storage.T(time.Now())
	if _, err := b.Store.W.NewInsert().Model(&storage.Agent{PcID: "pc-1", AgentVersion: "0.21.2", LastHeartbeat: now, UpdatedAt: now}).
		Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.SetGroups(t, map[string][]string{"pc-1": {"canary"}, "pc-2": {"night"}})
	save := func(target map[string]any) map[string]any {
		t.Helper()
		var up map[string]any
		b.JSON(t, http.MethodPost, "/api/schedules", map[string]any{"id": "s", "cron": "0 0 3 * * *", "job_id": "job", "target": target}, 200, &up)
		return up
	}
	apptest.Eventually(t, 5*time.Second, func() error { // the agent_groups mirror
		if up := save(map[string]any{"groups": []string{"canary"}}); len(up) != 4 {
			return fmt.Errorf("answer %v, want upstream's four fields", up)
		}
		return nil
	})
	for _, c := range []struct {
		target  map[string]any
		warning string
	}{
		{map[string]any{"groups": []string{"canray"}}, "target matches no PCs (unknown group 'canray' (no PC is a member))"},
		{map[string]any{"groups": []string{"canary", "canray"}}, "target reaches 1 PC (1 online); unknown group 'canray' (no PC is a member)"},
		{map[string]any{"groups": []string{"night"}}, "target reaches 1 PC (0 online); none of them is online now"},
	} {
		if up := save(c.target); up["warning"] != c.warning || up["id"] != "s" {
			t.Errorf("target %v: answer %v, want warning %q", c.target, up, c.warning)
		}
	}
	// With rollout waves the waves' groups are the target.
	var up map[string]any
	b.JSON(t, http.MethodPost, "/api/schedules", map[string]any{"id": "w", "cron": "0 0 3 * * *", "job_id": "job",
		"rollout": map[string]any{"waves": []map[string]any{{"group": "wave9", "delay": "0s"}}}}, 200, &up)
	if up["warning"] != "target matches no PCs (unknown group 'wave9' (no PC is a member))" {
		t.Fatalf("waves to an empty group: %v", up)
	}
	// Warned, and saved all the same.
	var list []messages.Schedule
	b.JSON(t, http.MethodGet, "/api/schedules", nil, 200, &list)
	if len(list) != 2 || list[0].ID != "s" || list[1].ID != "w" || list[0].Target.Groups[0] != "night" {
		t.Fatalf("stored schedules %+v", list)
	}
}
