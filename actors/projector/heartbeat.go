package projector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"
	"github.com/uptrace/bun"

	"kanade-backend/actors/clock"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

// heartbeatProjector upserts agents from the core subscription heartbeat.>.
// Heartbeats are coalesced in memory per pc_id and flushed at most once per
// HeartbeatFlush in one transaction, whatever the fleet size: upstream wrote
// one transaction per heartbeat and starved every other writer (defect 8).
// Heartbeats are not in a stream, so one lost in a crash is simply replaced
// by the agent's next one.
type heartbeatProjector struct {
	env *env
	sub *nats.Subscription
	// known holds the PCs whose agents row a committed flush wrote: their
	// heartbeats only update the row (one statement), where an unknown
	// PC's first goes through the insert that tells whether it is new.
	// Bounded by the fleet, like pending. Only the actor touches it.
	known map[string]struct{}

	// The subscription's goroutine decodes and coalesces each heartbeat
	// under mu, and the actor takes what is pending at each flush: 3 333
	// heartbeats/s (100 000 agents) do not each wake the actor's mailbox
	// goroutine, which was about a tenth of the idle fleet's backend CPU
	// in scheduling alone.
	mu      sync.Mutex
	pending map[string]*beat
	errs    []storage.ProjectionError
	timer   clock.Timer
	closed  bool
}

var _ actor.Actor = (*heartbeatProjector)(nil)

// maxPendingErrors bounds the undecodable heartbeats kept for the next
// flush; pending heartbeats themselves are bounded by the fleet (one per
// PC).
const maxPendingErrors = 1000

// flushTick is the flush timer firing.
type flushTick struct{}

// beat is one PC's coalesced heartbeats since the last flush.
type beat struct {
	pcID         string
	at           time.Time
	agentVersion string
	hostname     *string
	osFamily     *string
}

func newHeartbeatProjector(e *env) *heartbeatProjector {
	return &heartbeatProjector{env: e, pending: map[string]*beat{}, known: map[string]struct{}{}}
}

func (h *heartbeatProjector) Receive(c actor.Context) {
	switch c.Message().(type) {
	case *actor.Started:
		self, root := c.Self(), c.ActorSystem().Root
		tick := func() { root.Send(self, &flushTick{}) }
		sub, err := h.env.conn.Subscribe(messages.SubjectHeartbeatAll, func(msg *nats.Msg) {
			h.receive(msg.Subject, msg.Data, tick)
		})
		if err != nil {
			panic(fmt.Errorf("subscribe %s: %w", messages.SubjectHeartbeatAll, err))
		}
		// Decoding runs on the subscription now: a fleet starting at once
		// (100 000 first heartbeats) must queue, as it did in the actor's
		// unbounded mailbox, not trip the client's slow-consumer limit
		// (65 536 messages) and lose first heartbeats.
		if err := sub.SetPendingLimits(-1, -1); err != nil {
			panic(fmt.Errorf("subscribe %s: %w", messages.SubjectHeartbeatAll, err))
		}
		h.sub = sub
		reportReady(c, ProjHeartbeat)
	case *flushTick:
		beats, errs := h.take()
		if !h.flush(c, beats, errs, h.env.opContext) {
			// Keep what is pending (newer heartbeats merge into it) and try
			// again at the next period.
			self, root := c.Self(), c.ActorSystem().Root
			h.putBack(beats, errs, func() { root.Send(self, &flushTick{}) })
		}
	case *actor.Stopping:
		h.shutdown(c)
	case *actor.Restarting:
		h.shutdown(c)
	}
}

// shutdown stops receiving and writes what is pending, so a graceful stop
// does not lose the last second of heartbeats.
func (h *heartbeatProjector) shutdown(c actor.Context) {
	if h.sub != nil {
		_ = h.sub.Unsubscribe()
		h.sub = nil
	}
	h.mu.Lock()
	h.closed = true // a callback still running drops its heartbeat
	h.mu.Unlock()
	beats, errs := h.take()
	h.flush(c, beats, errs, h.env.finalContext)
}

