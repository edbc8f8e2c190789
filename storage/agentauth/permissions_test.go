package agentauth_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/messages"
	"kanade-backend/storage/agentauth"
)

// seed writes what agents read, as the backend would.
func (h *harness) seed(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	put := func(bucket, key, value string) {
		kv, err := h.js.KeyValue(ctx, bucket)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, key, []byte(value)); err != nil {
			t.Fatal(err)
		}
	}
	put(messages.BucketAgentConfig, "global", `{"heartbeat_interval":"30s"}`)
	put(messages.BucketScriptCurrent, "hello", "1.0.0")
	put(messages.BucketScriptStatus, "hello", "ACTIVE")
	put(messages.BucketAgentGroups, "A", `{"groups":["canary"]}`)
	put(messages.BucketAgentGroups, "B", `{"groups":["secret-lab"]}`)
	obs, err := h.js.ObjectStore(ctx, messages.ObjectStoreAgentReleases)
	if err != nil {
		t.Fatal(err)
	}
	// Larger than one chunk, so that the get runs a real ordered consumer.
	if _, err := obs.PutBytes(ctx, "1.2.3", bytes.Repeat([]byte("agent"), 1_600_000)); err != nil {
		t.Fatal(err)
	}
}

// TestPCCredentialGetsOnlyItsOwnSubjects is the acceptance test of issue
// 17: a client holding PC A's token does what the upstream agent does and
// nothing more, on the real embedded server.
func TestPCCredentialGetsOnlyItsOwnSubjects(t *testing.T) {
	h := start(t, harnessOptions{})
	h.seed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a := h.mustConnect(h.mint("A"))

	// Allowed: its own Commands, broadcasts, group Commands and kills.
	inbox := make(chan *nats.Msg, 16)
	for _, s := range []string{"commands.pc.A", "commands.all", "commands.group.canary", "kill.*"} {
		if _, err := a.ChanSubscribe(s, inbox); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"commands.pc.A", "commands.all", "commands.group.canary", "kill.exec-1"} {
		if err := h.nc.Publish(s, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		if m := received(inbox, 2*time.Second); m == nil || m.Subject != s {
			t.Fatalf("agent A did not receive %s (got %v)", s, m)
		}
	}

	// Allowed: its heartbeat and results reach the backend.
	beats, results := h.observe("heartbeat.>"), h.observe("results.>")
	if err := a.Publish("heartbeat.A", []byte(`{"pc_id":"A"}`)); err != nil {
		t.Fatal(err)
	}
	if m := received(beats, 2*time.Second); m == nil || m.Subject != "heartbeat.A" {
		t.Fatalf("heartbeat.A did not reach the backend: %v", m)
	}
	if err := a.Publish("results.req-1", []byte(`{"pc_id":"A"}`)); err != nil {
		t.Fatal(err)
	}
	if m := received(results, 2*time.Second); m == nil {
		t.Fatal("results.req-1 did not reach the backend")
	}

	// Allowed: answering a log request for itself.
	if _, err := a.Subscribe("logs.fetch.A", func(m *nats.Msg) { _ = m.Respond([]byte("log line")) }); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	if m, err := h.nc.Request("logs.fetch.A", []byte(`{"tail_lines":10}`), 2*time.Second); err != nil || string(m.Data) != "log line" {
		t.Fatalf("logs.fetch.A: %v %v", m, err)
	}

	// Allowed: reading what agents read, as nats.go does it.
	js, err := jetstream.New(a.Conn)
	if err != nil {
		t.Fatal(err)
	}
	for _, read := range []struct{ bucket, key, want string }{
		{messages.BucketAgentConfig, "global", `{"heartbeat_interval":"30s"}`},
		{messages.BucketScriptCurrent, "hello", "1.0.0"},
		{messages.BucketScriptStatus, "hello", "ACTIVE"},
		{messages.BucketAgentGroups, "A", `{"groups":["canary"]}`},
	} {
		kv, err := js.KeyValue(ctx, read.bucket)
		if err != nil {
			t.Fatalf("bind %s: %v", read.bucket, err)
		}
		e, err := kv.Get(ctx, read.key)
		if err != nil || string(e.Value()) != read.want {
			t.Fatalf("get %s/%s: %v %v", read.bucket, read.key, e, err)
		}
		w, err := kv.Watch(ctx, read.key)
		if err != nil {
			t.Fatalf("watch %s/%s: %v", read.bucket, read.key, err)
		}
		if u := <-w.Updates(); u == nil || string(u.Value()) != read.want {
			t.Fatalf("watch %s/%s delivered %v", read.bucket, read.key, u)
		}
		if err := w.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := js.KeyValue(ctx, messages.BucketAgentConfig)
	if err != nil {
		t.Fatal(err)
	}
	all, err := cfg.WatchAll(ctx)
	if err != nil {
		t.Fatalf("watch all of agent_config: %v", err)
	}
	if u := <-all.Updates(); u == nil || u.Key() != "global" {
		t.Fatalf("watch all of agent_config delivered %v", u)
	}
	_ = all.Stop()
	// An 8 MB release is fetched under flow control, which the agent
	// answers as a reply (allow_responses).
	flowControl := h.observe("$JS.FC.>")
	obs, err := js.ObjectStore(ctx, messages.ObjectStoreAgentReleases)
	if err != nil {
		t.Fatalf("bind agent_releases: %v", err)
	}
	if b, err := obs.GetBytes(ctx, "1.2.3"); err != nil || len(b) != 8_000_000 {
		t.Fatalf("get release: %d bytes, %v", len(b), err)
	}
	if m := received(flowControl, time.Second); m == nil {
		t.Fatal("no flow control answered while fetching the release")
	}
	if len(a.snapshot()) != 0 {
		t.Fatalf("the agent's own flows raised violations: %v", a.snapshot())
	}

	// Denied: commanding the fleet or another PC, speaking for another PC.
	for _, s := range []string{"commands.all", "commands.pc.B", "commands.group.canary", "heartbeat.B", "kill.exec-1", "audit.operator.exec"} {
		if err := a.Publish(s, []byte(`{"id":"evil"}`)); err != nil {
			t.Fatal(err)
		}
		a.violated(t, "Publish", s)
	}
	// Denied: reading another PC's Commands or log requests.
	for _, s := range []string{"commands.pc.B", "commands.>", "logs.fetch.B", "heartbeat.>", "results.>"} {
		if _, err := a.SubscribeSync(s); err != nil {
			t.Fatal(err)
		}
		a.violated(t, "Subscription", s)
	}
	// Denied: every KV write, stream change and consumer of a stream it
	// may not read.
	if _, err := js.KeyValue(short(t), messages.BucketSchedules); err == nil {
		t.Fatal("bound the schedules bucket, which agents never read")
	}
	if _, err := cfg.Put(short(t), "global", []byte(`{}`)); err == nil {
		t.Fatal("put on agent_config succeeded")
	}
	a.violated(t, "Publish", "$KV.agent_config.global")
	if err := a.Publish("$KV.schedules.evil", []byte(`{"id":"evil","cron":"* * * * * *","job_id":"x"}`)); err != nil {
		t.Fatal(err)
	}
	a.violated(t, "Publish", "$KV.schedules.evil")
	if err := js.DeleteStream(short(t), messages.StreamResults); err == nil {
		t.Fatal("stream delete succeeded")
	}
	a.violated(t, "Publish", "$JS.API.STREAM.DELETE.RESULTS")
	if _, err := js.CreateOrUpdateConsumer(short(t), messages.StreamResults, jetstream.ConsumerConfig{}); err == nil {
		t.Fatal("consumer on RESULTS created")
	}
	groups, err := js.KeyValue(ctx, messages.BucketAgentGroups)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := groups.Get(short(t), "B"); err == nil {
		t.Fatal("read another PC's groups")
	}
	a.violated(t, "Publish", "$JS.API.DIRECT.GET.KV_agent_groups.$KV.agent_groups.B")
	if _, err := obs.PutBytes(short(t), "9.9.9", []byte("trojan")); err == nil {
		t.Fatal("uploaded an agent release")
	}

	// Nothing of it reached anyone: the store still holds what was seeded.
	for _, check := range []struct{ bucket, key string }{{messages.BucketSchedules, "evil"}, {messages.BucketAgentConfig, "global"}} {
		kv, err := h.js.KeyValue(ctx, check.bucket)
		if err != nil {
			t.Fatal(err)
		}
		e, err := kv.Get(ctx, check.key)
		if check.key == "evil" && !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Fatalf("schedules/evil exists: %v %v", e, err)
		}
		if check.key == "global" && (err != nil || string(e.Value()) == `{}`) {
			t.Fatalf("agent_config/global changed: %v %v", e, err)
		}
	}
	if _, err := h.js.Stream(ctx, messages.StreamResults); err != nil {
		t.Fatalf("RESULTS gone: %v", err)
	}
	if m := received(beats, 200*time.Millisecond); m != nil {
		t.Fatalf("a forged heartbeat reached the backend: %s", m.Subject)
	}
}

// TestSharedTokenKeepsEveryRight: the legacy KANADE_NATS_TOKEN still works
// as before, beside per-PC credentials, and health is told.
func TestSharedTokenKeepsEveryRight(t *testing.T) {
	h := start(t, harnessOptions{policy: agentauth.Policy{SharedToken: "legacy-secret"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	legacy := h.mustConnect("legacy-secret")
	inbox := make(chan *nats.Msg, 4)
	if _, err := legacy.ChanSubscribe("commands.pc.A", inbox); err != nil {
		t.Fatal(err)
	}
	beats := h.observe("heartbeat.>")
	for _, s := range []string{"commands.all", "commands.pc.A", "heartbeat.B"} {
		if err := legacy.Publish(s, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if m := received(inbox, 2*time.Second); m == nil {
		t.Fatal("legacy client did not receive commands.pc.A")
	}
	if m := received(beats, 2*time.Second); m == nil || m.Subject != "heartbeat.B" {
		t.Fatal("legacy heartbeat did not arrive")
	}
	js, _ := jetstream.New(legacy.Conn)
	kv, err := js.KeyValue(ctx, messages.BucketSchedules)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "legacy", []byte(`{}`)); err != nil {
		t.Fatalf("legacy KV put: %v", err)
	}
	if err := js.DeleteStream(ctx, messages.StreamEvents); err != nil {
		t.Fatalf("legacy stream delete: %v", err)
	}
	if v := legacy.snapshot(); len(v) != 0 {
		t.Fatalf("violations with the shared token: %v", v)
	}
	if w := h.svc.Policy.Warnings(); len(w) != 1 || w[0] != "shared agent token in use" {
		t.Fatalf("warnings %v", w)
	}
	// With a shared token configured, presenting nothing (or the wrong
	// token) is refused, as before.
	if _, err := h.connect(""); err == nil {
		t.Fatal("anonymous client accepted while a shared token is required")
	}
	if _, err := h.connect("wrong"); err == nil {
		t.Fatal("wrong token accepted")
	}
	// And per-PC credentials work beside it.
	a := h.mustConnect(h.mint("A"))
	if err := a.Publish("commands.all", nil); err != nil {
		t.Fatal(err)
	}
	a.violated(t, "Publish", "commands.all")
}

func TestAnonymousOnlyWhereAllowed(t *testing.T) {
	open := start(t, harnessOptions{policy: agentauth.Policy{AllowAnonymous: true}})
	c := open.mustConnect("")
	if err := c.Publish("commands.all", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if v := c.snapshot(); len(v) != 0 {
		t.Fatalf("anonymous client restricted: %v", v)
	}
	closed := start(t, harnessOptions{})
	if _, err := closed.connect(""); err == nil || !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("anonymous client accepted without a policy allowing it: %v", err)
	}
	if _, err := closed.connect(agentauth.PCTokenPrefix + "forged"); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("made-up agent token: %v", err)
	}
	// A service user other than the backend's is not a way in either.
	if _, err := closed.connect("", nats.UserInfo("kanade-backend", "guess")); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("guessed service password: %v", err)
	}
}

func TestOperatorTokensByRole(t *testing.T) {
	ops := map[string]agentauth.OperatorToken{
		"kanade_op_alice": {Name: "alice", Role: "operator"},
		"kanade_op_root":  {Name: "root", Role: "admin"},
		"kanade_op_vera":  {Name: "vera", Role: "viewer"},
		"kanade_op_gone":  {Name: "gone", Role: "admin", Revoked: true},
	}
	h := start(t, harnessOptions{operators: func(_ context.Context, tok string) (agentauth.OperatorToken, bool, error) {
		op, ok := ops[tok]
		return op, ok, nil
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	alice := h.mustConnect("kanade_op_alice")
	inbox := h.observe("commands.pc.A")
	if err := alice.Publish("commands.pc.A", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if received(inbox, 2*time.Second) == nil {
		t.Fatal("an operator's kanade run did not reach the PC")
	}
	js, _ := jetstream.New(alice.Conn)
	jobs, err := js.KeyValue(ctx, messages.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jobs.Put(ctx, "hello", []byte(`{}`)); err != nil {
		t.Fatalf("an operator could not write a job: %v", err)
	}
	if err := js.DeleteStream(short(t), messages.StreamResults); err == nil {
		t.Fatal("an operator deleted a stream")
	}
	alice.violated(t, "Publish", "$JS.API.STREAM.DELETE.RESULTS")
	status, _ := js.KeyValue(ctx, messages.BucketScriptStatus)
	if _, err := status.Put(short(t), "hello", []byte("REVOKED")); err == nil {
		t.Fatal("an operator revoked a script (admins only)")
	}

	root := h.mustConnect("kanade_op_root")
	rjs, _ := jetstream.New(root.Conn)
	if err := rjs.DeleteStream(ctx, messages.StreamEvents); err != nil {
		t.Fatalf("an admin could not delete a stream: %v", err)
	}
	for _, refused := range []string{"kanade_op_vera", "kanade_op_gone", "kanade_op_nobody"} {
		if _, err := h.connect(refused); !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("%s: %v", refused, err)
		}
	}
}

// short bounds a request the server is expected to refuse: a denied
// JetStream request is answered by silence, so the caller would wait for
// its whole timeout; the verdict is the violation, never the timeout.
func short(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	t.Cleanup(cancel)
	return ctx
}

// The backends' live stream, replica registry and leader lease
// (messages/cluster.go) are theirs: the backend's own connection publishes
// and follows them, an agent can neither publish, subscribe nor read them,
// and an operator cannot forge dashboard events, registry entries or the
// lease.
func TestLiveStreamAndRegistryAreTheBackends(t *testing.T) {
	ops := map[string]agentauth.OperatorToken{"kanade_op_alice": {Name: "alice", Role: "operator"}}
	h := start(t, harnessOptions{operators: func(_ context.Context, tok string) (agentauth.OperatorToken, bool, error) {
		op, ok := ops[tok]
		return op, ok, nil
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The backend: publishes an event and follows the stream.
	if _, err := h.js.Publish(ctx, messages.SubjectLivePrefix+"result", []byte(`{"count":1}`)); err != nil {
		t.Fatalf("the backend could not publish a live event: %v", err)
	}
	cons, err := h.js.OrderedConsumer(ctx, messages.StreamLive, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second)); err != nil || string(m.Data()) != `{"count":1}` {
		t.Fatalf("the backend could not follow the live stream: %v %v", m, err)
	}
	reg, err := h.js.KeyValue(ctx, messages.BucketReplicas)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Put(ctx, "replica-1", []byte(`{"id":"replica-1"}`)); err != nil {
		t.Fatalf("the backend could not announce itself: %v", err)
	}
	leases, err := h.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: messages.BucketLeases})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leases.Create(ctx, "leader", []byte(`{"replica_id":"replica-1"}`)); err != nil {
		t.Fatalf("the backend could not take the lease: %v", err)
	}

	events := h.observe(messages.SubjectLiveAll)
	a := h.mustConnect(h.mint("A"))
	if err := a.Publish(messages.SubjectLivePrefix+"result", []byte(`{"count":99}`)); err != nil {
		t.Fatal(err)
	}
	a.violated(t, "Publish", messages.SubjectLivePrefix+"result")
	if _, err := a.SubscribeSync(messages.SubjectLiveAll); err != nil {
		t.Fatal(err)
	}
	a.violated(t, "Subscription", messages.SubjectLiveAll)
	ajs, _ := jetstream.New(a.Conn)
	if _, err := ajs.OrderedConsumer(short(t), messages.StreamLive, jetstream.OrderedConsumerConfig{}); err == nil {
		t.Fatal("an agent followed the live stream")
	}
	if _, err := ajs.KeyValue(short(t), messages.BucketReplicas); err == nil {
		t.Fatal("an agent bound the replica registry")
	}
	if err := a.Publish("$KV."+messages.BucketReplicas+".evil", []byte(`{"id":"evil"}`)); err != nil {
		t.Fatal(err)
	}
	a.violated(t, "Publish", "$KV."+messages.BucketReplicas+".evil")

	alice := h.mustConnect("kanade_op_alice")
	if err := alice.Publish(messages.SubjectLivePrefix+"audit", []byte(`{"count":1}`)); err != nil {
		t.Fatal(err)
	}
	alice.violated(t, "Publish", messages.SubjectLivePrefix+"audit")
	if err := alice.Publish("$KV."+messages.BucketReplicas+".evil", []byte(`{"id":"evil"}`)); err != nil {
		t.Fatal(err)
	}
	alice.violated(t, "Publish", "$KV."+messages.BucketReplicas+".evil")
	for _, key := range []string{"leader", "evil"} {
		if err := alice.Publish("$KV."+messages.BucketLeases+"."+key, []byte(`{"replica_id":"evil"}`)); err != nil {
			t.Fatal(err)
		}
		alice.violated(t, "Publish", "$KV."+messages.BucketLeases+"."+key)
	}
	if err := a.Publish("$KV."+messages.BucketLeases+".leader", []byte(`{"replica_id":"evil"}`)); err != nil {
		t.Fatal(err)
	}
	a.violated(t, "Publish", "$KV."+messages.BucketLeases+".leader")

	if m := received(events, 300*time.Millisecond); m != nil {
		t.Fatalf("a forged live event reached the stream: %s %s", m.Subject, m.Data)
	}
	if _, err := reg.Get(ctx, "evil"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("a forged registry entry: %v", err)
	}
	if e, err := leases.Get(ctx, "leader"); err != nil || string(e.Value()) != `{"replica_id":"replica-1"}` || e.Revision() != 1 {
		t.Fatalf("the lease after the forged writes: %v %v", e, err)
	}
	if _, err := leases.Get(ctx, "evil"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("a forged lease key: %v", err)
	}
}
