// Package fleettest holds test helpers shared by the fleet-facing API
// areas: rows inserted straight into the read model (standing in for the
// heartbeat projector), a recorder of published audit events, and a
// minimal simulated agent speaking the wire contract over real NATS.
package fleettest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/uptrace/bun"

	"kanade-backend/messages"
	"kanade-backend/storage"
)

// Agent describes a row to insert.
type Agent struct {
	PcID     string
	Hostname string // "" = NULL
	OS       string // "" = NULL
	Version  string // default "0.21.2"
	// Seen is last_heartbeat.
	Seen time.Time
}

// InsertAgents writes agents rows directly, in batches of 500 in one
// transaction.
func InsertAgents(t testing.TB, st *storage.Store, agents ...Agent) {
	t.Helper()
	rows := make([]storage.Agent, len(agents))
	for i, a := range agents {
		row := storage.Agent{
			PcID:          a.PcID,
			AgentVersion:  a.Version,
			LastHeartbeat: storage.T(a.Seen),
			UpdatedAt:     storage.T(a.Seen),
		}
		if row.AgentVersion == "" {
			row.AgentVersion = "0.21.2"
		}
		if a.Hostname != "" {
			h := a.Hostname
			row.Hostname = &h
		}
		if a.OS != "" {
			o := a.OS
			row.OsFamily = &o
		}
		rows[i] = row
	}
	err := st.InTx(context.Background(), func(ctx context.Context, tx bun.Tx) error {
		for start := 0; start < len(rows); start += 500 {
			batch := rows[start:min(start+500, len(rows))]
			if _, err := tx.NewInsert().Model(&batch).On("CONFLICT (pc_id) DO UPDATE").
				Set("last_heartbeat = EXCLUDED.last_heartbeat").Set("updated_at = EXCLUDED.updated_at").
				Exec(ctx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("insert agents: %v", err)
	}
}

// AuditRecorder collects audit events published on audit.> (a core
// subscription sees what the AUDIT stream captures).
type AuditRecorder struct {
	mu     sync.Mutex
	events []messages.AuditEvent
}

// RecordAudit starts recording on nc until the test ends.
func RecordAudit(t testing.TB, nc *nats.Conn) *AuditRecorder {
	t.Helper()
	rec := &AuditRecorder{}
	sub, err := nc.Subscribe(messages.SubjectAuditAll, func(m *nats.Msg) {
		var ev messages.AuditEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			return
		}
		rec.mu.Lock()
		rec.events = append(rec.events, ev)
		rec.mu.Unlock()
	})
	if err != nil {
		t.Fatalf("subscribe audit: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return rec
}

// Events returns the events of action recorded so far.
func (a *AuditRecorder) Events(action string) []messages.AuditEvent {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []messages.AuditEvent
	for _, ev := range a.events {
		if ev.Action == action {
			out = append(out, ev)
		}
	}
	return out
}

// Wait polls until at least n events of action were recorded.
func (a *AuditRecorder) Wait(t testing.TB, action string, n int) []messages.AuditEvent {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		evs := a.Events(action)
		if len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit: %d %q events within 5s, want %d", len(evs), action, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// SimAgent is a minimal simulated agent: it runs nothing, but answers
// Commands on commands.pc.<pc_id> with an ExecResult (stdout = the script
// with a trailing newline, "echo hi" → "hi\n"), answers logs.fetch.<pc_id>
// with Logs, and publishes a heartbeat whenever Beat is called.
type SimAgent struct {
	PcID string
	Logs string

	nc       *nats.Conn
	mu       sync.Mutex
	commands []messages.Command
	logReqs  []messages.LogsFetchRequest
}

// StartAgent connects a simulated agent to url until the test ends.
func StartAgent(t testing.TB, url, pcID string) *SimAgent {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name("sim-"+pcID))
	if err != nil {
		t.Fatalf("agent %s connect: %v", pcID, err)
	}
	t.Cleanup(nc.Close)
	a := &SimAgent{PcID: pcID, Logs: "line 1\nline 2\n", nc: nc}
	if _, err := nc.Subscribe(messages.CommandsPCSubject(pcID), a.onCommand); err != nil {
		t.Fatalf("agent %s subscribe: %v", pcID, err)
	}
	if _, err := nc.Subscribe(messages.LogsFetchSubject(pcID), a.onLogs); err != nil {
		t.Fatalf("agent %s subscribe logs: %v", pcID, err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("agent %s flush: %v", pcID, err)
	}
	return a
}

func (a *SimAgent) onCommand(m *nats.Msg) {
	var cmd messages.Command
	if err := json.Unmarshal(m.Data, &cmd); err != nil {
		return
	}
	a.mu.Lock()
	a.commands = append(a.commands, cmd)
	a.mu.Unlock()
	now := time.Now().UTC()
	stdout := cmd.Script
	if len(stdout) > 5 && stdout[:5] == "echo " {
		stdout = stdout[5:]
	}
	res := messages.ExecResult{
		RequestID: cmd.RequestID, PcID: a.PcID, ExitCode: 0,
		Stdout: stdout + "\n", StartedAt: now, FinishedAt: now.Add(time.Millisecond),
	}
	b, _ := json.Marshal(res)
	_ = a.nc.Publish(messages.ResultsSubject(cmd.RequestID), b)
}

func (a *SimAgent) onLogs(m *nats.Msg) {
	var req messages.LogsFetchRequest
	_ = json.Unmarshal(m.Data, &req)
	a.mu.Lock()
	a.logReqs = append(a.logReqs, req)
	logs := a.Logs
	a.mu.Unlock()
	_ = m.Respond([]byte(logs))
}

// Commands returns the Commands received so far.
func (a *SimAgent) Commands() []messages.Command {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]messages.Command(nil), a.commands...)
}

// LogRequests returns the logs.fetch requests received so far.
func (a *SimAgent) LogRequests() []messages.LogsFetchRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]messages.LogsFetchRequest(nil), a.logReqs...)
}

// Beat publishes one heartbeat.
func (a *SimAgent) Beat() error {
	host, osf := a.PcID, messages.OSWindows
	hb := messages.Heartbeat{PcID: a.PcID, At: time.Now().UTC(), AgentVersion: "0.21.2", Hostname: &host, OsFamily: &osf}
	b, err := json.Marshal(hb)
	if err != nil {
		return err
	}
	if err := a.nc.Publish(messages.HeartbeatSubject(a.PcID), b); err != nil {
		return fmt.Errorf("publish heartbeat: %w", err)
	}
	return a.nc.Flush()
}
