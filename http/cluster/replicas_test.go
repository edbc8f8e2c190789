package cluster_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"kanade-backend/cmd/kanade-backend/app"
	"kanade-backend/http/cluster"
	"kanade-backend/internal/apptest"
	"kanade-backend/internal/sim"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage/broker/brokertest"
	"kanade-backend/storage/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// Three backends (replicas) on one NATS sharing one PostgreSQL database,
// as behind a load balancer. The first holds the leader lease, so it alone
// projects results; the others serve the same API and the same live
// events:
//   - /api/cluster on every replica lists the three and the same leader,
//     and a replica that stops leaves the list at once;
//   - an SSE client on B sees a result that A projected within a second;
//   - a client that disconnects from B and resumes on C with
//     Last-Event-ID gets every event it missed, in order, none lost;
//   - agents, executions and results answer the same on every replica.
func TestReplicasShareTheAPIAndTheLiveEvents(t *testing.T) {
	br := brokertest.Start(t, brokertest.Options{Listen: "127.0.0.1:-1"})
	dbURL := pgtest.URL(t)
	opts := apptest.Options{DBURL: dbURL, Configure: func(c *app.Config) { c.NATS.URL = br.ClientURL() }}
	a := apptest.Start(t, opts)
	apptest.Eventually(t, 10*time.Second, func() error {
		if resp, body := a.Do(t, "GET", "/ready", nil); resp.StatusCode != 200 {
			return fmt.Errorf("A not ready: %s", body)
		}
		return nil
	})
	b := apptest.Start(t, opts)
	c, stopC := apptest.StartManual(t, opts)
	defer stopC()
	all := []*apptest.Backend{a, b, c}

	// The cluster, as every replica sees it.
	apptest.Eventually(t, 10*time.Second, func() error {
		for _, r := range all {
			v := clusterOf(t, r)
			if v.Leader == nil || *v.Leader != a.ReplicaID || v.Self != r.ReplicaID || v.LeaseRevision == 0 || len(v.Replicas) != 3 {
				return fmt.Errorf("%s sees %+v", r.URL, v)
			}
			for _, e := range v.Replicas {
				want := map[string]string{a.ReplicaID: a.URL, b.ReplicaID: b.URL, c.ReplicaID: c.URL}[e.ID]
				if "http://"+e.Address != want || e.Leader != (e.ID == a.ReplicaID) || time.Since(e.LastSeen) > 15*time.Second {
					return fmt.Errorf("%s lists %+v", r.URL, e)
				}
			}
		}
		return nil
	})

	// An agent's result, projected by A (the leader), reaches a browser on B.
	onB := openStream(t, b, "")
	_, js := testsupport.ConnectJS(t, br.ClientURL())
	publishResult := func(requestID string) time.Time {
		now := time.Now().UTC()
		job := "probe"
		r, _ := json.Marshal(messages.ExecResult{RequestID: requestID, PcID: "pc-live", Stdout: "ok", StartedAt: now, FinishedAt: now, ManifestID: &job})
		if _, err := js.Publish(context.Background(), messages.ResultsSubject(requestID), r); err != nil {
			t.Fatal(err)
		}
		return now
	}
	first := "0b7d2f5e-3c1a-4b8e-9d6f-000000000001"
	published := publishResult(first)
	ev := onB.waitFor(t, "result", first, time.Until(published.Add(time.Second)))
	t.Logf("result projected by A reached B's stream %v after the agent published it", time.Since(published).Round(time.Millisecond))

	// B's client goes away; three more results are projected meanwhile;
	// it resumes on C from the last id it got.
	onB.close()
	missed := []string{"0b7d2f5e-3c1a-4b8e-9d6f-000000000002", "0b7d2f5e-3c1a-4b8e-9d6f-000000000003", "0b7d2f5e-3c1a-4b8e-9d6f-000000000004"}
	for _, id := range missed {
		publishResult(id)
	}
	apptest.Eventually(t, 10*time.Second, func() error {
		if resp, _ := c.Do(t, "GET", "/api/results/"+missed[2], nil); resp.StatusCode != 200 {
			return fmt.Errorf("last result not projected yet: %d", resp.StatusCode)
		}
		return nil
	})
	onC := openStream(t, c, ev.id)
	next, seen := ev.seq+1, map[string]bool{}
	for len(seen) < len(missed) {
		got := onC.next(t, 5*time.Second)
		if got.name == "reset" || got.seq != next {
			t.Fatalf("resumed after %d on C: got %+v, want sequence %d", ev.seq, got, next)
		}
		next++
		for _, id := range missed {
			if got.name == "result" && strings.Contains(got.data, id) {
				seen[id] = true
			}
		}
	}

	// Every replica answers the same lists from the shared database.
	a.JSON(t, "POST", "/api/jobs", map[string]any{"id": "hello", "version": "1",
		"execute": map[string]any{"shell": "powershell", "script": "echo hi", "timeout": "1m"}}, 200, nil)
	b.StartFleet(t, sim.Config{NATSURL: br.ClientURL(), Agents: 3, Prefix: "REP-", Heartbeat: time.Second,
		RunTime: sim.Range{Min: time.Millisecond, Max: time.Millisecond}})
	apptest.Eventually(t, 10*time.Second, func() error {
		var agents []map[string]any
		c.JSON(t, "GET", "/api/agents", nil, 200, &agents)
		if len(agents) != 3 {
			return fmt.Errorf("%d agents on C", len(agents))
		}
		return nil
	})
	var execd struct {
		ExecID string `json:"exec_id"`
	}
	c.JSON(t, "POST", "/api/exec/hello", map[string]any{"target": map[string]any{"all": true}}, 200, &execd)
	apptest.Eventually(t, 10*time.Second, func() error {
		var ex map[string]any
		b.JSON(t, "GET", "/api/executions/"+execd.ExecID, nil, 200, &ex)
		if ex["success_count"] != float64(3) {
			return fmt.Errorf("execution on B: %v", ex)
		}
		return nil
	})
	for _, path := range []string{"/api/agents", "/api/executions", "/api/results?limit=100", "/api/results?request_id=" + first} {
		// The agents heartbeat every second: a heartbeat projected between
		// two of the reads differs for a good reason, so read again.
		apptest.Eventually(t, 5*time.Second, func() error {
			_, want := a.Do(t, "GET", path, nil)
			for _, r := range all[1:] {
				if _, got := r.Do(t, "GET", path, nil); !bytes.Equal(got, want) {
					return fmt.Errorf("GET %s differs:\nA %s\n%s %s", path, want, r.URL, got)
				}
			}
			return nil
		})
	}

	// C stops: it leaves the registry at once, not at the TTL.
	stopC()
	apptest.Eventually(t, 3*time.Second, func() error {
		if v := clusterOf(t, a); len(v.Replicas) != 2 {
			return fmt.Errorf("after C stopped: %+v", v)
		}
		return nil
	})
}

