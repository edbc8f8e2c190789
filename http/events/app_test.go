package events_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"kanade-backend/internal/apptest"
	"kanade-backend/messages"
)

// The whole backend: EventSource-style auth (token in the query, no
// header), a projected result reaching the browser within a second, the
// metrics, and a shutdown that does not wait for open streams.
func TestBackendStream(t *testing.T) {
	b, stop := apptest.StartManual(t)
	defer stop()

	// Without a token: 401 like every /api route.
	resp, _ := http.Get(b.URL + "/api/events")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %d", resp.StatusCode)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", b.URL+"/api/events?access_token="+apptest.Token, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("stream: %d %s", resp.StatusCode, body)
	}
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	waitFor := func(prefix string, within time.Duration) string {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("stream ended waiting for %q", prefix)
				}
				if strings.HasPrefix(l, prefix) {
					return l
				}
			case <-deadline:
				t.Fatalf("no %q within %v", prefix, within)
			}
		}
	}
	waitFor(": connected", 2*time.Second)
	apptest.Eventually(t, 2*time.Second, func() error {
		_, body := b.Do(t, "GET", "/metrics", nil)
		if !strings.Contains(string(body), "kanade_live_clients 1") {
			return errString("kanade_live_clients is not 1")
		}
		return nil
	})

	published := time.Now()
	b.Actors.EventStream.Publish(&messages.ResultsProjected{Results: []messages.ProjectedResult{
		{RequestID: "req-1", PcID: "pc-1", ExecID: "exec-1", JobID: "job-1", FinishedAt: published},
	}})
	waitFor("event: result", time.Second)
	data := waitFor("data: ", time.Second)
	if took := time.Since(published); took > time.Second {
		t.Fatalf("result event after %v", took)
	}
	if !strings.Contains(data, `"request_id":"req-1"`) {
		t.Fatalf("data %s", data)
	}

	t0 := time.Now()
	stop()
	if took := time.Since(t0); took > 3*time.Second {
		t.Fatalf("stopping with an open stream took %v", took)
	}
	for range lines {
	}
}

type errString string

func (e errString) Error() string { return string(e) }
