package exec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker"
	"kanade-backend/storage/execrecord"
)

// Batches (group commit). Exec requests are not handled one by one: each
// is queued, and a flushBatch message the engine sends itself when the
// first one arrives comes back once every request already in the mailbox
// has been queued behind it. All the fires pending at that moment then go
// through each step together: one catalog read and one version pin per
// job, one database transaction for every executions, exec_requests,
// exec_expected and exec_waves row, the exec records stored on the EXEC
// stream in one JetStream pipeline (before any Command: an exec whose
// record is not stored does not run), every Command published back to
// back with one flush, one transaction for the published_at stamps, and
// the audit events stored by the engine's pipeline (pipeline.go).
// Each exec still gets its own rows, record, audit event and reply. While
// a batch runs, the next requests pile up in the mailbox and form the
// next batch, so a burst is absorbed in a few large batches while a lone
// request goes through at once.

// maxBatch bounds the execs of one batch, so that the first Commands of a
// burst go out while the rest is still being recorded; the remainder
// forms the next batch at once.
const maxBatch = 1000

// flushBatch tells the engine to run the queued requests.
type flushBatch struct{}

// queued is an exec request waiting for its batch.
type queued struct {
	req    *messages.ExecRequest
	sender *actor.PID
	at     time.Time
}

// fire is one request on its way through a batch.
type fire struct {
	q      *queued
	m      messages.Manifest
	fp     messages.FanoutPlan
	execID string
	p      plan
	// expected are the PCs the immediate Commands reach.
	expected    []string
	row         *storage.Execution
	timeoutSecs uint64
	jitterSecs  *uint64
	// err, once set, is the request's answer: nothing of it is published.
	err error
	// existing: the exec id was recorded before; nothing is written.
	existing bool
	// Outcome of the publish step.
	handed    int
	confirmed bool
	pubErr    error
}

func (f *fire) live() bool { return f.err == nil && !f.existing }

// enqueue queues a request and makes sure a flush follows it.
func (e *engine) enqueue(c actor.Context, req *messages.ExecRequest) {
	e.queue = append(e.queue, &queued{req: req, sender: c.Sender(), at: time.Now()})
	e.scheduleFlush(c)
}

func (e *engine) scheduleFlush(c actor.Context) {
	if !e.flushQueued {
		e.flushQueued = true
		c.Send(c.Self(), &flushBatch{})
	}
}

// runBatch runs up to maxBatch queued requests end to end.
func (e *engine) runBatch(c actor.Context) {
	e.flushQueued = false
	if len(e.queue) == 0 {
		return
	}
	n := min(len(e.queue), maxBatch)
	items := e.queue[:n:n]
	e.queue = e.queue[n:]
	if e.natsDown() {
		// Nothing can be pinned or published: answer at once rather than
		// let every step fail on its own.
		for _, q := range items {
			e.reply(c.ActorSystem(), q.sender, &messages.ExecReply{CorrelationID: q.req.CorrelationID,
				Err: fmt.Errorf("%w; nothing was recorded or published", broker.ErrNATSDown)})
		}
		if len(e.queue) > 0 {
			e.scheduleFlush(c)
		}
		return
	}
	ctx, cancel := e.opContext()
	defer cancel()
	e.storeUnrecorded(ctx)

	now := e.Clock.Now().UTC()
	fires, later := e.prepare(ctx, items, now)
	e.Metrics.batchSize.Observe(float64(len(fires)))
	if len(later) > 0 {
		e.queue = append(later, e.queue...)
	}
	if len(e.queue) > 0 {
		e.scheduleFlush(c)
	}
	e.record(ctx, fires)
	e.pinAll(ctx, fires)
	e.storeRecords(ctx, fires, now)
	e.publishAll(fires)
	e.finish(ctx, c.ActorSystem(), fires)
}

// natsDown reports whether the NATS connection says it is down (a
// Publisher that cannot tell is taken as up).
func (e *engine) natsDown() bool {
	c, ok := e.NATS.(interface{ IsConnected() bool })
	return ok && !c.IsConnected()
}

