package agentauth_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"kanade-backend/actors/clock"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/agentauth"
	"kanade-backend/storage/broker"
	"kanade-backend/storage/broker/callout"
	"kanade-backend/storage/pgtest"
	"kanade-backend/storage/storagetest"
)

// TestMain checks for leaked goroutines (the callout's workers, the
// enroller, the kicker's sweeps) and stops the PostgreSQL server the
// store tests started.
func TestMain(m *testing.M) {
	code := m.Run()
	if err := pgtest.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreCurrent()); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// harness is an embedded nats-server running the auth callout of a real
// agentauth.Service over a real SQLite store.
type harness struct {
	t       *testing.T
	ns      *broker.Embedded
	nc      *nats.Conn // the backend's own connection (service user)
	js      jetstream.JetStream
	st      *storage.Store
	store   *agentauth.Store
	svc     *agentauth.Service
	audited chan messages.AuditEvent
	tokens  map[string]string // pc_id → last token minted
}

type harnessOptions struct {
	policy    agentauth.Policy
	operators agentauth.OperatorLookup
	clock     clock.Clock
}

func start(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	keys, err := callout.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	keys.XKey = nil // as the backend runs its embedded server (external_test.go seals)
	ns, err := broker.StartEmbedded(broker.EmbeddedOptions{StoreDir: t.TempDir(), Listen: "127.0.0.1:-1", Logger: logger,
		Callout: &broker.CalloutOptions{Keys: keys, Password: "service-pw"}})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := broker.Connect(broker.ConnectOptions{InProcess: ns, User: broker.ServiceUser, Password: "service-pw", Name: "backend", Logger: logger})
	if err != nil {
		ns.Shutdown()
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := broker.Ensure(ctx, js, 1, logger); err != nil {
		t.Fatal(err)
	}
	st := storagetest.Open(t)
	h := &harness{t: t, ns: ns, nc: nc, js: js, st: st, store: agentauth.NewStore(st, o.clock), audited: make(chan messages.AuditEvent, 16), tokens: map[string]string{}}
	groups, err := js.KeyValue(ctx, messages.BucketAgentGroups)
	if err != nil {
		t.Fatal(err)
	}
	h.svc, err = agentauth.Start(agentauth.Options{
		Conn: nc, Keys: keys, Store: h.store, Operators: o.operators, Policy: o.policy,
		Conns: agentauth.EmbeddedConns{Server: ns}, Clock: o.clock, Logger: logger,
		Groups: func(ctx context.Context, pcID string, gs []string) error {
			_, err := groups.Put(ctx, pcID, []byte(`{"groups":["`+strings.Join(gs, `","`)+`"]}`))
			return err
		},
		Audit: func(_ context.Context, ev messages.AuditEvent) error { h.audited <- ev; return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.svc.Stop()
		nc.Close()
		ns.Shutdown()
	})
	return h
}

// client is a NATS client as an agent or the CLI would be, recording the
// permission violations the server reports to it.
type client struct {
	*nats.Conn
	violations testsupport.Violations
}

func (h *harness) connect(token string, opts ...nats.Option) (*client, error) {
	c := &client{}
	opts = append([]nats.Option{
		nats.Name("test-agent"),
		nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond),
		c.violations.Option(),
	}, opts...)
	if token != "" {
		opts = append(opts, nats.Token(token))
	}
	nc, err := nats.Connect(h.ns.ClientURL(), opts...)
	if err != nil {
		return nil, err
	}
	c.Conn = nc
	h.t.Cleanup(nc.Close)
	return c, nil
}

func (h *harness) mustConnect(token string, opts ...nats.Option) *client {
	h.t.Helper()
	c, err := h.connect(token, opts...)
	if err != nil {
		h.t.Fatalf("connect: %v", err)
	}
	return c
}

// violated waits for the server to report a permission violation on
// subject to the client.
func (c *client) violated(t *testing.T, kind, subject string) {
	t.Helper()
	c.violations.Wait(t, 3*time.Second, `Permissions Violation for `+kind+` to "`+subject+`"`)
}

func (c *client) snapshot() []string { return c.violations.All() }

// mint makes a per-PC credential and returns its token.
func (h *harness) mint(pcID string) string {
	h.t.Helper()
	is, err := h.store.MintPC(context.Background(), []string{pcID}, "test")
	if err != nil {
		h.t.Fatal(err)
	}
	h.tokens[pcID] = is[0].Token
	return is[0].Token
}

// observe subscribes the backend to subject and returns what arrives.
func (h *harness) observe(subject string) chan *nats.Msg {
	h.t.Helper()
	ch := make(chan *nats.Msg, 64)
	sub, err := h.nc.ChanSubscribe(subject, ch)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := h.nc.Flush(); err != nil {
		h.t.Fatal(err)
	}
	return ch
}

func received(ch chan *nats.Msg, within time.Duration) *nats.Msg {
	select {
	case m := <-ch:
		return m
	case <-time.After(within):
		return nil
	}
}
