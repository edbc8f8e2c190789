package projector

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"kanade-backend/actors/audit"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker/brokertest"
	"kanade-backend/storage/execrecord"
	"kanade-backend/storage/pgtest"
	"kanade-backend/storage/storagetest"
)

// tables is the projected content of a database, row by row, without the
// columns that hold the time of projection.
type tables struct {
	Audit     []storage.AuditRow
	Jobs      []storage.Job
	Schedules []storage.ScheduleRow
	Members   []storage.GroupMember
	Revisions []storage.GroupRevision
	Errors    []string
	Results   []storage.ExecutionResult
	Facts     []storage.InventoryFact
	Execs     []storage.Execution
	Requests  []storage.PublishedRequest
	Expected  []storage.ExecExpected
	Waves     []storage.ExecWave
}

func readTables(t *testing.T, st *storage.Store) tables {
	t.Helper()
	ctx := context.Background()
	var s tables
	for what, q := range map[string]func() error{
		"audit":     func() error { return st.R.NewSelect().Model(&s.Audit).Order("id").Scan(ctx) },
		"jobs":      func() error { return st.R.NewSelect().Model(&s.Jobs).Order("id").Scan(ctx) },
		"schedules": func() error { return st.R.NewSelect().Model(&s.Schedules).Order("id").Scan(ctx) },
		"members":   func() error { return st.R.NewSelect().Model(&s.Members).Order("pc_id", "group_name").Scan(ctx) },
		"revisions": func() error { return st.R.NewSelect().Model(&s.Revisions).Order("pc_id").Scan(ctx) },
		"results":   func() error { return st.R.NewSelect().Model(&s.Results).Order("request_id", "pc_id").Scan(ctx) },
		"facts":     func() error { return st.R.NewSelect().Model(&s.Facts).Order("pc_id", "job_id").Scan(ctx) },
		"execs":     func() error { return st.R.NewSelect().Model(&s.Execs).Order("exec_id").Scan(ctx) },
		"requests":  func() error { return st.R.NewSelect().Model(&s.Requests).Order("request_id").Scan(ctx) },
		"expected":  func() error { return st.R.NewSelect().Model(&s.Expected).Order("exec_id", "pc_id").Scan(ctx) },
		"waves":     func() error { return st.R.NewSelect().Model(&s.Waves).Order("exec_id", "wave_index").Scan(ctx) },
		"errors": func() error {
			return st.R.NewSelect().TableExpr("projection_errors").
				ColumnExpr("projection || ' ' || stream || ' ' || stream_seq || ' ' || subject || ' ' || error").
				Order("projection", "stream_seq").Scan(ctx, &s.Errors)
		},
	} {
		if err := q(); err != nil {
			t.Fatalf("read %s: %v", what, err)
		}
	}
	// Leave out the time of projection.
	each(s.Audit, func(r *storage.AuditRow) { r.RecordedAt = storage.Time{} })
	each(s.Jobs, func(r *storage.Job) { r.UpdatedAt = storage.Time{} })
	each(s.Schedules, func(r *storage.ScheduleRow) { r.UpdatedAt = storage.Time{} })
	each(s.Revisions, func(r *storage.GroupRevision) { r.UpdatedAt = storage.Time{} })
	each(s.Results, func(r *storage.ExecutionResult) { r.RecordedAt = storage.Time{} })
	each(s.Facts, func(r *storage.InventoryFact) { r.RecordedAt = storage.Time{} })
	each(s.Execs, func(r *storage.Execution) { r.UpdatedAt = storage.Time{} })
	return s
}

// each applies f to every row of rows.
func each[T any](rows []T, f func(*T)) {
	for i := range rows {
		f(&rows[i])
	}
}