// prepare validates the requests and builds what each will publish and
// record. A request for a job already in the batch under another version,
// or for an exec id already in it, waits for the next batch (later): one
// version pin per job, and one exec per id, per batch.
func (e *engine) prepare(ctx context.Context, items []*queued, now time.Time) (fires []*fire, later []*queued) {
	manifests := e.loadManifests(ctx, items)
	versions := map[string]string{}
	ids := map[string]bool{}
	cache := &encodings{manifests: map[*messages.Manifest][]byte{}, commands: map[commandKey]*commandTemplate{}}
	for _, q := range items {
		f := &fire{q: q}
		f.err = e.prepareOne(ctx, f, manifests, cache, now)
		if f.err == nil {
			if v, ok := versions[f.m.ID]; ok && v != f.m.Version || ids[f.execID] {
				later = append(later, q)
				continue
			}
			versions[f.m.ID], ids[f.execID] = f.m.Version, true
		}
		fires = append(fires, f)
	}
	return fires, later
}

// encodings are a batch's encoded manifests and Commands, one per
// manifest (and jitter): the scheduled fires of one job share the
// manifest its fleet view holds, the requests without one the batch's
// catalog read.
type encodings struct {
	manifests map[*messages.Manifest][]byte
	commands  map[commandKey]*commandTemplate
}

type commandKey struct {
	m         *messages.Manifest
	jitter    uint64
	hasJitter bool
}

// command returns the Command template of manifest src with jitterSecs.
func (c *encodings) command(src *messages.Manifest, jitterSecs *uint64) (*commandTemplate, error) {
	k := commandKey{m: src}
	if jitterSecs != nil {
		k.jitter, k.hasJitter = *jitterSecs, true
	}
	if t, ok := c.commands[k]; ok {
		return t, nil
	}
	cmd, err := src.NewCommand("", nil, jitterSecs)
	if err != nil {
		return nil, invalid(err)
	}
	t, err := newCommandTemplate(cmd)
	if err != nil {
		return nil, err
	}
	c.commands[k] = t
	return t, nil
}

// manifest returns src encoded.
func (c *encodings) manifest(src *messages.Manifest) ([]byte, error) {
	if b, ok := c.manifests[src]; ok {
		return b, nil
	}
	b, err := json.Marshal(src)
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	c.manifests[src] = b
	return b, nil
}

// manifestRead is one catalog read of a batch.
type manifestRead struct {
	m   messages.Manifest
	err error
}

// loadManifests reads from KV jobs, once per job and concurrently, the
// manifests the requests do not carry.
func (e *engine) loadManifests(ctx context.Context, items []*queued) map[string]*manifestRead {
	out := map[string]*manifestRead{}
	for _, q := range items {
		if q.req.Manifest == nil && messages.ValidateToken("job id", q.req.JobID) == nil {
			out[q.req.JobID] = &manifestRead{}
		}
	}
	if len(out) == 0 {
		return out
	}
	// The bucket is opened here, on the actor's goroutine: the handle
	// cache is the actor's.
	kv, err := e.kv(ctx, messages.BucketJobs)
	if err != nil {
		for _, r := range out {
			r.err = messages.Unavailablef("job catalog (KV %s) unavailable: %v", messages.BucketJobs, err)
		}
		return out
	}
	// Each call fills its own entry; the map is not written.
	perJob(out, func(id string, r *manifestRead) { r.m, r.err = loadManifest(ctx, kv, id) })
	return out
}

// perJob calls f for every entry of jobs, up to 16 at a time (each a KV
// round trip), and returns when all have returned.
func perJob[V any](jobs map[string]V, f func(id string, v V)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for id, v := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f(id, v)
		}()
	}
	wg.Wait()
}

