package callout_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"kanade-backend/storage/broker"
	"kanade-backend/storage/broker/callout"
)

// start runs the embedded server with the callout answered by a.
func start(t *testing.T, a callout.Authorizer) *broker.Embedded {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	keys, err := callout.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := broker.StartEmbedded(broker.EmbeddedOptions{StoreDir: t.TempDir(), Listen: "127.0.0.1:-1", Logger: logger,
		Callout: &broker.CalloutOptions{Keys: keys, Password: "pw"}})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := broker.Connect(broker.ConnectOptions{InProcess: ns, User: broker.ServiceUser, Password: "pw", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := callout.Start(callout.Options{Conn: nc, Keys: keys, Authorizer: a, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Stop(); nc.Close(); ns.Shutdown() })
	return ns
}

func TestGrantNameExpiryAndRefusal(t *testing.T) {
	var asked atomic.Int32
	ns := start(t, callout.AuthorizerFunc(func(_ context.Context, r callout.Request) (callout.Grant, error) {
		asked.Add(1)
		if r.Token != "good" {
			return callout.Grant{}, errors.New("no")
		}
		if r.ClientName != "probe" || r.ServerID == "" || r.ClientID == 0 {
			return callout.Grant{}, errors.New("the request lacks client or server details")
		}
		return callout.Grant{Name: "probe-user", Expires: time.Second}, nil
	}))
	if _, err := nats.Connect(ns.ClientURL(), nats.Token("bad")); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("refused token: %v", err)
	}
	var reconnects atomic.Int32
	nc, err := nats.Connect(ns.ClientURL(), nats.Token("good"), nats.Name("probe"), nats.ReconnectWait(50*time.Millisecond),
		nats.ReconnectHandler(func(*nats.Conn) { reconnects.Add(1) }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cz, err := ns.Server().Connz(&server.ConnzOptions{User: "probe-user", Username: true})
	if err != nil || len(cz.Conns) != 1 {
		t.Fatalf("connz by the grant's name: %v %v", cz, err)
	}
	// The grant expires after a second: the server closes the connection,
	// the client comes back and is asked about again.
	deadline := time.Now().Add(5 * time.Second)
	for reconnects.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the expiring grant did not end the connection")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if asked.Load() < 3 {
		t.Fatalf("asked %d times", asked.Load())
	}
}

// A client with every right may subscribe to everything, yet it never
// sees an authorization request (they carry other clients' tokens).
func TestRequestsStayPrivate(t *testing.T) {
	var p callout.Grant
	p.Permissions.Sub.Deny.Add(callout.PrivateSubjects)
	ns := start(t, callout.AuthorizerFunc(func(context.Context, callout.Request) (callout.Grant, error) { return p, nil }))
	spy, err := nats.Connect(ns.ClientURL(), nats.Token("spy"))
	if err != nil {
		t.Fatal(err)
	}
	defer spy.Close()
	got := make(chan *nats.Msg, 8)
	if _, err := spy.ChanSubscribe(">", got); err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	other, err := nats.Connect(ns.ClientURL(), nats.Token("secret-of-another-client"))
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	select {
	case m := <-got:
		t.Fatalf("the spy saw %s", m.Subject)
	case <-time.After(300 * time.Millisecond):
	}
}