// receive decodes one message of heartbeat.> and merges it into what is
// pending; it runs on the subscription's goroutine. The flush period starts
// (tick armed) before the heartbeat is counted as received, so whoever sees
// the count (a test driving a fake clock) knows the flush timer is armed.
func (h *heartbeatProjector) receive(subject string, data []byte, tick func()) {
	hb, err := decodeHeartbeatOn(subject, data)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	if h.timer == nil {
		h.timer = h.env.clock.AfterFunc(h.env.cfg.HeartbeatFlush, tick)
	}
	h.env.metrics.heartbeats.Inc()
	if err != nil {
		h.env.metrics.poison.WithLabelValues(ProjHeartbeat).Inc()
		if len(h.errs) >= maxPendingErrors {
			// The database has not taken a flush for a while and a sender
			// keeps publishing garbage: count it, keep memory bounded.
			return
		}
		h.errs = append(h.errs, storage.ProjectionError{
			Projection: ProjHeartbeat, Stream: "", StreamSeq: 0, Subject: subject,
			Error: err.Error(), Payload: data, RecordedAt: storage.T(h.env.clock.Now()),
		})
		return
	}
	merge(h.pending, &beat{pcID: hb.PcID, at: hb.At, agentVersion: hb.AgentVersion, hostname: hb.Hostname, osFamily: hb.OsFamily}, false)
}

// merge folds b into pending's beat of the same PC: the latest at and its
// agent_version, the first non-null hostname and os_family. older says b
// was received before the pending one (a failed flush put back).
func merge(pending map[string]*beat, b *beat, older bool) {
	p := pending[b.pcID]
	if p == nil {
		pending[b.pcID] = b
		return
	}
	if b.at.After(p.at) || (!older && b.at.Equal(p.at)) {
		p.at, p.agentVersion = b.at, b.agentVersion
	}
	if p.hostname == nil || (older && b.hostname != nil) {
		p.hostname = b.hostname
	}
	if p.osFamily == nil || (older && b.osFamily != nil) {
		p.osFamily = b.osFamily
	}
}

// take returns what is pending and starts a new period.
func (h *heartbeatProjector) take() (map[string]*beat, []storage.ProjectionError) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.timer != nil {
		h.timer.Stop()
		h.timer = nil
	}
	beats, errs := h.pending, h.errs
	h.pending, h.errs = map[string]*beat{}, nil
	return beats, errs
}

// putBack returns what a failed flush took to the pending heartbeats,
// under those received since, and arms the next flush.
func (h *heartbeatProjector) putBack(beats map[string]*beat, errs []storage.ProjectionError, tick func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, b := range beats {
		merge(h.pending, b, true)
	}
	h.errs = append(errs, h.errs...)
	if len(h.errs) > maxPendingErrors {
		h.errs = h.errs[:maxPendingErrors]
	}
	if h.timer == nil && !h.closed {
		h.timer = h.env.clock.AfterFunc(h.env.cfg.HeartbeatFlush, tick)
	}
}

// decodeHeartbeatOn decodes a heartbeat received on subject, which must be
// the heartbeat subject of the pc_id it carries: a PC may publish only its
// own heartbeat subject (agent credentials), so one that names another PC
// inside is forged and never becomes that PC's liveness.
func decodeHeartbeatOn(subject string, data []byte) (messages.Heartbeat, error) {
	hb, err := decodeHeartbeat(data)
	if err == nil && subject != messages.HeartbeatSubject(hb.PcID) {
		err = fmt.Errorf("heartbeat on %s carries pc_id %q", subject, hb.PcID)
	}
	return hb, err
}

func decodeHeartbeat(data []byte) (messages.Heartbeat, error) {
	var hb messages.Heartbeat
	if err := json.Unmarshal(data, &hb); err != nil {
		return hb, fmt.Errorf("decode Heartbeat: %w", err)
	}
	if hb.PcID == "" || hb.At.IsZero() {
		return hb, errors.New("heartbeat lacks pc_id or at")
	}
	// Every Command to this agent is addressed by its pc_id as a subject
	// token; an agent row with "*" or "a.b" would make every fan-out that
	// includes it fail, so such a heartbeat never becomes an agent.
	if err := messages.ValidateToken("pc_id", hb.PcID); err != nil {
		return hb, fmt.Errorf("heartbeat: %w", err)
	}
	return hb, nil
}