// prepareOne validates one request (behaviour.md §2 steps 1–3) and builds
// its plan, expected PCs and executions row.
func (e *engine) prepareOne(ctx context.Context, f *fire, manifests map[string]*manifestRead, cache *encodings, now time.Time) error {
	req := f.q.req
	if err := messages.ValidateToken("job id", req.JobID); err != nil {
		return err
	}
	src := req.Manifest
	if src == nil {
		r := manifests[req.JobID]
		if r.err != nil {
			return r.err
		}
		src = &r.m
	}
	f.m = *src
	m := &f.m
	f.fp = req.Plan
	if err := f.fp.Validate(); err != nil {
		return invalid(err)
	}
	// The catalog can be written around the API (KV is open to the CLI),
	// so the manifest is checked again here; its texts ("invalid timeout:
	// …") are the API's.
	if err := m.Validate(); err != nil {
		return invalid(err)
	}
	if m.ID != req.JobID {
		return messages.Invalidf("job '%s' in catalog carries id '%s'; post it again", req.JobID, m.ID)
	}
	var err error
	if f.timeoutSecs, err = m.Execute.TimeoutSecs(); err != nil {
		return invalid(err)
	}
	if f.jitterSecs, err = f.fp.JitterSecs(); err != nil {
		return invalid(err)
	}
	f.execID = req.ExecID
	if f.execID == "" {
		f.execID = uuid.NewString()
	} else if err := uuid.Validate(f.execID); err != nil {
		return messages.Invalidf("invalid exec id %q: %v", f.execID, err)
	}
	tmpl, err := cache.command(src, f.jitterSecs)
	if err != nil {
		return err
	}
	if f.p, err = buildPlan(tmpl, &f.fp, f.execID, now); err != nil {
		return err
	}
	if req.Resolved && !f.p.waveMode {
		f.expected = req.Expected
	} else if f.expected, err = storage.ResolveTargetPCs(ctx, e.Store.R, reachedTarget(f.p.now), now); err != nil {
		return fmt.Errorf("exec %s: %w", f.execID, err)
	}
	if f.p.waveMode {
		if err := e.immediateWaveExpected(ctx, &f.p, f.expected, now); err != nil {
			return fmt.Errorf("exec %s: %w", f.execID, err)
		}
	}
	mj, err := cache.manifest(src)
	if err != nil {
		return err
	}
	f.row, err = newExecutionRow(req, m, mj, &f.fp, f.execID, f.p, len(f.expected), f.timeoutSecs, f.jitterSecs, now)
	return err
}

// pinAll writes script_current[id] = version once per job of the batch
// (behaviour.md §2 step 4: before anything is published), the jobs in
// parallel, for the fires that record let through: a fire refused there
// (a former leader's, under an older fencing token) must not move the
// pin either, since its manifest comes from that leader's view, which
// may be older than the catalog, and agents drop a Command whose
// version is not the pinned one. The fires of a job whose pin fails are
// recorded already; they publish nothing and finish records them as
// failed, like a publish that fails before its first Command.
func (e *engine) pinAll(ctx context.Context, fires []*fire) {
	jobs := map[string]*messages.Manifest{}
	for _, f := range fires {
		if f.live() {
			jobs[f.m.ID] = &f.m
		}
	}
	if len(jobs) == 0 {
		return
	}
	kv, err := e.kv(ctx, messages.BucketScriptCurrent)
	failed := map[string]error{}
	if err != nil {
		for id, m := range jobs {
			failed[id] = pinError(m, err)
		}
	} else {
		var mu sync.Mutex
		perJob(jobs, func(id string, m *messages.Manifest) {
			if _, err := kv.Put(ctx, id, []byte(m.Version)); err != nil {
				mu.Lock()
				failed[id] = pinError(m, err)
				mu.Unlock()
			}
		})
	}
	for _, f := range fires {
		if err, ok := failed[f.m.ID]; ok && f.live() {
			f.handed, f.pubErr = 0, err
		}
	}
}

func pinError(m *messages.Manifest, err error) error {
	return fmt.Errorf("%w: write version pin %s[%s] = %s: %v", broker.ErrNATSUnavailable,
		messages.BucketScriptCurrent, m.ID, m.Version, err)
}

