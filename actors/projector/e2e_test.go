package projector_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/internal/apptest"
	"kanade-backend/messages"
)

// These tests run the whole backend in-process (embedded NATS listening on
// TCP, SQLite in a temporary directory) and talk to it the way agents do:
// a plain NATS client on the listen address.

type row struct {
	RequestID, PcID string
	ExecID, JobID   *string
	ExitCode        int
	Stdout, Stderr  string
	StartedAt       string
	FinishedAt      string
	StreamSeq       int64
}

func rows(t *testing.T, b *apptest.Backend) []row {
	t.Helper()
	var out []row
	r, err := b.Store.R.QueryContext(context.Background(), `SELECT request_id, pc_id, exec_id, job_id, exit_code, stdout, stderr,
		started_at, finished_at, stream_seq FROM execution_results ORDER BY request_id, pc_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for r.Next() {
		var x row
		if err := r.Scan(&x.RequestID, &x.PcID, &x.ExecID, &x.JobID, &x.ExitCode, &x.Stdout, &x.Stderr, &x.StartedAt, &x.FinishedAt, &x.StreamSeq); err != nil {
			t.Fatal(err)
		}
		out = append(out, x)
	}
	return out
}

func countRows(t *testing.T, b *apptest.Backend, q string) int {
	t.Helper()
	var n int
	if err := b.Store.R.QueryRowContext(context.Background(), q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func agent(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// A broadcast Command answered by three agents, heartbeats, an audit event,
// then the database file deleted and the backend started again on the same
// data directory: the same rows come back from the streams.
func TestBackendProjectsAndRebuildsAfterDatabaseLoss(t *testing.T) {
	dir := t.TempDir()
	b, stop := apptest.StartManual(t, apptest.Options{DataDir: dir})
	nc := agent(t, b.NATSURL)
	for _, pc := range []string{"pc-a", "pc-b", "pc-c"} {
		res := messages.ExecResult{RequestID: "5f0c3bd2-broadcast", PcID: pc, ExitCode: 0, Stdout: "hello from " + pc,
			StartedAt: time.Now().Add(-time.Second), FinishedAt: time.Now()}
		data, _ := json.Marshal(res)
		if err := nc.Publish(messages.ResultsSubject(res.RequestID), data); err != nil {
			t.Fatal(err)
		}
		hb, _ := json.Marshal(messages.Heartbeat{PcID: pc, At: time.Now(), AgentVersion: "0.21.2"})
		if err := nc.Publish(messages.HeartbeatSubject(pc), hb); err != nil {
			t.Fatal(err)
		}
	}
	js, _ := jetstream.New(nc)
	ev := messages.AuditEvent{Actor: "operator", Action: "exec", Payload: map[string]any{"exec_id": "x"}, OccurredAt: time.Now()}
	data, _ := json.Marshal(ev)
	if _, err := js.Publish(context.Background(), ev.Subject(), data); err != nil {
		t.Fatal(err)
	}
	apptest.Eventually(t, 20*time.Second, func() error {
		if n := countRows(t, b, `SELECT COUNT(*) FROM execution_results WHERE request_id = '5f0c3bd2-broadcast'`); n != 3 {
			return fmt.Errorf("%d result rows", n)
		}
		if n := countRows(t, b, `SELECT COUNT(*) FROM agents`); n != 3 {
			return fmt.Errorf("%d agents", n)
		}
		if n := countRows(t, b, `SELECT COUNT(*) FROM audit_log`); n != 1 {
			return fmt.Errorf("%d audit rows", n)
		}
		return nil
	})
	before := rows(t, b)
	stop()

	for _, f := range []string{"backend.db", "backend.db-wal", "backend.db-shm"} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	b2 := apptest.Start(t, apptest.Options{DataDir: dir})
	apptest.Eventually(t, 20*time.Second, func() error {
		if n := countRows(t, b2, `SELECT COUNT(*) FROM execution_results`); n != 3 {
			return fmt.Errorf("%d result rows after the rebuild", n)
		}
		if n := countRows(t, b2, `SELECT COUNT(*) FROM audit_log`); n != 1 {
			return fmt.Errorf("%d audit rows after the rebuild", n)
		}
		return nil
	})
	if after := rows(t, b2); !reflect.DeepEqual(before, after) {
		t.Fatalf("rows differ after the rebuild:\nbefore %+v\nafter  %+v", before, after)
	}
}
