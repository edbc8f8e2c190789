package executions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"kanade-backend/internal/apptest"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

// agent is a simulated agent: a NATS client on the backend's TCP listener
// that records the Commands it receives (and when). It reconnects, as real
// agents do, across a backend restart on the same port.
type agent struct {
	nc  *nats.Conn
	mu  sync.Mutex
	got []received
	// onFirst, if set, runs on the first Command (before it is recorded).
	onFirst func()
}

type received struct {
	subject string
	cmd     messages.Command
	at      time.Time
}

func startAgent(t *testing.T, url string, subjects ...string) *agent {
	t.Helper()
	return startAgentWith(t, url, nil, subjects...)
}

func startAgentWith(t *testing.T, url string, onFirst func(), subjects ...string) *agent {
	t.Helper()
	a := &agent{onFirst: onFirst}
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectJitter(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	a.nc = nc
	t.Cleanup(nc.Close)
	for _, s := range subjects {
		if _, err := nc.Subscribe(s, a.handle); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return a
}

func (a *agent) handle(m *nats.Msg) {
	if strings.HasPrefix(m.Subject, "commands.exec.") {
		return // the engine's exec records, not Commands
	}
	at := time.Now()
	var c messages.Command
	_ = json.Unmarshal(m.Data, &c)
	a.mu.Lock()
	first := len(a.got) == 0
	a.mu.Unlock()
	if first && a.onFirst != nil {
		a.onFirst()
	}
	a.mu.Lock()
	a.got = append(a.got, received{subject: m.Subject, cmd: c, at: at})
	a.mu.Unlock()
}

func (a *agent) all() []received {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.got)
}

func (a *agent) waitN(t *testing.T, n int, within time.Duration) []received {
	t.Helper()
	apptest.Eventually(t, within, func() error {
		if got := len(a.all()); got < n {
			return fmt.Errorf("agent received %d commands, want %d", got, n)
		}
		return nil
	})
	return a.all()
}

func (a *agent) subjects() string {
	var s []string
	for _, r := range a.all() {
		s = append(s, r.subject)
	}
	return strings.Join(s, " ")
}

// freeAddr returns a TCP address nobody listens on, so that a restarted
// backend's embedded NATS comes back where the agents reconnect.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func putJob(t *testing.T, b *apptest.Backend, id, version, script string) {
	t.Helper()
	b.JSON(t, "POST", "/api/jobs", fmt.Sprintf(
		`{"id":%q,"version":%q,"execute":{"shell":"powershell","script":%q,"timeout":"30s"}}`, id, version, script),
		200, nil)
}

func execJob(t *testing.T, b *apptest.Backend, job, plan string) messages.ExecResponse {
	t.Helper()
	var r messages.ExecResponse
	b.JSON(t, "POST", "/api/exec/"+job, plan, 200, &r)
	return r
}

// heartbeat makes pc an alive agent in groups, as the heartbeat projector
// and the agent_groups mirror would.
func heartbeat(t *testing.T, b *apptest.Backend, pc string, groups ...string) {
	t.Helper()
	ctx := context.Background()
	now := storage.T(time.Now())
	if _, err := b.Store.W.NewInsert().Model(&storage.Agent{PcID: pc, AgentVersion: "0.21.2", LastHeartbeat: now, UpdatedAt: now}).
		On("CONFLICT (pc_id) DO UPDATE").Set("last_heartbeat = EXCLUDED.last_heartbeat").Exec(ctx); err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		if _, err := b.Store.W.NewInsert().Model(&storage.GroupMember{PcID: pc, GroupName: g}).On("CONFLICT DO NOTHING").Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// member puts pc in groups as the agent_groups mirror would, without an
// agents row: a PC whose groups were assigned before it was switched on.
func member(t *testing.T, b *apptest.Backend, pc string, groups ...string) {
	t.Helper()
	for _, g := range groups {
		if _, err := b.Store.W.NewInsert().Model(&storage.GroupMember{PcID: pc, GroupName: g}).On("CONFLICT DO NOTHING").Exec(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// result stores an ExecResult for a PC of an exec as the results
// projector would (attributed through exec_requests).
func result(t *testing.T, b *apptest.Backend, execID, subject, pc string, exit int) {
	t.Helper()
	ctx := context.Background()
	var rid string
	if err := b.Store.R.NewSelect().Model((*storage.PublishedRequest)(nil)).Column("request_id").
		Where("exec_id = ?", execID).Where("subject = ?", subject).Scan(ctx, &rid); err != nil {
		t.Fatalf("request_id of %s in %s: %v", subject, execID, err)
	}
	start := time.Now().Add(-2 * time.Second)
	row := &storage.ExecutionResult{RequestID: rid, PcID: pc, ExecID: &execID, ExitCode: exit, Stdout: "out", Stderr: "",
		StartedAt: storage.T(start), FinishedAt: storage.T(start.Add(1500 * time.Millisecond)), RecordedAt: storage.T(time.Now()), StreamSeq: 1}
	if _, err := b.Store.W.NewInsert().Model(row).Exec(ctx); err != nil {
		t.Fatal(err)
	}
}