// record writes the rows of every live fire in one transaction, before
// anything is published: an ExecResult carries no exec_id, so a fast
// agent's result finds its exec only through exec_requests rows that
// already exist. A fire whose exec id is recorded already writes nothing
// (the primary key would refuse it; checking first keeps the rest of the
// batch). If the transaction fails, no fire of the batch publishes.
//
// This transaction is where a fire first writes, and the only place: a
// check that must hold for every fire of the batch (a leader's fencing
// token, scaleout.md §3.3) belongs inside it, before the inserts, and
// whatever it refuses is refused before any Command exists.
func (e *engine) record(ctx context.Context, fires []*fire) {
	var chosen []string
	for _, f := range fires {
		if f.live() && f.q.req.ExecID != "" {
			chosen = append(chosen, f.execID)
		}
	}
	// A requested id is almost never recorded already, so the batch is
	// written without looking first; only when the primary key refuses a
	// row is the transaction run again, looking the ids up.
	existing, err := e.recordTx(ctx, fires, nil)
	if err != nil && len(chosen) > 0 && storage.IsConstraint(err) {
		existing, err = e.recordTx(ctx, fires, chosen)
	}
	for _, f := range fires {
		if errors.Is(f.err, storage.ErrFenced) {
			e.Metrics.fenced.Inc()
			e.log.Warn("scheduled fire refused: a newer leader took over, so this backend fires nothing more under its old term",
				"exec", f.execID, "schedule", f.q.req.ScheduleID, "err", f.err)
		}
	}
	for _, f := range fires {
		switch {
		case !f.live():
		case err != nil:
			f.err = fmt.Errorf("record exec %s: %w", f.execID, err)
		case existing[f.execID]:
			f.existing = true
		}
	}
}

// recordTx is record's transaction; it first looks up which of the ids
// in check are recorded already, and writes nothing for those.
func (e *engine) recordTx(ctx context.Context, fires []*fire, check []string) (map[string]bool, error) {
	existing := map[string]bool{}
	err := e.Store.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		clear(existing)
		if err := fence(ctx, tx, fires); err != nil {
			return err
		}
		chosen := check
		for i := 0; i < len(chosen); i += insertChunk {
			var ids []string
			if err := tx.NewSelect().Model((*storage.Execution)(nil)).Column("exec_id").
				Where("exec_id IN (?)", bun.List(chosen[i:min(i+insertChunk, len(chosen))])).Scan(ctx, &ids); err != nil {
				return fmt.Errorf("look up exec ids: %w", err)
			}
			for _, id := range ids {
				existing[id] = true
			}
		}
		var rows []*storage.Execution
		var reqs []storage.PublishedRequest
		var waves []storage.ExecWave
		// Sized up front: for an exec to 100 000 PCs it grew a dozen times,
		// copying its 7 MB of rows (a fifth of the exec engine's CPU).
		expected := 0
		for _, f := range fires {
			expected += len(f.expected)
		}
		exp := make([]storage.ExecExpected, 0, expected)
		for _, f := range fires {
			if !f.live() || existing[f.execID] {
				continue
			}
			rows = append(rows, f.row)
			for _, o := range f.p.now {
				reqs = append(reqs, storage.PublishedRequest{RequestID: o.requestID, ExecID: f.execID, Subject: o.subject})
			}
			for _, pc := range f.expected {
				exp = append(exp, storage.ExecExpected{ExecID: f.execID, PcID: pc})
			}
			waves = append(waves, f.p.waves...)
		}
		if err := storage.InsertChunked(ctx, tx, rows, false); err != nil {
			return fmt.Errorf("executions: %w", err)
		}
		if err := storage.InsertChunked(ctx, tx, reqs, false); err != nil {
			return fmt.Errorf("exec_requests: %w", err)
		}
		if err := storage.InsertExpected(ctx, tx, exp); err != nil {
			return fmt.Errorf("exec_expected: %w", err)
		}
		if err := storage.InsertChunked(ctx, tx, waves, false); err != nil {
			return fmt.Errorf("exec_waves: %w", err)
		}
		return nil
	})
	return existing, err
}

// fence checks the fencing token of every fenced fire of the batch
// against the stored one, first in the transaction (scaleout.md §0.3):
// the read holds a share lock on PostgreSQL, so a new leader's raise
// waits for this transaction. A fire under an older token is refused (its
// err set, so that nothing of it is written or published); the rest of
// the batch goes on. The lowest token is checked first: when it passes,
// all do.
func fence(ctx context.Context, tx bun.Tx, fires []*fire) error {
	var low uint64
	for _, f := range fires {
		if t := f.q.req.Fence; f.live() && t != 0 && (low == 0 || t < low) {
			low = t
		}
	}
	if low == 0 {
		return nil
	}
	err := storage.CheckFence(ctx, tx, low)
	var fe *storage.FenceError
	if !errors.As(err, &fe) {
		return err
	}
	for _, f := range fires {
		if t := f.q.req.Fence; f.live() && t != 0 && t < fe.Fence {
			f.err = &storage.FenceError{Token: t, Fence: fe.Fence}
		}
	}
	return nil
}

