package schedule

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/uptrace/bun"

	"kanade-backend/messages"
	"kanade-backend/storage"
)

// Wire-level stand-ins for the two neighbours of the scheduler that other
// engineers own (the exec engine and the projectors), so that the
// acceptance scenarios run over real NATS against simulated agents
// (cmd/kanade-fleet/sim) before those components are merged. They follow
// the contract only as far as the scenarios need: Commands per wire.md §4
// with the version pin written first, the executions rows, results stored
// per (request_id, pc_id) and announced with ResultsProjected, heartbeats
// and group memberships mirrored into SQL.

// wireExec publishes Commands for each ExecRequest.
type wireExec struct {
	h  *harness
	nc *nats.Conn
	js jetstream.JetStream
}

var _ actor.Actor = (*wireExec)(nil)

func (x *wireExec) Receive(ctx actor.Context) {
	req, ok := ctx.Message().(*messages.ExecRequest)
	if !ok {
		return
	}
	resp, err := x.exec(req)
	ctx.Respond(&messages.ExecReply{Response: resp, Err: err})
}

func (x *wireExec) exec(req *messages.ExecRequest) (messages.ExecResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	jobs, err := x.js.KeyValue(ctx, messages.BucketJobs)
	if err != nil {
		return messages.ExecResponse{}, err
	}
	e, err := jobs.Get(ctx, req.JobID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return messages.ExecResponse{}, messages.NotFoundf("job '%s' not found in catalog", req.JobID)
	}
	if err != nil {
		return messages.ExecResponse{}, err
	}
	m, err := messages.ParseManifestJSON(e.Value())
	if err != nil {
		return messages.ExecResponse{}, messages.Invalidf("job %s: %v", req.JobID, err)
	}
	cur, err := x.js.KeyValue(ctx, messages.BucketScriptCurrent)
	if err != nil {
		return messages.ExecResponse{}, err
	}
	if _, err := cur.Put(ctx, m.ID, []byte(m.Version)); err != nil {
		return messages.ExecResponse{}, err
	}
	jitter, err := req.Plan.JitterSecs()
	if err != nil {
		return messages.ExecResponse{}, messages.Invalidf("%v", err)
	}
	now := time.Now()
	expected, err := storage.ResolveTargetPCs(ctx, x.h.store.R, req.Plan.Target, now)
	if err != nil {
		return messages.ExecResponse{}, err
	}
	execID := newUUID()
	subjects := req.Plan.Target.Subjects()
	timeout, _ := m.Execute.TimeoutSecs()
	plan, _ := json.Marshal(req.Plan)
	subj, _ := json.Marshal(subjects)
	row := &storage.Execution{ExecID: execID, JobID: m.ID, Version: m.Version, InitiatedBy: req.InitiatedBy,
		Plan: plan, Subjects: subj, TargetCount: len(subjects), ExpectedPcs: len(expected), Status: storage.ExecPending,
		TimeoutSecs: timeout, JitterSecs: jitter, CreatedAt: storage.T(now), DeadlineAt: storage.T(now.Add(time.Hour)), UpdatedAt: storage.T(now)}
	if req.ScheduleID != "" {
		row.ScheduleID = &req.ScheduleID
	}
	var cmds []*nats.Msg
	var reqRows []storage.ExecRequest
	for _, s := range subjects {
		rid := newUUID()
		c, err := m.NewCommand(rid, &execID, jitter)
		if err != nil {
			return messages.ExecResponse{}, err
		}
		b, _ := json.Marshal(c)
		cmds = append(cmds, &nats.Msg{Subject: s, Data: b})
		reqRows = append(reqRows, storage.ExecRequest{RequestID: rid, ExecID: execID, Subject: s, PublishedAt: storage.T(now)})
	}
	err = x.h.store.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewInsert().Model(row).Exec(ctx); err != nil {
			return err
		}
		if len(reqRows) > 0 {
			if _, err := tx.NewInsert().Model(&reqRows).Exec(ctx); err != nil {
				return err
			}
		}
		for _, pc := range expected {
			if _, err := tx.NewInsert().Model(&storage.ExecExpected{ExecID: execID, PcID: pc}).Exec(ctx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return messages.ExecResponse{}, err
	}
	// Rows first, then publish: a fast agent's result must find its exec.
	for _, c := range cmds {
		if err := x.nc.PublishMsg(c); err != nil {
			return messages.ExecResponse{}, messages.Unavailablef("publish %s: %v", c.Subject, err)
		}
	}
	return messages.ExecResponse{ExecID: execID, JobID: m.ID, Version: m.Version, TargetCount: len(subjects),
		Subjects: subjects, ExpectedPcs: len(expected)}, nil
}

// wireProjectors mirror results and heartbeats into SQL and publish
// ResultsProjected after each stored result, as the projectors do.
type wireProjectors struct {
	h    *harness
	subs []*nats.Subscription
	mu   sync.Mutex
	runs map[string][]storage.ExecutionResult // by pc_id
}

func startWireProjectors(t *testing.T, h *harness) *wireProjectors {
	p := &wireProjectors{h: h, runs: map[string][]storage.ExecutionResult{}}
	sub := func(subject string, f func(*nats.Msg)) {
		s, err := h.b.Conn.Subscribe(subject, f)
		if err != nil {
			t.Fatal(err)
		}
		p.subs = append(p.subs, s)
	}
	sub("heartbeat.>", func(m *nats.Msg) {
		var hb messages.Heartbeat
		if json.Unmarshal(m.Data, &hb) != nil {
			return
		}
		now := time.Now()
		row := &storage.Agent{PcID: hb.PcID, AgentVersion: hb.AgentVersion, LastHeartbeat: storage.T(now), UpdatedAt: storage.T(now)}
		_, _ = h.store.W.NewInsert().Model(row).On("CONFLICT (pc_id) DO UPDATE").
			Set("last_heartbeat = EXCLUDED.last_heartbeat").Exec(context.Background())
	})
	sub("results.>", func(m *nats.Msg) {
		var r messages.ExecResult
		if json.Unmarshal(m.Data, &r) != nil {
			return
		}
		ctx := context.Background()
		var execID string
		_ = h.store.R.NewSelect().Model((*storage.ExecRequest)(nil)).Column("exec_id").
			Where("request_id = ?", r.RequestID).Scan(ctx, &execID)
		row := storage.ExecutionResult{RequestID: r.RequestID, PcID: r.PcID, ExitCode: r.ExitCode, Stdout: r.Stdout,
			Stderr: r.Stderr, StartedAt: storage.T(r.StartedAt), FinishedAt: storage.T(r.FinishedAt), RecordedAt: storage.T(time.Now())}
		if r.ManifestID != nil {
			row.JobID = r.ManifestID
		}
		if execID != "" {
			row.ExecID = &execID
		}
		if _, err := h.store.W.NewInsert().Model(&row).Exec(ctx); err != nil {
			return
		}
		p.mu.Lock()
		p.runs[r.PcID] = append(p.runs[r.PcID], row)
		p.mu.Unlock()
		job := ""
		if r.ManifestID != nil {
			job = *r.ManifestID
		}
		h.sys.EventStream.Publish(&messages.ResultsProjected{Results: []messages.ProjectedResult{{
			RequestID: r.RequestID, PcID: r.PcID, ExecID: execID, JobID: job, ExitCode: r.ExitCode, FinishedAt: r.FinishedAt}}})
	})
	t.Cleanup(func() {
		for _, s := range p.subs {
			_ = s.Unsubscribe()
		}
	})
	return p
}

// runsOf returns the stored runs of job on pc, in arrival order.
func (p *wireProjectors) runsOf(pc, job string) []storage.ExecutionResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []storage.ExecutionResult
	for _, r := range p.runs[pc] {
		if r.JobID != nil && *r.JobID == job {
			out = append(out, r)
		}
	}
	return out
}

// setGroups writes a PC's agent_groups key (the simulated agents follow it)
// and its rows of the agent_group_members mirror.
func (h *harness) setGroups(pc string, groups ...string) {
	h.t.Helper()
	b, _ := json.Marshal(messages.AgentGroups{Groups: groups})
	if _, err := h.kv(messages.BucketAgentGroups).Put(context.Background(), pc, b); err != nil {
		h.t.Fatal(err)
	}
	h.groupMembers(groups[0], pc)
	for _, g := range groups[1:] {
		h.groupMembers(g, pc)
	}
}

func putScript(t testing.TB, h *harness, id, version, script string) {
	t.Helper()
	m := messages.Manifest{ID: id, Version: version, Execute: messages.Execute{Shell: messages.ShellPowerShell,
		Script: script, Timeout: "30s", RunAs: messages.RunAsSystem}}
	b, _ := json.Marshal(m)
	if _, err := h.kv(messages.BucketJobs).Put(context.Background(), id, b); err != nil {
		t.Fatal(err)
	}
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
