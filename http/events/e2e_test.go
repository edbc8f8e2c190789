package events_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"kanade-backend/internal/apptest"
	"kanade-backend/messages"
)

// The acceptance path end to end: an agent (here a plain NATS client)
// publishes an ExecResult on results.<request_id>; the results projector
// stores it and publishes ResultsProjected; a browser's stream shows the
// result event within a second of the publish.
//
// It needs the results projector (actors/projector), which another branch
// brings: without a durable consumer on the RESULTS stream it skips, like
// the dashboard's browser tests do for routes not built yet.
func TestAgentResultReachesStream(t *testing.T) {
	b := apptest.Start(t)
	requireConsumer(t, b, "RESULTS")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", b.URL+"/api/events?access_token="+apptest.Token, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func(within time.Duration) (string, bool) {
		select {
		case l, ok := <-lines:
			return l, ok
		case <-time.After(within):
			return "", false
		}
	}
	for l, ok := next(2 * time.Second); l != ": connected"; l, ok = next(2 * time.Second) {
		if !ok {
			t.Fatal("stream did not open")
		}
	}

	nc, err := nats.Connect(b.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	job := "inventory-probe"
	res := messages.ExecResult{RequestID: "0b7d2f5e-3c1a-4b8e-9d6f-2a4c8e1f0b3d", PcID: "pc-e2e", ExitCode: 0,
		Stdout: "ok", StartedAt: time.Now().Add(-time.Second), FinishedAt: time.Now(), ManifestID: &job}
	payload, _ := json.Marshal(res)
	published := time.Now()
	if err := nc.Publish(messages.ResultsSubject(res.RequestID), payload); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	event := ""
	for {
		l, ok := next(time.Until(published.Add(time.Second)))
		if !ok {
			t.Fatalf("no result event within 1 s of the publish")
		}
		if name, ok := strings.CutPrefix(l, "event: "); ok {
			event = name
		}
		if strings.HasPrefix(l, "data: ") && strings.Contains(l, `"request_id":"`+res.RequestID+`"`) {
			if event != "result" {
				t.Fatalf("the result came as event %q, want result", event)
			}
			t.Logf("result event %v after the publish", time.Since(published).Round(time.Millisecond))
			break
		}
		if l == "" {
			event = "" // an event ends with a blank line
		}
	}
	// And the row is there for the list the dashboard then reloads.
	var row map[string]any
	b.JSON(t, "GET", "/api/results/"+res.RequestID, nil, 200, &row)
	if row["pc_id"] != "pc-e2e" || row["job_id"] != job {
		t.Fatalf("row %v", row)
	}
}

// requireConsumer fails the test unless some actor of the backend consumes
// the stream within 3 s.
func requireConsumer(t *testing.T, b *apptest.Backend, stream string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := b.JS.Stream(ctx, stream)
		var consumers int
		if err == nil {
			info, err := st.Info(ctx)
			if err == nil {
				consumers = info.State.Consumers
			}
		}
		cancel()
		if consumers > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no consumer on stream %s within the deadline: the results projector did not start", stream)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
