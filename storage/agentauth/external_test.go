package agentauth_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/internal/testsupport"
	"kanade-backend/storage/agentauth"
	"kanade-backend/storage/broker"
	"kanade-backend/storage/storagetest"
)

// TestExternalServerWithPrintedConfig starts a nats-server from exactly the
// configuration nats-config prints (parsed by the server's own config
// parser, as a deployed server would be) and runs the backend's side
// against it over TCP: the callout, per-PC permissions, and a revocation
// that kicks through the system account.
func TestExternalServerWithPrintedConfig(t *testing.T) {
	dir := t.TempDir()
	ext, created, err := agentauth.LoadOrCreateExternal(dir)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, agentauth.ExternalFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secrets file: %v %v", fi, err)
	}
	again, created, err := agentauth.LoadOrCreateExternal(dir)
	if err != nil || created || again != ext {
		t.Fatalf("second run made new secrets: %v %v", created, err)
	}
	block, err := ext.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{ext.ServicePassword, ext.SystemPassword, ext.IssuerSeed, ext.XKeySeed} {
		if strings.Contains(block, secret) {
			t.Fatal("the printed configuration contains a secret")
		}
	}
	conf := filepath.Join(dir, "nats-server.conf")
	full := fmt.Sprintf("listen: \"127.0.0.1:-1\"\njetstream { store_dir: %q }\n%s", filepath.Join(dir, "js"), block)
	if err := os.WriteFile(conf, []byte(full), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("nats-server refuses the printed configuration: %v", err)
	}
	ns := testsupport.RunNATSServer(t, opts)

	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	// A client of the cluster that is not the backend cannot connect
	// before the backend answers the callout, nor with a guessed password.
	if _, err := nats.Connect(ns.ClientURL(), nats.UserInfo(broker.ServiceUser, "guess"), nats.Timeout(2*time.Second)); err == nil {
		t.Fatal("guessed service password accepted")
	}
	nc, err := broker.Connect(broker.ConnectOptions{URL: ns.ClientURL(), User: broker.ServiceUser, Password: ext.ServicePassword, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := broker.WaitConnected(ctx, nc); err != nil {
		t.Fatal(err)
	}
	sys, err := broker.Connect(broker.ConnectOptions{URL: ns.ClientURL(), User: agentauth.SystemUser, Password: ext.SystemPassword, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	if err := broker.WaitConnected(ctx, sys); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if err := broker.Ensure(ctx, js, 1, logger); err != nil {
		t.Fatalf("the backend cannot make its streams in the global account: %v", err)
	}
	keys, err := ext.Keys()
	if err != nil {
		t.Fatal(err)
	}
	store := agentauth.NewStore(storagetest.Open(t), nil)
	svc, err := agentauth.Start(agentauth.Options{Conn: nc, Keys: keys, Store: store,
		Policy: agentauth.Policy{SharedToken: "legacy"}, Conns: agentauth.SystemConns{NC: sys}, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Stop()

	is, err := store.MintPC(ctx, []string{"A"}, "admin")
	if err != nil {
		t.Fatal(err)
	}
	var denied testsupport.Violations
	var down atomic.Int32
	a, err := nats.Connect(ns.ClientURL(), nats.Token(is[0].Token), nats.ReconnectWait(50*time.Millisecond),
		denied.Option(),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { down.Add(1) }))
	if err != nil {
		t.Fatalf("agent A on the external server: %v", err)
	}
	defer a.Close()
	ajs, _ := jetstream.New(a)
	if _, err := ajs.KeyValue(ctx, "agent_config"); err != nil {
		t.Fatalf("agent A cannot read agent_config: %v", err)
	}
	if err := a.Publish("commands.all", nil); err != nil {
		t.Fatal(err)
	}
	denied.Wait(t, 3*time.Second, `"commands.all"`)
	legacy, err := nats.Connect(ns.ClientURL(), nats.Token("legacy"))
	if err != nil {
		t.Fatalf("shared token: %v", err)
	}
	legacy.Close()

	if _, err := store.RevokePC(ctx, "A", "admin"); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if n, err := svc.Revoked(ctx, "A"); err != nil || n != 1 {
		t.Fatalf("kicked %d through the system account: %v", n, err)
	}
	testsupport.EventuallyTrue(t, 5*time.Second, func() bool { return down.Load() > 0 }, "A not disconnected")
	if time.Since(begin) > 5*time.Second {
		t.Fatal("too slow")
	}
	time.Sleep(300 * time.Millisecond)
	if a.IsConnected() {
		t.Fatal("A reconnected after revocation")
	}
}

func TestExternalFileIsValidated(t *testing.T) {
	dir := t.TempDir()
	if _, found, err := agentauth.LoadExternal(dir); found || err != nil {
		t.Fatalf("empty dir: %v %v", found, err)
	}
	if err := os.WriteFile(filepath.Join(dir, agentauth.ExternalFile), []byte(`{"issuer_seed":"nope"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := agentauth.LoadExternal(dir); err == nil {
		t.Fatal("a broken secrets file was accepted")
	}
	if _, _, err := agentauth.LoadOrCreateExternal(dir); err == nil {
		t.Fatal("a broken secrets file was replaced silently")
	}
}
