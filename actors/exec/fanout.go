package exec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/uptrace/bun"

	"kanade-backend/actors/audit"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

// insertChunk bounds the ids of one IN (...) list, as storage.InsertChunked
// bounds the rows of one INSERT.
const insertChunk = 1000

// outgoing is one Command ready to publish, with the part of the target its
// subject reaches (to recompute who was reached after a partial failure).
type outgoing struct {
	subject   string
	requestID string
	payload   []byte
	all       bool
	group     string
	pc        string
	// wave is the index of the rollout wave it publishes, -1 for none.
	wave int
}

// plan is an ExecRequest turned into what to publish now and later.
type plan struct {
	// now is published at once, in order.
	now []outgoing
	// subjects is every subject of the exec, delayed waves included: the
	// response's and the audit event's subjects (upstream meaning).
	subjects []string
	// waves are the exec_waves rows (immediate waves included).
	waves    []storage.ExecWave
	lastDue  time.Time
	waveMode bool
}

// kindError gives err an error kind without changing its text, and keeps
// err itself reachable (errors.Is(err, messages.ErrTargetUnspecified)).
type kindError struct{ kind, err error }

func (k *kindError) Error() string   { return k.err.Error() }
func (k *kindError) Unwrap() []error { return []error{k.kind, k.err} }

func invalid(err error) error { return &kindError{kind: messages.ErrInvalid, err: err} }

// loadManifest reads the job from KV jobs, the catalog's source of truth.
func loadManifest(ctx context.Context, kv jetstream.KeyValue, jobID string) (messages.Manifest, error) {
	entry, err := kv.Get(ctx, jobID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return messages.Manifest{}, messages.NotFoundf("job '%s' not found in catalog", jobID)
	}
	if err != nil {
		return messages.Manifest{}, messages.Unavailablef("read job '%s' from catalog: %v", jobID, err)
	}
	var m messages.Manifest
	if err := messages.DecodeJSON(entry.Value(), &m); err != nil {
		return messages.Manifest{}, messages.Invalidf("job '%s' in catalog is not a valid manifest: %v; post it again", jobID, err)
	}
	return m, nil
}

// buildPlan decides what goes out now and what later. With rollout waves
// the waves alone say who is reached, one commands.group.<group> subject
// per wave (upstream semantics; the target is kept in the plan for the
// record). Without waves the target's subjects go out at once, duplicates
// removed so that a PC listed twice does not run the script twice.
// tmpl is the encoded Command of the exec's manifest and jitter.
func buildPlan(tmpl *commandTemplate, fp *messages.FanoutPlan, execID string, now time.Time) (plan, error) {
	p := plan{lastDue: now}
	add := func(o outgoing) error {
		o.requestID = uuid.NewString()
		o.payload = tmpl.with(execID, o.requestID)
		p.now = append(p.now, o)
		return nil
	}
	if fp.Rollout != nil && len(fp.Rollout.Waves) > 0 {
		p.waveMode = true
		gated := fp.Rollout.Gate != nil
		for i, w := range fp.Rollout.Waves {
			d, err := w.DelayDuration()
			if err != nil {
				return plan{}, invalid(fmt.Errorf("invalid rollout.waves[%d].delay: %w", i, err))
			}
			subject := messages.CommandsGroupSubject(w.Group)
			p.subjects = append(p.subjects, subject)
			due := now.Add(max(d, 0))
			p.lastDue = maxTime(p.lastDue, due)
			row := storage.ExecWave{ExecID: execID, WaveIndex: i, GroupName: w.Group, DueAt: storage.T(due), State: storage.WavePending,
				Gated: gated && i > 0}
			// A gated wave is never published with the exec, even at delay
			// 0: it waits for the earlier waves' answers (gate.go).
			if d <= 0 && !row.Gated {
				if err := add(outgoing{subject: subject, group: w.Group, wave: i}); err != nil {
					return plan{}, err
				}
				rid := p.now[len(p.now)-1].requestID
				row.RequestID = &rid
			}
			p.waves = append(p.waves, row)
		}
		return p, nil
	}
	seen := map[string]bool{}
	each := func(o outgoing) error {
		if seen[o.subject] {
			return nil
		}
		seen[o.subject] = true
		p.subjects = append(p.subjects, o.subject)
		return add(o)
	}
	t := fp.Target
	if t.All {
		if err := each(outgoing{subject: messages.SubjectCommandsAll, all: true, wave: -1}); err != nil {
			return plan{}, err
		}
	}
	for _, g := range t.Groups {
		if err := each(outgoing{subject: messages.CommandsGroupSubject(g), group: g, wave: -1}); err != nil {
			return plan{}, err
		}
	}
	for _, pc := range t.Pcs {
		if err := each(outgoing{subject: messages.CommandsPCSubject(pc), pc: pc, wave: -1}); err != nil {
			return plan{}, err
		}
	}
	return p, nil
}

