package assets_test

import (
	"strings"
	"testing"
	"time"

	"kanade-backend/cmd/kanade-backend/app"
	"kanade-backend/internal/apptest"
	"kanade-backend/storage/broker/brokertest"
)

// TestBrowserClusterOnJetStreamPage: two backends on one NATS. The
// JetStream page of the second lists both replicas, marks the first as
// the leader and itself as "this replica"; when the first stops, the page
// follows by itself (no reload): one replica left, and it leads.
func TestBrowserClusterOnJetStreamPage(t *testing.T) {
	browserCtx(t)
	br := brokertest.Start(t, brokertest.Options{Listen: "127.0.0.1:-1"})
	opts := apptest.Options{Configure: func(c *app.Config) { c.NATS.URL = br.ClientURL() }}
	a, stopA := apptest.StartManual(t, opts)
	defer stopA()
	apptest.Eventually(t, 10*time.Second, func() error {
		if resp, body := a.Do(t, "GET", "/ready", nil); resp.StatusCode != 200 {
			return errString("A not ready: " + string(body))
		}
		return nil
	})
	b := apptest.Start(t, opts)
	short := func(id string) string { return id[:8] }

	tb := newTab(t, b.URL, 1280)
	tb.signIn()
	tb.open("/jetstream")
	eval[bool](tb, `(window.__noReload = true)`)
	tb.wait("both replicas listed", 15*time.Second, func() (bool, string) {
		got := tb.text("#cluster")
		return strings.Contains(got, "Cluster (2 replicas)") && strings.Contains(got, short(a.ReplicaID)) &&
			strings.Contains(got, short(b.ReplicaID)), got
	})
	rows := eval[[]string](tb, `[...document.querySelectorAll('#cluster tbody tr')].map((r) => r.innerText.replace(/\s+/g, ' '))`)
	for _, r := range rows {
		switch {
		case strings.Contains(r, short(a.ReplicaID)):
			if !strings.Contains(r, "leader") || strings.Contains(r, "this replica") || !strings.Contains(r, strings.TrimPrefix(a.URL, "http://")) {
				t.Fatalf("A's row: %q", r)
			}
		case strings.Contains(r, short(b.ReplicaID)):
			if !strings.Contains(r, "standby") || !strings.Contains(r, "this replica") {
				t.Fatalf("B's row: %q", r)
			}
		default:
			t.Fatalf("unexpected row %q", r)
		}
	}
	if got := tb.text(".cluster-leader"); !strings.Contains(got, "Leader: "+short(a.ReplicaID)) {
		t.Fatalf("leader line %q", got)
	}

	// A stops gracefully: it leaves the registry and resigns the lease, and
	// B takes over.
	stopA()
	tb.wait("B alone, leading", 20*time.Second, func() (bool, string) {
		got := tb.text("#cluster")
		return strings.Contains(got, "Cluster (1 replica)") && !strings.Contains(got, short(a.ReplicaID)) &&
			strings.Contains(tb.text(".cluster-leader"), "Leader: "+short(b.ReplicaID)) && strings.Contains(got, "leader"), got
	})
	if !eval[bool](tb, `window.__noReload === true`) {
		t.Fatal("the page reloaded")
	}
}