// recordTimeout bounds the wait for the EXEC stream to store a batch's
// records before its Commands go out. A stream that refuses writes (a
// limit) or a server without JetStream answers at once, and NATS away is
// answered before this (natsDown); the bound is for a server that does
// not answer, and leaves room for a large batch on a loaded machine.
const recordTimeout = 15 * time.Second

// storeRecords stores the durable record of every recorded fire on the
// EXEC stream (one pipeline) before any of its Commands is published: an
// exec whose record is not stored is not published at all (an exec that
// failed must not have run), its rows are marked failed (finish) and its
// caller gets 503 with the cause. The records say published at now, the
// moment the Commands are about to go out; a failure to publish them
// revises the record.
func (e *engine) storeRecords(ctx context.Context, fires []*fire, now time.Time) {
	var live []*fire
	var recs []*execrecord.Record
	for _, f := range fires {
		if f.live() && f.pubErr == nil { // a failed pin publishes nothing: finish records it
			live = append(live, f)
			recs = append(recs, newRecord(f, now))
		}
	}
	if len(recs) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, recordTimeout)
	defer cancel()
	for i, err := range e.Records.PublishNew(rctx, recs) {
		if err != nil {
			f := live[i]
			e.Metrics.recordFailed.Inc()
			f.handed, f.pubErr = 0, fmt.Errorf("%w: exec record not stored, so no command was published: %v",
				broker.ErrNATSUnavailable, err)
		}
	}
}

// publishAll hands the Commands of every recorded fire to the NATS client
// back to back and flushes once: the server has them all after one round
// trip. A publish that fails (the connection is closed) leaves the fire
// it belongs to partly published and every later fire unpublished; the
// Commands handed over before it are still flushed, so that the record of
// what went out is exact when the connection allows it.
func (e *engine) publishAll(fires []*fire) {
	var live []*fire
	for _, f := range fires {
		if f.live() && f.pubErr == nil {
			live = append(live, f)
		}
	}
	total := 0
	for fi, f := range live {
		for i, o := range f.p.now {
			err := e.NATS.Publish(o.subject, o.payload)
			if err == nil {
				total++
				continue
			}
			f.handed, f.pubErr = i, fmt.Errorf("publish %s: %w", o.subject, err)
			for _, g := range live[fi+1:] {
				g.handed, g.pubErr = 0, fmt.Errorf("not published after an earlier publish failed: %w", err)
			}
			flushed := total > 0 && e.NATS.FlushTimeout(e.FlushTimeout) == nil
			f.confirmed = i > 0 && flushed
			for _, g := range live[:fi] {
				g.confirmed = flushed
				if !flushed {
					g.pubErr = fmt.Errorf("publish %s failed after these commands, and their delivery is not confirmed: %w", o.subject, err)
				}
			}
			return
		}
		f.handed = len(f.p.now)
	}
	if total == 0 {
		for _, f := range live {
			f.confirmed = true
		}
		return
	}
	if err := e.NATS.FlushTimeout(e.FlushTimeout); err != nil {
		for _, f := range live {
			f.pubErr = fmt.Errorf("flush after %d commands (delivery not confirmed): %w", total, err)
		}
		return
	}
	for _, f := range live {
		f.confirmed = true
	}
}

