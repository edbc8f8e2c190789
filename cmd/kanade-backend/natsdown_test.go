package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
)

// The backend starts while its external NATS is away for 30 s: HTTP and
// /health answer at once, /ready and fleet health say what is waiting,
// and once NATS is reachable the 13 resources are created and the
// projections and schedules run within seconds, without a restart and
// without the projectors' supervisor churning against missing streams.
func TestBinaryStartsWhileNATSIsDown(t *testing.T) {
	natsAddr, httpAddr := freePort(t), freePort(t)
	base := "http://" + httpAddr
	const tok = "s3cret"
	t0 := time.Now()
	p := start(t, []string{"KANADE_AUTH_STATIC_TOKEN=" + tok},
		"--bind", httpAddr, "--data-dir", t.TempDir(), "--nats-url", "nats://"+natsAddr)
	waitHealth(t, base, 10*time.Second)
	took := time.Since(t0)
	// About 0.4 s on a quiet machine (the process start included); the
	// bound leaves room for a loaded CI box. Before, HTTP waited 15 s.
	t.Logf("/health 200 %v after start with NATS down", took)
	if took > 5*time.Second {
		t.Errorf("/health took %v with NATS down, want about 1s", took)
	}
	code, body := get(t, base+"/ready", "")
	if code != 503 || !strings.Contains(string(body), "nats connection (nats://"+natsAddr+")") {
		t.Fatalf("/ready with NATS down: %d %s", code, body)
	}
	// The database answers meanwhile; what needs NATS says so at once.
	if code, body := get(t, base+"/api/schedules", tok); code != 200 || strings.TrimSpace(string(body)) != "[]" {
		t.Fatalf("schedules with NATS down: %d %s", code, body)
	}
	code, body = get(t, base+"/api/health/fleet", tok)
	if code != 503 || !strings.Contains(string(body), `"name":"bootstrap"`) {
		t.Fatalf("fleet health with NATS down: %d %s", code, body)
	}

	time.Sleep(30*time.Second - time.Since(t0))
	host, port, _ := net.SplitHostPort(natsAddr)
	pn, _ := strconv.Atoi(port)
	ns := testsupport.RunNATSServer(t, &server.Options{Host: host, Port: pn, JetStream: true, StoreDir: t.TempDir()})
	up := time.Now()

	within := func(d time.Duration, what string, f func() error) {
		t.Helper()
		for {
			err := f()
			if err == nil {
				t.Logf("%s %v after NATS came up", what, time.Since(up).Round(time.Millisecond))
				return
			}
			if time.Since(up) > d {
				t.Fatalf("%s not within %v of NATS coming up: %v", what, d, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	within(5*time.Second, "ready", func() error {
		if code, body := get(t, base+"/ready", ""); code != 200 {
			return fmt.Errorf("/ready %d %s", code, body)
		}
		return nil
	})
	wantAllResources(t, httpAddr, tok)

	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	hb, _ := json.Marshal(messages.Heartbeat{PcID: "pc-1", At: time.Now().UTC(), AgentVersion: "0.21.2"})
	if err := nc.Publish("heartbeat.pc-1", hb); err != nil {
		t.Fatal(err)
	}
	within(5*time.Second, "heartbeat projected", func() error {
		_ = nc.Publish("heartbeat.pc-1", hb)
		if code, body := get(t, base+"/api/agents/pc-1", tok); code != 200 {
			return fmt.Errorf("agent: %d %s", code, body)
		}
		return nil
	})
	post(t, base+"/api/jobs", tok, `{"id":"hello","version":"1","execute":{"shell":"powershell","script":"echo hi","timeout":"1m"}}`)
	post(t, base+"/api/schedules", tok, `{"id":"tick","cron":"* * * * * *","job_id":"hello","target":{"pcs":["pc-1"]}}`)
	within(10*time.Second, "a scheduled fire", func() error {
		code, body := get(t, base+"/api/executions?job_id=hello", tok)
		if code != 200 || !strings.Contains(string(body), `"job_id":"hello"`) {
			return fmt.Errorf("executions: %d %s", code, body)
		}
		return nil
	})
	if n := strings.Count(p.log.String(), "projector failed; restarting it"); n != 0 {
		t.Fatalf("projectors restarted %d times", n)
	}
	p.sigterm(t)
}

// post sends a JSON body and requires 200.
func post(t *testing.T, url, token, body string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("POST %s: %d %s", url, resp.StatusCode, b)
	}
}
