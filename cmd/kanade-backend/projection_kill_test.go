package main

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", to count rows
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker/brokertest"
	"kanade-backend/storage/storagetest"
)

// The backend is killed with SIGKILL while it projects 50 000 results; after
// a restart on the same database the table holds exactly 50 000 rows:
// nothing acknowledged was lost (the checkpoint and the rows commit
// together, acks follow the commit) and nothing was stored twice (the
// batch cut short by the kill is delivered again and its rows are skipped).
// It runs on the SQLite file of the data directory and on PostgreSQL
// (--db-url).
//
// The backend uses an external NATS here (a test server), so that the
// 50 000 results are in the RESULTS stream before the backend starts and it
// is surely killed in the middle of projecting them, however fast the
// machine.
func TestBinaryKilledWhileProjecting(t *testing.T) {
	storagetest.RunDialects(t, testBinaryKilledWhileProjecting)
}

func testBinaryKilledWhileProjecting(t *testing.T, d storagetest.Dialect) {
	const total = 50_000
	dbURL := d.URL(t) // "" for SQLite; skips without PostgreSQL (fails under KANADE_REQUIRE_PG)
	br := brokertest.Start(t, brokertest.Options{Listen: "127.0.0.1:-1"})
	dataDir := t.TempDir()
	httpAddr := freePort(t)
	args := []string{"--bind", httpAddr, "--data-dir", dataDir, "--nats-url", br.ClientURL()}
	if dbURL != "" {
		args = append(args, "--db-url", dbURL)
	}
	env := []string{"KANADE_AUTH_STATIC_TOKEN=t"}

	// A stock client publishes like agents do (two PCs per request id),
	// through JetStream so the test knows the stream holds every result.
	nc, err := nats.Connect(br.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for i := range total {
		r := messages.ExecResult{RequestID: fmt.Sprintf("req-%05d", i/2), PcID: fmt.Sprintf("pc-%d", i%2),
			ExitCode: i % 3, Stdout: "some output", StartedAt: now, FinishedAt: now}
		data, _ := json.Marshal(r)
		if _, err := js.PublishAsync(messages.ResultsSubject(r.RequestID), data, jetstream.WithStallWait(10*time.Second)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		t.Fatal("publish acks did not arrive")
	}
	nc.Close()

	driver, dsn := "sqlite", storage.DSN(filepath.Join(dataDir, "backend.db"), true)
	if dbURL != "" {
		driver, dsn = "pgx", dbURL
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	p2 := killWhileProjecting(t, env, args, httpAddr, total, rowCount(t, db, "execution_results"), 30*time.Second)
	var distinct, cp int
	if err := db.QueryRow("SELECT COUNT(DISTINCT request_id || '/' || pc_id) FROM execution_results").Scan(&distinct); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("SELECT last_seq FROM projection_checkpoints WHERE projection = 'results'").Scan(&cp); err != nil {
		t.Fatal(err)
	}
	if distinct != total || cp != total {
		t.Fatalf("distinct rows %d, checkpoint %d, want %d", distinct, cp, total)
	}
	p2.sigterm(t)
}

// rowCount counts the rows of table in db.
func rowCount(t *testing.T, db *sql.DB, table string) func() int {
	return func() int {
		var n int
		if err := db.QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil {
			t.Fatalf("count rows: %v", err)
		}
		return n
	}
}

// killWhileProjecting starts the backend on a stream holding total
// messages, SIGKILLs it once a tenth of them are projected (several
// batches committed, the next ones in flight), starts it again and waits
// until count reaches total, never more. It returns the second process.
func killWhileProjecting(t *testing.T, env, args []string, httpAddr string, total int, count func() int, within time.Duration) *proc {
	t.Helper()
	p := start(t, env, args...)
	waitHealth(t, "http://"+httpAddr, 30*time.Second)
	deadline := time.Now().Add(within)
	for n := count(); n < total/10; n = count() {
		if time.Now().After(deadline) {
			t.Fatal("projection did not start")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	killedAt := count()
	t.Logf("killed with %d of %d rows projected", killedAt, total)
	if killedAt >= total {
		t.Fatalf("the projection finished before the kill (%d rows); the test proves nothing", killedAt)
	}

	p2 := start(t, env, args...)
	waitHealth(t, "http://"+httpAddr, 30*time.Second)
	// The projection must keep moving: the deadline is for a stall (no new
	// row for within), not for the whole catch-up, whose length depends on
	// how busy the machine is (-race on two shared cores projects a few
	// thousand rows a second).
	deadline = time.Now().Add(within)
	for n, last := count(), -1; n != total; n = count() {
		if n > total {
			t.Fatalf("%d rows, more than the %d published", n, total)
		}
		if n != last {
			last, deadline = n, time.Now().Add(within)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d rows after the restart, want %d (no progress for %v)", n, total, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p2
}
