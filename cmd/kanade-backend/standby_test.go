package main

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"kanade-backend/internal/apptest"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker/brokertest"
)

// Two backends (each its own data directory) on one external NATS: the
// first holds the leader lease and runs the scheduler and the projectors;
// the second is a standby that serves the API, says who leads, and takes
// over within 10 s when the first is SIGKILLed. Across both, every
// instant of a */2 s schedule is fired once (Commands counted at an agent
// by exec id, which is derived from schedule and instant), and every
// result is projected once into each leader's database.
func TestBinaryTwoBackendsOnOneNATSFireOnceAndTakeOver(t *testing.T) {
	br := brokertest.Start(t, brokertest.Options{Listen: "127.0.0.1:-1"})
	const tok = "s3cret"
	env := []string{"KANADE_AUTH_STATIC_TOKEN=" + tok}
	type backend struct {
		p    *proc
		base string
		db   string
	}
	startBackend := func() backend {
		dir, httpAddr := t.TempDir(), freePort(t)
		p := start(t, env, "--bind", httpAddr, "--data-dir", dir, "--nats-url", br.ClientURL())
		waitHealth(t, "http://"+httpAddr, 15*time.Second)
		return backend{p: p, base: "http://" + httpAddr, db: filepath.Join(dir, "backend.db")}
	}

	// The agent: heartbeats, counts Commands by exec id, answers each with
	// a result through JetStream (as agents publish them).
	nc, js := testsupport.ConnectJS(t, br.ClientURL())
	var mu sync.Mutex
	fires := map[string]int{} // exec id → Commands
	firstAt := map[string]time.Time{}
	published := 0
	sub, err := nc.Subscribe(messages.CommandsPCSubject("pc-1"), func(m *nats.Msg) {
		var c messages.Command
		if json.Unmarshal(m.Data, &c) != nil || c.JobID == nil {
			t.Errorf("unexpected command %s", m.Data)
			return
		}
		now := time.Now().UTC()
		mu.Lock()
		fires[*c.JobID]++
		if _, ok := firstAt[*c.JobID]; !ok {
			firstAt[*c.JobID] = time.Now()
		}
		mu.Unlock()
		r, _ := json.Marshal(messages.ExecResult{RequestID: c.RequestID, PcID: "pc-1", Stdout: "hi", StartedAt: now, FinishedAt: now, ManifestID: &c.ID})
		if _, err := js.Publish(t.Context(), messages.ResultsSubject(c.RequestID), r); err != nil {
			t.Errorf("publish result: %v", err)
			return
		}
		mu.Lock()
		published++
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	stopBeats := make(chan struct{})
	defer close(stopBeats)
	go func() {
		for {
			hb, _ := json.Marshal(messages.Heartbeat{PcID: "pc-1", At: time.Now().UTC(), AgentVersion: "0.21.2"})
			_ = nc.Publish(messages.HeartbeatSubject("pc-1"), hb)
			select {
			case <-stopBeats:
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()

	first := startBackend()
	apptest.Eventually(t, 10*time.Second, func() error {
		if code, body := get(t, first.base+"/ready", ""); code != 200 {
			return fmt.Errorf("first /ready %d %s", code, body)
		}
		return nil
	})
	second := startBackend()
	pid1 := first.p.cmd.Process.Pid
	var rd struct {
		Ready   bool     `json:"ready"`
		Waiting []string `json:"waiting"`
		Standby *struct {
			PID     int       `json:"pid"`
			Host    string    `json:"host"`
			Address string    `json:"address"`
			Since   time.Time `json:"since"`
		} `json:"standby"`
	}
	apptest.Eventually(t, 10*time.Second, func() error {
		code, body := get(t, second.base+"/ready", "")
		if err := json.Unmarshal(body, &rd); err != nil || code != 503 || rd.Standby == nil {
			return fmt.Errorf("second /ready %d %s", code, body)
		}
		return nil
	})
	want := "standby: scheduler and projectors run on backend pid " + strconv.Itoa(pid1) + " at host "
	if rd.Ready || len(rd.Waiting) != 1 || !strings.HasPrefix(rd.Waiting[0], want) || rd.Standby.PID != pid1 ||
		"http://"+rd.Standby.Address != first.base || rd.Standby.Since.IsZero() {
		t.Fatalf("second /ready: %+v %+v, want %q… naming %s", rd, rd.Standby, want, first.base)
	}
	if n := strings.Count(second.p.log.String(), "level=WARN msg=\"standby: "); n != 1 {
		t.Fatalf("%d standby warnings on the second backend, want 1:\n%s", n, second.p.log.String())
	}
	code, body := get(t, second.base+"/api/health/fleet", tok)
	if !strings.Contains(string(body), want) {
		t.Fatalf("second fleet health %d does not say standby: %s", code, body)
	}
	wantMetric(t, first.base, "kanade_leader 1")
	wantMetric(t, second.base, "kanade_leader 0")

	// The schedule, through the standby's API (KV is shared).
	post(t, second.base+"/api/jobs", tok, `{"id":"hello","version":"1","execute":{"shell":"powershell","script":"echo hi","timeout":"1m"}}`)
	post(t, second.base+"/api/schedules", tok, `{"id":"tick","cron":"*/2 * * * * *","job_id":"hello","mode":"every_tick","target":{"pcs":["pc-1"]}}`)
	fired := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(fires)
	}
	apptest.Eventually(t, 15*time.Second, func() error {
		if n := fired(); n < 2 {
			return fmt.Errorf("%d instants fired", n)
		}
		return nil
	})
	// A manual run on the standby is refused (502, as when the scheduler
	// is not running) with who runs the scheduler.
	if code, body := postStatus(t, second.base+"/api/schedules/tick/run", tok); code != 502 || !strings.Contains(body, want) {
		t.Fatalf("manual run on the standby: %d %s", code, body)
	}

	// Kill the leader halfway between two instants, once its projection
	// caught up, so that no result is in flight.
	db1, db2 := openRO(t, first.db), openRO(t, second.db)
	apptest.Eventually(t, 10*time.Second, func() error {
		mu.Lock()
		p := published
		mu.Unlock()
		if n := rowCount(t, db1, "execution_results")(); n != p {
			return fmt.Errorf("first projected %d of %d results", n, p)
		}
		if ms := time.Now().UnixMilli() % 2000; ms < 800 || ms > 1300 {
			return fmt.Errorf("not halfway between instants")
		}
		return nil
	})
	before := fired()
	if err := first.p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-first.p.done
	killed := time.Now()

	apptest.Eventually(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		for id, at := range firstAt {
			if at.After(killed) {
				t.Logf("the second fired %s %v after the first was killed", id, at.Sub(killed).Round(time.Millisecond))
				return nil
			}
		}
		return fmt.Errorf("no fire since the kill")
	})
	if !strings.Contains(second.p.log.String(), "took over the leader lease") {
		t.Fatalf("the second does not say it took over:\n%s", second.p.log.String())
	}
	wantMetric(t, second.base, "kanade_leader 1")
	apptest.Eventually(t, 10*time.Second, func() error {
		if n := fired(); n < before+2 {
			return fmt.Errorf("%d instants fired after the takeover", n-before)
		}
		if code, body := get(t, second.base+"/ready", ""); code != 200 {
			return fmt.Errorf("second /ready after the takeover: %d %s", code, body)
		}
		return nil
	})

	// Every instant fired once, every result projected once across both.
	mu.Lock()
	for id, n := range fires {
		if n != 1 {
			t.Errorf("exec %s: %d Commands, want 1", id, n)
		}
	}
	mu.Unlock()
	// Each database is a whole projection of the shared RESULTS stream:
	// the new leader's, empty of results until it led, replays the stream
	// from its own checkpoint, and holds each result once.
	apptest.Eventually(t, 10*time.Second, func() error {
		mu.Lock()
		p := published
		mu.Unlock()
		if n2 := rowCount(t, db2, "execution_results")(); n2 != p || len(resultKeys(t, db2)) != p {
			return fmt.Errorf("the second projected %d results (%d distinct), published %d", n2, len(resultKeys(t, db2)), p)
		}
		return nil
	})
	mu.Lock()
	p := published
	mu.Unlock()
	if n1, k1 := rowCount(t, db1, "execution_results")(), len(resultKeys(t, db1)); n1 != k1 || n1 > p {
		t.Fatalf("the first projected %d results (%d distinct) of %d", n1, k1, p)
	}
	second.p.sigterm(t)
}

// A leader frozen longer than the lease (SIGSTOP) finds another backend
// holding it when it resumes: it exits non-zero, naming the holder, and
// the other keeps leading.
func TestBinaryPausedLeaderExitsWhenAnotherHoldsTheLease(t *testing.T) {
	br := brokertest.Start(t, brokertest.Options{Listen: "127.0.0.1:-1"})
	env := []string{"KANADE_AUTH_STATIC_TOKEN=t"}
	var ps []*proc
	var bases []string
	for range 2 {
		httpAddr := freePort(t)
		ps = append(ps, start(t, env, "--bind", httpAddr, "--data-dir", t.TempDir(), "--nats-url", br.ClientURL()))
		bases = append(bases, "http://"+httpAddr)
		waitHealth(t, bases[len(bases)-1], 15*time.Second)
		apptest.Eventually(t, 10*time.Second, func() error {
			code, body := get(t, bases[len(bases)-1]+"/ready", "")
			if len(ps) == 1 && code == 200 || len(ps) == 2 && strings.Contains(string(body), "standby: ") {
				return nil
			}
			return fmt.Errorf("/ready %d %s", code, body)
		})
	}
	if err := ps[0].cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	apptest.Eventually(t, 15*time.Second, func() error {
		if code, body := get(t, bases[1]+"/ready", ""); code != 200 {
			return fmt.Errorf("second /ready %d %s", code, body)
		}
		return nil
	})
	if err := ps[0].cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ps[0].done:
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() == 0 {
			t.Fatalf("the resumed leader exited with %v, want non-zero", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the resumed leader still runs:\n%s", ps[0].log.String())
	}
	want := "the leader lease is held by backend pid " + strconv.Itoa(ps[1].cmd.Process.Pid)
	if !strings.Contains(ps[0].log.String(), want) {
		t.Fatalf("the resumed leader's log does not say %q:\n%s", want, ps[0].log.String())
	}
	if code, body := get(t, bases[1]+"/ready", ""); code != 200 {
		t.Fatalf("second /ready after the first exited: %d %s", code, body)
	}
	wantMetric(t, bases[1], "kanade_leader 1")
	ps[1].sigterm(t)
}

// wantMetric requires a line of base's /metrics.
func wantMetric(t *testing.T, base, line string) {
	t.Helper()
	_, body := get(t, base+"/metrics", "")
	for _, l := range strings.Split(string(body), "\n") {
		if l == line {
			return
		}
	}
	t.Fatalf("%s/metrics has no line %q", base, line)
}

// openRO opens a backend's SQLite database read-only next to it.
func openRO(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", storage.DSN(path, true))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

// resultKeys are the (request id, pc id) of every projected result.
func resultKeys(t *testing.T, db *sql.DB) map[string]bool {
	t.Helper()
	rows, err := db.Query("SELECT request_id || '/' || pc_id FROM execution_results")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		out[k] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// postStatus sends an empty POST and returns the status and body.
func postStatus(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