// The same streams and buckets projected into SQLite, into PostgreSQL,
// and into PostgreSQL again after its schema was dropped and recreated,
// give the same rows, compared row by row (audit ids included: each
// database numbers the events in stream order). The results part covers
// the execs restored from the EXEC stream into each empty database, the
// results attributed to them, their exec_expected answers, counters and
// statuses, inventory facts and the projection errors.
func TestSameStreamsSameRowsOnBothDialects(t *testing.T) {
	url := pgtest.URL(t) // skips without PostgreSQL (fails under KANADE_REQUIRE_PG)
	b := brokertest.Start(t)
	publishDialectFixture(t, b)
	project := func(st *storage.Store) tables {
		t.Helper()
		h := newHarness(t, harnessOpts{broker: b, store: st}).start()
		h.waitCount("audit_log", 40, 20*time.Second)
		h.waitCount("agent_group_revisions", 5, 20*time.Second)
		h.waitCount("schedules", 2, 20*time.Second)
		h.waitCount("jobs", 4, 20*time.Second)
		h.waitCount("execution_results", 13, 20*time.Second)
		h.waitCount("projection_errors", 5, 20*time.Second)
		h.consumerIdle(messages.StreamAudit, DurableAudit)
		h.consumerIdle(messages.StreamResults, DurableResults)
		h.stop()
		return readTables(t, st)
	}
	lite := project(storagetest.Open(t))
	if len(lite.Audit) != 40 || len(lite.Jobs) != 4 || len(lite.Members) != 10 || len(lite.Errors) != 5 {
		t.Fatalf("fixture on SQLite: %d audit, %d jobs, %d memberships, errors %v",
			len(lite.Audit), len(lite.Jobs), len(lite.Members), lite.Errors)
	}
	wantExecs(t, lite.Execs, "ex-all failed 4/1", "ex-one running 1/0")
	if !lite.Execs[0].FinishedAt.Equal(t0.Add(8*time.Second)) || string(lite.Facts[0].Facts) != `{"cpu":8}` {
		t.Fatalf("ex-all finished at %v (want its last answer's 8 s), pc-0 facts %s (want the newer)", lite.Execs[0].FinishedAt.Time, lite.Facts[0].Facts)
	}
	if len(lite.Results) != 13 || len(lite.Facts) != 2 || len(lite.Requests) != 4 || len(lite.Expected) != 8 || len(lite.Waves) != 1 {
		t.Fatalf("fixture on SQLite: %d results, %d facts, %d requests, %d expected, %d waves",
			len(lite.Results), len(lite.Facts), len(lite.Requests), len(lite.Expected), len(lite.Waves))
	}
	pg := storagetest.OpenURL(t, url)
	if got := project(pg); !reflect.DeepEqual(lite, got) {
		t.Fatalf("PostgreSQL rows differ from SQLite's:\n%s", diffTables(lite, got))
	}

	// Wipe: the schema dropped and recreated, as an operator restoring
	// nothing would; the backend migrates it again and rebuilds.
	if _, err := pg.W.ExecContext(context.Background(), "DROP SCHEMA public CASCADE; CREATE SCHEMA public"); err != nil {
		t.Fatal(err)
	}
	if got := project(storagetest.OpenURL(t, url)); !reflect.DeepEqual(lite, got) {
		t.Fatalf("PostgreSQL rebuilt after a wipe differs from SQLite:\n%s", diffTables(lite, got))
	}
}