// finish records what was published, answers every request and hands the
// records, audit events and replies to the pipeline.
func (e *engine) finish(ctx context.Context, sys *actor.ActorSystem, fires []*fire) {
	done := e.Clock.Now().UTC()
	var ok []*fire
	for _, f := range fires {
		if f.live() && f.pubErr == nil {
			ok = append(ok, f)
		}
	}
	e.deferStamps(ctx, ok, done)

	h := &handoff{}
	pending := false
	var replies []outbound
	for _, f := range fires {
		req := f.q.req
		reply := &messages.ExecReply{CorrelationID: req.CorrelationID}
		switch {
		case f.err != nil:
			reply.Err = f.err
			// Nothing was recorded or published: answer at once.
			e.reply(sys, f.q.sender, reply)
			continue
		case f.existing:
			reply.Existing = true
			reply.Response, reply.Err = e.existingResponse(ctx, f.execID)
			e.reply(sys, f.q.sender, reply)
			continue
		}
		resp := messages.ExecResponse{
			ExecID: f.execID, JobID: f.m.ID, Version: f.m.Version,
			TargetCount: len(f.p.subjects), Subjects: f.p.subjects, ExpectedPcs: len(f.expected),
		}
		e.Metrics.published.Add(float64(f.handed))
		e.Metrics.fired.WithLabelValues(auditActor(req)).Inc()
		e.Metrics.fanoutDuration.Observe(time.Since(f.q.at).Seconds())
		if f.pubErr != nil {
			e.Metrics.publishFailed.Inc()
			e.log.Error("exec publish failed", "exec_id", f.execID, "job_id", f.m.ID, "published", f.handed, "of", len(f.p.now), "err", f.pubErr)
			recorded, err := e.recordPublishFailure(ctx, f.row, f.p, f.expected, f.handed, f.confirmed, f.pubErr, f.row.CreatedAt.Time, done)
			if err != nil {
				e.log.Error("record exec publish failure", "exec_id", f.execID, "err", err)
			} else {
				if rec := e.loadRecord(ctx, f.execID); rec != nil {
					h.revised = append(h.revised, rec)
				}
				progressed(sys, recorded, done)
			}
			resp.Subjects = subjectsOf(f.p.now[:f.handed])
			resp.TargetCount = f.handed
			h.audits = append(h.audits, e.auditEvent(req, &f.m, resp, f.p.waveMode, f.pubErr))
			if f.handed == 0 {
				// Nothing went out: the exec did not run, and the caller
				// may try again once NATS can take it.
				reply.Err = nothingPublished(f.execID, f.pubErr)
			} else {
				// Some Commands are out and agents run them: the answer
				// says what was published (the row and the audit event
				// say what was not), never an error the caller would
				// retry into a second run.
				reply.Response = resp
			}
			replies = append(replies, outbound{to: f.q.sender, msg: reply})
			continue
		}
		progressed(sys, f.row, done)
		h.audits = append(h.audits, e.auditEvent(req, &f.m, resp, f.p.waveMode, nil))
		reply.Response = resp
		replies = append(replies, outbound{to: f.q.sender, msg: reply})
		pending = pending || hasPendingWave(f.p)
	}
	// The records are on the EXEC stream already (storeRecords), so the
	// answers do not wait for the pipeline (whose audit events a failing
	// AUDIT stream may hold up). Unless a burst is waiting, the
	// published_at marks are written first, so that whoever is answered
	// reads them.
	if len(e.queue) == 0 {
		e.flushStamps(ctx)
	}
	for _, o := range replies {
		e.reply(sys, o.to, o.msg.(*messages.ExecReply))
	}
	e.pipe.push(h)
	if pending {
		e.rearm(ctx)
	}
}

func (e *engine) reply(sys *actor.ActorSystem, to *actor.PID, r *messages.ExecReply) {
	if to != nil {
		sys.Root.Send(to, r)
	}
}

// stamps are the published_at marks of one batch, not written yet.
type stamps struct {
	at      time.Time
	ids     []string
	waveIDs []string
}

// maxUnstamped bounds the execs whose marks wait for the engine to be idle.
const maxUnstamped = 20_000

// deferStamps keeps the published_at marks of the published fires for
// flushStamps. Marking 10 000 request_ids is an update of 10 000 rows; in
// a burst it is left until the engine is idle, so it does not delay the
// next batch's Commands. Until then (and if the process dies first) the
// rows say "not confirmed published", the conservative reading; the
// records handed to the pipeline carry the marks already, and whatever
// reads the rows back (a later record, a cancel, a wave) flushes them
// first.
func (e *engine) deferStamps(ctx context.Context, fires []*fire, at time.Time) {
	st := stamps{at: at}
	for _, f := range fires {
		if len(f.p.now) == 0 {
			continue
		}
		st.ids = append(st.ids, f.execID)
		if f.p.waveMode {
			st.waveIDs = append(st.waveIDs, f.execID)
		}
	}
	if len(st.ids) == 0 {
		return
	}
	e.unstamped = append(e.unstamped, st)
	e.unstampedExecs += len(st.ids)
	// An immediate wave stays pending until marked, and a pending wave
	// that is due gets published: rollouts (rare) are marked at once.
	if e.unstampedExecs >= maxUnstamped || len(st.waveIDs) > 0 {
		e.flushStamps(ctx)
	}
}