// flush writes the heartbeats and errors taken from pending in one
// transaction and publishes AgentsSeen, its I/O bounded by a context from
// opCtx; it reports success.
func (h *heartbeatProjector) flush(c actor.Context, pending map[string]*beat, errs []storage.ProjectionError, opCtx func() (context.Context, context.CancelFunc)) bool {
	if len(pending) == 0 && len(errs) == 0 {
		return true
	}
	start := time.Now()
	now := h.env.clock.Now().UTC()
	beats := make([]*beat, 0, len(pending))
	for _, b := range pending {
		beats = append(beats, b)
	}
	// Sorted by pc_id: the upsert walks the primary key index in order.
	slices.SortFunc(beats, byPC)
	ctx, cancel := opCtx()
	defer cancel()
	var added map[string]bool
	err := h.env.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		var err error
		if added, err = upsertAgents(ctx, tx, h.env.stmts, beats, h.known, now); err != nil {
			return err
		}
		return recordErrors(ctx, tx, errs)
	})
	if err != nil {
		level := slog.LevelDebug // retried every period: say it once, then quietly
		if h.env.stalled(ProjHeartbeat, err) {
			level = slog.LevelError
		}
		h.env.log.Log(ctx, level, "heartbeat flush failed; keeping the heartbeats for the next flush", "agents", len(beats), "err", err)
		return false
	}
	h.env.progressed(ProjHeartbeat)
	for _, b := range beats {
		h.known[b.pcID] = struct{}{}
	}
	m := h.env.metrics
	m.flushDuration.Observe(time.Since(start).Seconds())
	m.agentsPerFlush.Observe(float64(len(beats)))
	m.projected.WithLabelValues(ProjHeartbeat).Add(float64(len(beats)))
	if len(beats) > 0 {
		seen := make([]messages.AgentSeen, len(beats))
		for i, b := range beats {
			seen[i] = messages.AgentSeen{PcID: b.pcID, At: b.at, AgentVersion: b.agentVersion, New: added[b.pcID]}
		}
		c.ActorSystem().EventStream.Publish(&messages.AgentsSeen{Agents: seen})
	}
	return true
}