// publishDialectFixture publishes 40 audit events (one twice, one
// undecodable), three jobs (one edited, one deleted), two schedules and
// the groups of five PCs (one deleted, one rewritten).
func publishDialectFixture(t *testing.T, b *brokertest.Broker) {
	t.Helper()
	ctx := context.Background()
	pub := audit.NewPublisher(b.JS, nil)
	for i := range 40 {
		ev := audit.Event(messages.ActorOperator, messages.ActionExec, fmt.Sprintf("JOB-%d é", i%4), map[string]any{"i": i, "big": 1 << 60})
		if i%5 == 0 {
			ev = audit.Event(messages.ActorScheduler, messages.ActionExec, "", nil)
		}
		ev.OccurredAt = t0.Add(time.Duration(i) * 1500 * time.Microsecond)
		if err := pub.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
		if i == 7 {
			if err := pub.Publish(ctx, ev); err != nil { // a publisher's retry
				t.Fatal(err)
			}
		}
	}
	publishJS(t, b.JS, []pubMsg{{subject: "audit.operator.bad", data: []byte("{")}})
	jobs := b.KV(t, messages.BucketJobs)
	for _, kv := range [][2]string{{"a", "1"}, {"b", "1"}, {"a", "2"}, {"gone", "1"}, {"Zeta", "1"}} {
		if _, err := jobs.Put(ctx, kv[0], []byte(fmt.Sprintf(jobJSON, kv[0], kv[1]))); err != nil {
			t.Fatal(err)
		}
	}
	if err := jobs.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	schedules := b.KV(t, messages.BucketSchedules)
	for _, id := range []string{"s1", "s2"} {
		def := fmt.Sprintf(`{"id":"%s","cron":"0 0 * * * *","job_id":"a","target":{"all":true},"enabled":%v}`, id, id == "s1")
		if _, err := schedules.Put(ctx, id, []byte(def)); err != nil {
			t.Fatal(err)
		}
	}
	groups := b.KV(t, messages.BucketAgentGroups)
	for i := range 5 {
		v := fmt.Sprintf(`{"groups":["g%d","all","B-%d"]}`, i%2, i)
		if _, err := groups.Put(ctx, fmt.Sprintf("pc-%d", i), []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := groups.Put(ctx, "pc-1", []byte(`{"groups":["solo"]}`)); err != nil {
		t.Fatal(err)
	}
	if err := groups.Delete(ctx, "pc-4"); err != nil {
		t.Fatal(err)
	}
	if _, err := groups.Put(ctx, "bad.pc", []byte(`{"groups":`)); err != nil {
		t.Fatal(err)
	}
	publishResultsFixture(t, b)
}

// publishResultsFixture publishes the records of two execs on EXEC and
// 15 results on RESULTS: a broadcast answered by its five expected PCs
// (one twice, one with a failure) and by a PC it did not expect, a per-PC
// exec answered once, by another PC's Command and not at all, results of
// no exec, inventory results (one older than the facts it would replace,
// one not JSON) and an undecodable message.
func publishResultsFixture(t *testing.T, b *brokertest.Broker) {
	t.Helper()
	ctx := context.Background()
	inv := `{"id":"inv","version":"1","description":null,"execute":{"shell":"cmd","script":"x","timeout":"1m"},` +
		`"require_approval":false,"inventory":{"display":[{"field":"cpu","label":"CPU"}]}}`
	if _, err := b.KV(t, messages.BucketJobs).Put(ctx, "inv", []byte(inv)); err != nil {
		t.Fatal(err)
	}
	far := t0.AddDate(10, 0, 0) // no deadline passes while the test runs
	exec := func(id string, subjects map[string]string, expected ...string) *execrecord.Record {
		ex := &storage.Execution{ExecID: id, JobID: "a", Version: "2", InitiatedBy: "operator:ada",
			Plan: json.RawMessage(`{"target":{"all":true}}`), Subjects: json.RawMessage(`["commands.all"]`),
			TargetCount: len(subjects), ExpectedPcs: len(expected), Status: storage.ExecPending, TimeoutSecs: 30,
			CreatedAt: storage.T(t0), DeadlineAt: storage.T(far), UpdatedAt: storage.T(t0),
			Manifest: json.RawMessage(`{"id":"a","version":"2"}`)}
		var reqs []storage.PublishedRequest
		for req, subj := range subjects {
			reqs = append(reqs, storage.PublishedRequest{RequestID: req, ExecID: id, Subject: subj, PublishedAt: storage.T(t0)})
		}
		var waves []storage.ExecWave
		if id == "ex-all" {
			waves = []storage.ExecWave{{ExecID: id, WaveIndex: 0, GroupName: "g0", DueAt: storage.T(t0), State: storage.WavePublished}}
		}
		return execrecord.New(ex, reqs, expected, waves)
	}
	recs := []*execrecord.Record{
		exec("ex-all", map[string]string{"req-all": messages.SubjectCommandsAll}, "pc-0", "pc-1", "pc-2", "pc-3", "pc-4"),
		exec("ex-one", map[string]string{"req-p0": "commands.pc.pc-0", "req-p1": "commands.pc.pc-1", "req-p2": "commands.pc.pc-2"},
			"pc-0", "pc-1", "pc-2"),
	}
	pub := &execrecord.Publisher{JS: b.JS}
	for _, err := range pub.PublishNew(ctx, recs) {
		if err != nil {
			t.Fatal(err)
		}
	}
	at := func(m pubMsg, finished time.Duration) pubMsg {
		var r messages.ExecResult
		if err := json.Unmarshal(m.data, &r); err != nil {
			t.Fatal(err)
		}
		r.FinishedAt = t0.Add(finished)
		m.data, _ = json.Marshal(r)
		return m
	}
	publishJS(t, b.JS, []pubMsg{
		at(result("req-all", "pc-0", 0, "ok", ""), 2*time.Second),
		at(result("req-all", "pc-1", 0, "first", ""), 3*time.Second),
		at(result("req-all", "pc-1", 1, "again", ""), 4*time.Second), // a second copy: the first stays
		at(result("req-all", "pc-3", 1, "disk full", ""), 5*time.Second),
		at(result("req-all", "pc-9", 0, "joined late", ""), 6*time.Second), // stored, attributed, not counted
		at(result("req-all", "pc-2", 0, "", ""), 7*time.Second),
		at(result("req-all", "pc-4", 0, "é ✓", ""), 8*time.Second), // the last expected PC: ex-all fails at 8 s
		at(result("req-p0", "pc-0", 0, "", ""), 2*time.Second),
		at(result("req-p1", "pc-7", 0, "", ""), 3*time.Second), // another PC's Command: unexpected
		result("req-none", "pc-0", 0, "", ""),
		at(result("req-inv-2", "pc-0", 0, `{"cpu": 8}`, "inv"), 9*time.Second),
		at(result("req-inv-1", "pc-0", 0, `{"cpu": 4}`, "inv"), 8*time.Second), // older: the facts stay at 8 CPUs
		result("req-inv-1", "pc-1", 0, `not json`, "inv"),
		result("req-inv-1", "pc-2", 0, `{"cpu":2}`, "inv"),
		at(result("req-all", "pc-0", 0, "ok", ""), 2*time.Second), // a publisher's retry
		{subject: "results.junk", data: []byte("junk")},
	})
}

// wantExecs checks each exec's status and counters, as "<id> <status>
// <success>/<failure>".
func wantExecs(t *testing.T, execs []storage.Execution, want ...string) {
	t.Helper()
	var got []string
	for _, ex := range execs {
		got = append(got, fmt.Sprintf("%s %s %d/%d", ex.ExecID, ex.Status, ex.SuccessCount, ex.FailureCount))
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("execs %q, want %q", got, want)
	}
}

func diffTables(a, b tables) string {
	out := ""
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	for i := range va.NumField() {
		fa, fb := va.Field(i), vb.Field(i)
		if reflect.DeepEqual(fa.Interface(), fb.Interface()) {
			continue
		}
		out += fmt.Sprintf("%s: %d vs %d rows", va.Type().Field(i).Name, fa.Len(), fb.Len())
		for j := range min(fa.Len(), fb.Len()) {
			if !reflect.DeepEqual(fa.Index(j).Interface(), fb.Index(j).Interface()) {
				out += fmt.Sprintf("; first difference at %d:\n  sqlite   %+v\n  postgres %+v", j, fa.Index(j).Interface(), fb.Index(j).Interface())
				break
			}
		}
		out += "\n"
	}
	return out
}