func clusterOf(t *testing.T, b *apptest.Backend) cluster.View {
	t.Helper()
	var v cluster.View
	b.JSON(t, "GET", "/api/cluster", nil, 200, &v)
	return v
}

// sse is one /api/events connection read event by event.
type sse struct {
	events chan sseEvent
	cancel context.CancelFunc
}

type sseEvent struct {
	id, name, data string
	seq            uint64
}

func openStream(t *testing.T, b *apptest.Backend, lastEventID string) *sse {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", b.URL+"/api/events?access_token="+apptest.Token, nil)
	req.Header.Set("Accept", "text/event-stream")
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		cancel()
		t.Fatalf("stream: %d", resp.StatusCode)
	}
	s := &sse{events: make(chan sseEvent, 1000), cancel: cancel}
	connected := make(chan struct{})
	go func() {
		defer close(s.events)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev sseEvent
		for sc.Scan() {
			l := sc.Text()
			switch {
			case l == ": connected":
				close(connected)
			case strings.HasPrefix(l, "id: "):
				ev.id = strings.TrimPrefix(l, "id: ")
				ev.seq, _ = strconv.ParseUint(ev.id, 10, 64)
			case strings.HasPrefix(l, "event: "):
				ev.name = strings.TrimPrefix(l, "event: ")
			case strings.HasPrefix(l, "data: "):
				ev.data = strings.TrimPrefix(l, "data: ")
			case l == "" && ev.name != "":
				s.events <- ev
				ev = sseEvent{}
			}
		}
	}()
	select {
	case <-connected:
	case <-time.After(5 * time.Second):
		s.close()
		t.Fatal("stream did not open")
	}
	t.Cleanup(s.close)
	return s
}

func (s *sse) close() {
	s.cancel()
	for range s.events {
	}
}

func (s *sse) next(t *testing.T, within time.Duration) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatal("stream ended")
		}
		return ev
	case <-time.After(within):
		t.Fatalf("no event within %v", within)
	}
	return sseEvent{}
}

// waitFor returns the first event named name whose data contains text.
func (s *sse) waitFor(t *testing.T, name, text string, within time.Duration) sseEvent {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("no %s event with %q within the deadline", name, text)
		}
		select {
		case ev, ok := <-s.events:
			if !ok {
				t.Fatal("stream ended")
			}
			if ev.name == name && strings.Contains(ev.data, text) {
				return ev
			}
		case <-time.After(left):
			t.Fatalf("no %s event with %q within the deadline", name, text)
		}
	}
}