// upsertAgents writes the agents rows: hostname and os_family keep their
// first non-null value, last_heartbeat (the agent's clock) never moves
// backwards and agent_version follows it, updated_at is the flush time.
// It returns the PCs whose row it created.
//
// A PC in known (a row written by an earlier flush) is only updated: one
// write per heartbeat, where the insert attempt that follows cost the idle
// 100 000-agent fleet about a third of the flush. Should its row be gone
// (the agent was decommissioned, here or by another replica), the
// statement changes fewer rows than it was given, and its chunk takes the
// path of unknown PCs (the update it applied is idempotent).
//
// Unknown PCs are inserted first (ON CONFLICT DO NOTHING RETURNING): the
// database decides which writer created a row, so with several writers
// (replicas on PostgreSQL) each agent is announced new exactly once; a
// look-up before the insert would let both writers see it missing. The
// others are then upserted.
func upsertAgents(ctx context.Context, tx bun.Tx, stmts *stmtCache, beats []*beat, known map[string]struct{}, now time.Time) (map[string]bool, error) {
	upd := storage.T(now)
	var fresh, seen []*beat
	gone := false
	for _, b := range beats {
		if _, ok := known[b.pcID]; ok {
			seen = append(seen, b)
		} else {
			fresh = append(fresh, b)
		}
	}
	err := chunks(seen, chunkRows, func(part []*beat) error {
		res, err := stmts.exec(ctx, tx, updateAgentsSQL(tx, part, upd), len(part) == chunkRows)
		if err != nil {
			return fmt.Errorf("update %d agents: %w", len(part), err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("update %d agents: %w", len(part), err)
		}
		if n < int64(len(part)) {
			fresh, gone = append(fresh, part...), true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if gone {
		slices.SortFunc(fresh, byPC) // back in pc_id order, as flush sorted them
	}
	return insertAgents(ctx, tx, stmts, fresh, upd)
}

// updateAgentsSQL is the UPDATE of part's existing agents rows, each found
// by its primary key (VALUES columns are column1… on both databases; every
// value is text, as the columns).
func updateAgentsSQL(db bun.IDB, part []*beat, upd storage.Time) *storage.DriverSQL {
	q := storage.NewDriverSQL(db, len(part)*5+1)
	q.WriteString("UPDATE agents SET " +
		"hostname = COALESCE(agents.hostname, v.column2), " +
		"os_family = COALESCE(agents.os_family, v.column3), " +
		"agent_version = CASE WHEN v.column5 >= agents.last_heartbeat THEN v.column4 ELSE agents.agent_version END, " +
		"last_heartbeat = CASE WHEN v.column5 > agents.last_heartbeat THEN v.column5 ELSE agents.last_heartbeat END, " +
		"updated_at = ")
	q.Arg(upd)
	q.WriteString(" FROM (VALUES ")
	for i, b := range part {
		if i > 0 {
			q.WriteByte(',')
		}
		q.Tuple(b.pcID, b.hostname, b.osFamily, b.agentVersion, storage.T(b.at))
	}
	q.WriteString(") AS v WHERE agents.pc_id = v.column1")
	return q
}

// insertAgents inserts the rows of beats that do not exist yet, returning
// them, and upserts the others.
func insertAgents(ctx context.Context, tx bun.Tx, stmts *stmtCache, beats []*beat, upd storage.Time) (map[string]bool, error) {
	added := make(map[string]bool)
	// insert starts "INSERT INTO agents (…) VALUES (…),(…)" for part.
	insert := func(part []*beat) *storage.DriverSQL {
		q := storage.NewDriverSQL(tx, len(part)*6)
		q.WriteString("INSERT INTO agents (" + agentColumns + ") VALUES ")
		for i, b := range part {
			if i > 0 {
				q.WriteByte(',')
			}
			q.Tuple(b.pcID, b.hostname, b.osFamily, b.agentVersion, storage.T(b.at), upd)
		}
		return q
	}
	err := chunks(beats, chunkRows, func(part []*beat) error {
		q := insert(part)
		q.WriteString(" ON CONFLICT (pc_id) DO NOTHING RETURNING pc_id")
		rows, err := stmts.query(ctx, tx, q, len(part) == chunkRows)
		if err != nil {
			return fmt.Errorf("insert %d agents: %w", len(part), err)
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return fmt.Errorf("insert %d agents: %w", len(part), err)
			}
			added[id] = true
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("insert %d agents: %w", len(part), err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var existing []*beat
	for _, b := range beats {
		if !added[b.pcID] {
			existing = append(existing, b)
		}
	}
	err = chunks(existing, chunkRows, func(part []*beat) error {
		q := insert(part)
		q.WriteString(` ON CONFLICT (pc_id) DO UPDATE SET
				hostname = COALESCE(agents.hostname, excluded.hostname),
				os_family = COALESCE(agents.os_family, excluded.os_family),
				agent_version = CASE WHEN excluded.last_heartbeat >= agents.last_heartbeat THEN excluded.agent_version ELSE agents.agent_version END,
				last_heartbeat = CASE WHEN excluded.last_heartbeat > agents.last_heartbeat THEN excluded.last_heartbeat ELSE agents.last_heartbeat END,
				updated_at = excluded.updated_at`)
		if _, err := stmts.exec(ctx, tx, q, len(part) == chunkRows); err != nil {
			return fmt.Errorf("upsert %d agents: %w", len(part), err)
		}
		return nil
	})
	return added, err
}

// byPC orders beats by pc_id.
func byPC(a, b *beat) int { return strings.Compare(a.pcID, b.pcID) }

const agentColumns = "pc_id, hostname, os_family, agent_version, last_heartbeat, updated_at"
