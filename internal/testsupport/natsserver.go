package testsupport

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// RunNATSServer runs a stock nats-server with opts (an operator's external
// NATS, as opposed to the backend's embedded one) for the rest of the test:
// quiet, without signal handlers, ready for connections when it returns,
// shut down at cleanup.
func RunNATSServer(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	opts.NoSigs, opts.NoLog = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready for connections within 10s")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}
