package agentauth_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/actors/clock"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage/agentauth"
)

// TestRevokeDisconnectsWithinFiveSeconds: revoking A's credential ends A's
// live connection at once and its reconnection is refused, while B keeps
// running.
func TestRevokeDisconnectsWithinFiveSeconds(t *testing.T) {
	h := start(t, harnessOptions{})
	ctx := context.Background()
	var aDown, aUp atomic.Int32
	a := h.mustConnect(h.mint("A"),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { aDown.Add(1) }),
		nats.ReconnectHandler(func(*nats.Conn) { aUp.Add(1) }))
	b := h.mustConnect(h.mint("B"))

	if _, err := h.store.RevokePC(ctx, "A", "admin"); err != nil {
		t.Fatal(err)
	}
	revokedAt := time.Now()
	if n, err := h.svc.Revoked(ctx, "A"); err != nil || n != 1 {
		t.Fatalf("kicked %d connections of A: %v", n, err)
	}
	testsupport.EventuallyTrue(t, 5*time.Second, func() bool { return aDown.Load() > 0 }, "A still connected after revocation")
	if took := time.Since(revokedAt); took > 5*time.Second {
		t.Fatalf("disconnect took %v", took)
	}
	// It keeps trying and keeps being refused.
	time.Sleep(500 * time.Millisecond)
	if a.IsConnected() || aUp.Load() != 0 {
		t.Fatal("A reconnected with a revoked credential")
	}
	if _, err := h.connect(tokenOf(t, h, "A")); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("a new connection with the revoked token: %v", err)
	}
	if !b.IsConnected() {
		t.Fatal("B was disconnected by A's revocation")
	}
}

// tokenOf mints nothing: it returns the token minted earlier for pcID by
// looking it up in the harness's record.
func tokenOf(t *testing.T, h *harness, pcID string) string {
	t.Helper()
	tok, ok := h.tokens[pcID]
	if !ok {
		t.Fatalf("no token minted for %s", pcID)
	}
	return tok
}