// flushStamps writes the deferred published_at marks in one transaction.
func (e *engine) flushStamps(ctx context.Context) {
	if len(e.unstamped) == 0 {
		return
	}
	err := e.Store.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		for _, st := range e.unstamped {
			for i := 0; i < len(st.ids); i += insertChunk {
				if _, err := tx.NewUpdate().Model((*storage.PublishedRequest)(nil)).
					Set("published_at = ?", storage.T(st.at)).
					Where("exec_id IN (?)", bun.List(st.ids[i:min(i+insertChunk, len(st.ids))])).
					Where("published_at IS NULL").Exec(ctx); err != nil {
					return err
				}
			}
			// An immediate wave carries its request_id from the start; a
			// delayed one gets it when it is published.
			for i := 0; i < len(st.waveIDs); i += insertChunk {
				if _, err := tx.NewUpdate().Model((*storage.ExecWave)(nil)).
					Set("state = ?", storage.WavePublished).Set("published_at = ?", storage.T(st.at)).
					Where("exec_id IN (?)", bun.List(st.waveIDs[i:min(i+insertChunk, len(st.waveIDs))])).
					Where("request_id IS NOT NULL").Where("state = ?", storage.WavePending).Exec(ctx); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		// The Commands are out; only the published_at marks are missing.
		e.log.Error("record execs published", "execs", e.unstampedExecs, "err", err)
	}
	e.unstamped, e.unstampedExecs = nil, 0
}

// newRecord is the record of a fire as just recorded and published.
func newRecord(f *fire, at time.Time) *execrecord.Record {
	reqs := make([]storage.PublishedRequest, len(f.p.now))
	for i, o := range f.p.now {
		reqs[i] = storage.PublishedRequest{RequestID: o.requestID, ExecID: f.execID, Subject: o.subject, PublishedAt: storage.T(at)}
	}
	waves := make([]storage.ExecWave, len(f.p.waves))
	for i, w := range f.p.waves {
		if w.RequestID != nil {
			w.State, w.PublishedAt = storage.WavePublished, storage.T(at)
		}
		waves[i] = w
	}
	return execrecord.New(f.row, reqs, f.expected, waves)
}

// existingResponse describes an exec recorded before under the id a
// request asked for.
func (e *engine) existingResponse(ctx context.Context, execID string) (messages.ExecResponse, error) {
	ex := new(storage.Execution)
	if err := e.Store.R.NewSelect().Model(ex).Where("exec_id = ?", execID).Scan(ctx); err != nil {
		return messages.ExecResponse{}, fmt.Errorf("load exec %s: %w", execID, err)
	}
	return responseOf(ex), nil
}

// responseOf is the ExecResponse an exec's row stands for.
func responseOf(ex *storage.Execution) messages.ExecResponse {
	var subjects []string
	if err := json.Unmarshal(ex.Subjects, &subjects); err != nil {
		subjects = nil // the row's own subjects column; an old row may hold none
	}
	return messages.ExecResponse{ExecID: ex.ExecID, JobID: ex.JobID, Version: ex.Version,
		TargetCount: ex.TargetCount, Subjects: subjects, ExpectedPcs: ex.ExpectedPcs}
}

// nothingPublished is the answer to an exec none of whose Commands went
// out: 503 with the cause.
func nothingPublished(execID string, err error) error {
	if errors.Is(err, broker.ErrNATSUnavailable) {
		return fmt.Errorf("%w (exec %s)", err, execID)
	}
	return fmt.Errorf("%w: nothing was published (exec %s): %v", broker.ErrNATSUnavailable, execID, err)
}

// errStopping answers the requests still queued when the engine stops.
var errStopping = errors.New("the exec engine stopped before handling this request; nothing was published")