// reachedTarget is the target the given Commands reach together.
func reachedTarget(out []outgoing) messages.Target {
	var t messages.Target
	for _, o := range out {
		switch {
		case o.all:
			t.All = true
		case o.group != "":
			if !slices.Contains(t.Groups, o.group) {
				t.Groups = append(t.Groups, o.group)
			}
		case o.pc != "":
			t.Pcs = append(t.Pcs, o.pc)
		}
	}
	return t
}

func subjectsOf(out []outgoing) []string {
	s := make([]string, len(out))
	for i, o := range out {
		s[i] = o.subject
	}
	return s
}

func hasPendingWave(p plan) bool {
	for _, w := range p.waves {
		if w.RequestID == nil {
			return true
		}
	}
	return false
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// deadline is when PCs that have not answered count as never answering.
func deadline(from time.Time, timeoutSecs uint64, jitterSecs *uint64) time.Time {
	d := from.Add(time.Duration(timeoutSecs)*time.Second + DeadlineMargin)
	if jitterSecs != nil {
		d = d.Add(time.Duration(*jitterSecs) * time.Second)
	}
	return d
}

// newExecutionRow is the executions row of an exec; manifestJSON is m
// encoded (once per job and batch: the fires of a burst share it).
func newExecutionRow(req *messages.ExecRequest, m *messages.Manifest, manifestJSON []byte, fp *messages.FanoutPlan, execID string,
	p plan, expected int, timeoutSecs uint64, jitterSecs *uint64, now time.Time) (*storage.Execution, error) {
	planJSON, err := json.Marshal(fp)
	if err != nil {
		return nil, fmt.Errorf("encode plan: %w", err)
	}
	subjects, err := json.Marshal(nonNil(subjectsOf(p.now)))
	if err != nil {
		return nil, fmt.Errorf("encode subjects: %w", err)
	}
	initiatedBy := req.InitiatedBy
	if initiatedBy == "" {
		initiatedBy = auditActor(req)
	}
	row := &storage.Execution{
		ExecID: execID, JobID: m.ID, Version: m.Version, InitiatedBy: initiatedBy,
		Plan: planJSON, Subjects: subjects, TargetCount: len(p.now), ExpectedPcs: expected,
		Status: storage.ExecPending, TimeoutSecs: timeoutSecs, JitterSecs: jitterSecs,
		CreatedAt: storage.T(now), DeadlineAt: storage.T(deadline(p.lastDue, timeoutSecs, jitterSecs)),
		UpdatedAt: storage.T(now), Manifest: manifestJSON,
	}
	if req.ScheduleID != "" {
		row.ScheduleID = &req.ScheduleID
	}
	return row, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// publish hands the Commands to the NATS client and flushes once. It
// returns how many were handed over and whether the server confirmed them
// (a flush round trip). After a failed publish the ones handed over before
// it are still flushed, so that the record of what went out is exact when
// the connection allows it.
func (e *engine) publish(out []outgoing) (handed int, confirmed bool, err error) {
	if len(out) == 0 {
		return 0, true, nil
	}
	for i, o := range out {
		if err := e.NATS.Publish(o.subject, o.payload); err != nil {
			confirmed := i > 0 && e.NATS.FlushTimeout(e.FlushTimeout) == nil
			return i, confirmed, fmt.Errorf("publish %s: %w", o.subject, err)
		}
	}
	if err := e.NATS.FlushTimeout(e.FlushTimeout); err != nil {
		return len(out), false, fmt.Errorf("flush after %d commands (delivery not confirmed): %w", len(out), err)
	}
	return len(out), true, nil
}

// recordPublishFailure records what was published before a failure: the
// subjects and their count, the error, the PCs those subjects reach, and
// it stops the exec's later waves (the caller is told the exec failed, so
// nothing of it may surface later). An exec that reached nobody is failed.
func (e *engine) recordPublishFailure(ctx context.Context, row *storage.Execution, p plan, wasExpected []string,
	handed int, confirmed bool, pubErr error, now, at time.Time) (*storage.Execution, error) {
	reached := p.now[:handed]
	expected, err := storage.ResolveTargetPCs(ctx, e.Store.R, reachedTarget(reached), now)
	if err != nil {
		return nil, err
	}
	// Only the PCs no published subject reaches are dropped: the rows of
	// the others may already hold a fast agent's answer.
	keep := make(map[string]bool, len(expected))
	for _, pc := range expected {
		keep[pc] = true
	}
	var unreached []string
	for _, pc := range wasExpected {
		if !keep[pc] {
			unreached = append(unreached, pc)
		}
	}
	subjects, err := json.Marshal(nonNil(subjectsOf(reached)))
	if err != nil {
		return nil, err
	}
	msg := pubErr.Error()
	out := *row
	out.Subjects, out.TargetCount, out.ExpectedPcs, out.Error, out.UpdatedAt = subjects, handed, len(expected), &msg, storage.T(at)
	if handed == 0 {
		out.Status, out.FinishedAt = storage.ExecFailed, storage.T(at)
	}
	var waveIdx []int
	for _, o := range p.now[handed:] {
		if o.wave >= 0 {
			waveIdx = append(waveIdx, o.wave)
		}
	}
	err = e.Store.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewUpdate().Model(&out).
			Column("subjects", "target_count", "expected_pcs", "error", "status", "finished_at", "updated_at").
			WherePK().Exec(ctx); err != nil {
			return err
		}
		for i := 0; i < len(unreached); i += insertChunk {
			if _, err := tx.NewDelete().Model((*storage.ExecExpected)(nil)).Where("exec_id = ?", row.ExecID).
				Where("pc_id IN (?)", bun.List(unreached[i:min(i+insertChunk, len(unreached))])).Exec(ctx); err != nil {
				return err
			}
		}
		// Only a confirmed flush marks request_ids published: after a
		// flush error the handed-over Commands may still be in flight.
		if confirmed && handed > 0 {
			rids := make([]string, handed)
			for i, o := range reached {
				rids[i] = o.requestID
			}
			for i := 0; i < len(rids); i += insertChunk {
				if _, err := tx.NewUpdate().Model((*storage.PublishedRequest)(nil)).Set("published_at = ?", storage.T(at)).
					Where("request_id IN (?)", bun.List(rids[i:min(i+insertChunk, len(rids))])).Exec(ctx); err != nil {
					return err
				}
			}
		}
		// Waves handed over count as published either way (their subjects
		// are recorded as reached); they must not be published again.
		var handedWaves []int
		for _, o := range reached {
			if o.wave >= 0 {
				handedWaves = append(handedWaves, o.wave)
			}
		}
		if len(handedWaves) > 0 {
			var publishedAt storage.Time
			if confirmed {
				publishedAt = storage.T(at)
			}
			if _, err := tx.NewUpdate().Model((*storage.ExecWave)(nil)).
				Set("state = ?", storage.WavePublished).Set("published_at = ?", publishedAt).
				Where("exec_id = ?", row.ExecID).Where("wave_index IN (?)", bun.List(handedWaves)).Exec(ctx); err != nil {
				return err
			}
		}
		if len(waveIdx) > 0 {
			if _, err := tx.NewUpdate().Model((*storage.ExecWave)(nil)).Set("state = ?", storage.WaveFailed).
				Where("exec_id = ?", row.ExecID).Where("wave_index IN (?)", bun.List(waveIdx)).Exec(ctx); err != nil {
				return err
			}
		}
		_, err := tx.NewUpdate().Model((*storage.ExecWave)(nil)).Set("state = ?", storage.WaveCancelled).
			Where("exec_id = ?", row.ExecID).Where("state = ?", storage.WavePending).Exec(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

func auditActor(req *messages.ExecRequest) string {
	if req.Actor == "" {
		return messages.ActorOperator
	}
	return req.Actor
}

// auditEvent is the exec audit event (wire.md §4). The pipeline stores
// it; a failure to store it is logged and counted but does not fail the
// exec: the Commands are already out and the executions row records them.
func (e *engine) auditEvent(req *messages.ExecRequest, m *messages.Manifest,
	resp messages.ExecResponse, waveMode bool, pubErr error) messages.AuditEvent {
	ev := audit.Event(auditActor(req), messages.ActionExec, m.ID, map[string]any{
		"exec_id":      resp.ExecID,
		"version":      m.Version,
		"target_count": resp.TargetCount,
		"subjects":     nonNil(resp.Subjects),
		"wave_mode":    waveMode,
	})
	if pubErr != nil {
		ev.Payload["error"] = pubErr.Error()
	}
	if req.ScheduleID != "" {
		ev.SetPayloadDefault("schedule_id", req.ScheduleID)
	}
	for k, v := range req.AuditExtra {
		ev.SetPayloadDefault(k, v)
	}
	ev.OccurredAt = e.Clock.Now().UTC()
	return ev
}