// TestRevokingOneCredentialKeepsTheOther: a PC being moved to a new token
// keeps running on it while the old one is revoked.
func TestRevokingOneCredentialKeepsTheOther(t *testing.T) {
	h := start(t, harnessOptions{})
	ctx := context.Background()
	old := h.mint("A")
	oldConn := h.mustConnect(old)
	is, err := h.store.MintPC(ctx, []string{"A"}, "admin")
	if err != nil {
		t.Fatal(err)
	}
	newConn := h.mustConnect(is[0].Token)
	creds, _, err := h.store.ListPC(ctx, "A", 10, 0)
	if err != nil || len(creds) != 2 {
		t.Fatalf("credentials of A: %v %v", creds, err)
	}
	oldID := creds[slices.IndexFunc(creds, func(c agentauth.Credential) bool { return c.ID != is[0].ID })].ID
	if _, err := h.store.Revoke(ctx, oldID, agentauth.Match{PcID: "A"}, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Revoked(ctx, "A"); err != nil {
		t.Fatal(err)
	}
	testsupport.EventuallyTrue(t, 5*time.Second, func() bool { return !oldConn.IsConnected() }, "old connection still up")
	testsupport.EventuallyTrue(t, 5*time.Second, func() bool { return newConn.IsConnected() }, "the connection on the new credential did not come back")
	time.Sleep(300 * time.Millisecond)
	if oldConn.IsConnected() {
		t.Fatal("the revoked credential reconnected")
	}
}

// TestSecondSweepCatchesAConnectionAuthorizedDuringTheRevocation uses a fake
// clock for the sweep a revocation schedules.
func TestSecondSweepCatchesAConnectionAuthorizedDuringTheRevocation(t *testing.T) {
	h := start(t, harnessOptions{})
	fake := clock.NewFake(time.Now())
	k := &agentauth.Kicker{Conns: agentauth.EmbeddedConns{Server: h.ns}, Clock: fake, Again: 3 * time.Second}
	defer k.Stop()
	tok := h.mint("A")
	if n, err := k.Kick(context.Background(), agentauth.UserOfPC("A")); err != nil || n != 0 {
		t.Fatalf("first sweep: %d %v", n, err)
	}
	// A connection that slipped in after the first sweep…
	var down atomic.Int32
	h.mustConnect(tok, nats.DisconnectErrHandler(func(*nats.Conn, error) { down.Add(1) }))
	fake.Advance(3 * time.Second)
	testsupport.EventuallyTrue(t, 5*time.Second, func() bool { return down.Load() > 0 }, "the second sweep did not kick the late connection")
}

func TestCredentialUseIsRecorded(t *testing.T) {
	h := start(t, harnessOptions{})
	ctx := context.Background()
	h.mustConnect(h.mint("A"))
	if err := h.svc.Authorizer.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	creds, _, err := h.store.ListPC(ctx, "A", 10, 0)
	if err != nil || len(creds) != 1 || creds[0].LastUsedAt.IsZero() || creds[0].State != agentauth.StateActive {
		t.Fatalf("credential after use: %+v %v", creds, err)
	}
}

// TestEnrollmentBindsToThePCTheAgentRunsAs walks an unknown PC through
// enrollment the way the upstream agent would connect.
func TestEnrollmentBindsToThePCTheAgentRunsAs(t *testing.T) {
	h := start(t, harnessOptions{})
	ctx := context.Background()
	is, err := h.store.CreateEnrollments(ctx, 1, []string{"kitted"}, time.Now().Add(time.Hour), "admin")
	if err != nil {
		t.Fatal(err)
	}
	tok, id := is[0].Token, is[0].ID
	var reconnected atomic.Int32
	agent := h.mustConnect(tok, nats.ReconnectHandler(func(*nats.Conn) { reconnected.Add(1) }))

	// While enrolling, a second agent with the same token is refused…
	if _, err := h.connect(tok); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("second connection with a pending enrollment token: %v", err)
	}
	// …and the agent cannot speak for any PC.
	if err := agent.Publish("heartbeat.NEW-PC", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	agent.violated(t, "Publish", "heartbeat.NEW-PC")

	// The agent starts as the upstream one does: its own Commands (refused
	// until bound) and its log requests, which name it.
	cmds := make(chan *nats.Msg, 4)
	if _, err := agent.ChanSubscribe("commands.pc.NEW-PC", cmds); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Subscribe("logs.fetch.NEW-PC", func(m *nats.Msg) { _ = m.Respond([]byte("hello")) }); err != nil {
		t.Fatal(err)
	}
	testsupport.EventuallyTrue(t, 5*time.Second, func() bool {
		c, err := h.store.Get(ctx, id)
		return err == nil && c.State == agentauth.StateActive && c.PcID != nil && *c.PcID == "NEW-PC"
	}, "enrollment not bound to NEW-PC")
	select {
	case ev := <-h.audited:
		if ev.Action != messages.ActionAgentEnrolled || *ev.Target != "NEW-PC" || ev.Actor != messages.ActorEnrollment {
			t.Fatalf("audit %+v", ev)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no audit event for the enrollment")
	}
	kv, err := h.js.KeyValue(ctx, messages.BucketAgentGroups)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(ctx, "NEW-PC"); err != nil || string(e.Value()) != `{"groups":["kitted"]}` {
		t.Fatalf("groups of the enrolled PC: %v %v", e, err)
	}

	// Kicked, reconnected with the same token, now as NEW-PC: its
	// subscriptions are back and its Commands reach it.
	testsupport.EventuallyTrue(t, 10*time.Second, func() bool { return reconnected.Load() > 0 && agent.IsConnected() }, "agent did not reconnect")
	testsupport.EventuallyTrue(t, 5*time.Second, func() bool {
		_ = h.nc.Publish("commands.pc.NEW-PC", []byte(`{}`))
		return received(cmds, 200*time.Millisecond) != nil
	}, "the enrolled agent does not receive its Commands")
	beats := h.observe("heartbeat.>")
	if err := agent.Publish("heartbeat.NEW-PC", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if m := received(beats, 2*time.Second); m == nil {
		t.Fatal("the enrolled agent's heartbeat did not arrive")
	}
	// One-time: the token is NEW-PC's credential now, and nobody else's.
	other := h.mustConnect(tok)
	if err := other.Publish("heartbeat.OTHER-PC", nil); err != nil {
		t.Fatal(err)
	}
	other.violated(t, "Publish", "heartbeat.OTHER-PC")
}

func TestEnrollmentRefusals(t *testing.T) {
	h := start(t, harnessOptions{})
	ctx := context.Background()
	expired, err := h.store.CreateEnrollments(ctx, 1, nil, time.Now().Add(-time.Minute), "admin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.connect(expired[0].Token); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("expired enrollment token: %v", err)
	}

	// A PC that has its own credential is not taken over: the token is
	// revoked and its connection ends.
	h.mint("TAKEN")
	is, err := h.store.CreateEnrollments(ctx, 1, nil, time.Now().Add(time.Hour), "admin")
	if err != nil {
		t.Fatal(err)
	}
	var down atomic.Int32
	thief := h.mustConnect(is[0].Token, nats.DisconnectErrHandler(func(*nats.Conn, error) { down.Add(1) }))
	if _, err := thief.Subscribe("logs.fetch.TAKEN", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	testsupport.EventuallyTrue(t, 5*time.Second, func() bool {
		c, err := h.store.Get(ctx, is[0].ID)
		return err == nil && c.State == agentauth.StateRevoked
	}, "enrollment claiming a credentialed PC not revoked")
	testsupport.EventuallyTrue(t, 5*time.Second, func() bool { return down.Load() > 0 }, "the refused enrollment stays connected")
	time.Sleep(300 * time.Millisecond)
	if thief.IsConnected() {
		t.Fatal("the refused enrollment reconnected")
	}
	creds, _, _ := h.store.ListPC(ctx, "TAKEN", 10, 0)
	if len(creds) != 1 {
		t.Fatalf("TAKEN has %d credentials", len(creds))
	}

	// A wildcard subscription names no PC: nothing is bound.
	wild, err := h.store.CreateEnrollments(ctx, 1, nil, time.Now().Add(time.Hour), "admin")
	if err != nil {
		t.Fatal(err)
	}
	w := h.mustConnect(wild[0].Token)
	if _, err := w.Subscribe("logs.fetch.*", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	if c, err := h.store.Get(ctx, wild[0].ID); err != nil || c.State != agentauth.StatePending {
		t.Fatalf("wildcard enrollment: %+v %v", c, err)
	}
	// Reading a whole bucket while enrolling is fine; writing is not.
	js, _ := jetstream.New(w.Conn)
	kv, err := js.KeyValue(ctx, messages.BucketAgentConfig)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(short(t), "global", []byte(`{}`)); err == nil {
		t.Fatal("enrolling agent wrote agent_config")
	}
}
