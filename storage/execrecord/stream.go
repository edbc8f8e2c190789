package execrecord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/uptrace/bun"

	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker"
)

// DefaultPartBytes bounds the JSON of one part before compression: half
// the NATS server's default 1 MiB payload limit, so a part fits whatever
// its content compresses to.
const DefaultPartBytes = 512 << 10

// HeaderParts is the header that tells how many parts a revision has.
const HeaderParts = "Kanade-Record-Parts"

// subjectPrefix is messages.SubjectCommandsExecAll without the wildcard.
const subjectPrefix = "commands.exec."

// Subject is where part of revision rev of exec execID is stored.
func Subject(execID, rev string, part int) string {
	return subjectPrefix + execID + "." + rev + "." + strconv.Itoa(part)
}

// parseSubject splits commands.exec.<exec_id>.<rev>.<part>.
func parseSubject(subject string) (execID, rev string, part int, err error) {
	tokens := strings.Split(strings.TrimPrefix(subject, subjectPrefix), ".")
	if !strings.HasPrefix(subject, subjectPrefix) || len(tokens) != 3 {
		return "", "", 0, fmt.Errorf("subject %q is not %s<exec_id>.<rev>.<part>", subject, subjectPrefix)
	}
	part, err = strconv.Atoi(tokens[2])
	if err != nil || part < 0 {
		return "", "", 0, fmt.Errorf("subject %q: part %q is not a number", subject, tokens[2])
	}
	return tokens[0], tokens[1], part, nil
}

// Streams opens a stream by name; it is all a restore needs.
type Streams interface {
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
}

// JetStream is what the publisher needs.
type JetStream interface {
	Streams
	broker.AsyncPublisher
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

var _ JetStream = (jetstream.JetStream)(nil)

// Publisher stores records on the EXEC stream.
type Publisher struct {
	JS JetStream
	// PartBytes bounds one part (default DefaultPartBytes).
	PartBytes int

	rev atomic.Int64
}

// Publish stores rec as a new revision and purges the older ones. The
// record is safe once Publish returns nil; a failure in the purge only
// leaves an older revision that a restore ignores.
func (p *Publisher) Publish(ctx context.Context, rec *Record) error {
	id := rec.Exec.ExecID
	msgs, err := p.encode(rec)
	if err != nil {
		return err
	}
	var first uint64
	for i, msg := range msgs {
		ack, err := p.JS.PublishMsg(ctx, msg, jetstream.WithExpectStream(messages.StreamExec))
		if err != nil {
			return fmt.Errorf("store exec record %s part %d/%d on %s: %w", id, i+1, len(msgs), messages.StreamExec, err)
		}
		if i == 0 {
			first = ack.Sequence
		}
	}
	st, err := p.JS.Stream(ctx, messages.StreamExec)
	if err == nil {
		err = st.Purge(ctx, jetstream.WithPurgeSubject(subjectPrefix+id+".>"), jetstream.WithPurgeSequence(first))
	}
	if err != nil {
		return fmt.Errorf("purge older exec records of %s: %w", id, err)
	}
	return nil
}

// PublishNew stores the first revision of each of recs, execs the engine
// has just recorded: no older revision can exist, so nothing is purged,
// and the parts of all of them are published in one pipeline
// (broker.PublishAll) rather than one round trip each. It returns one error
// per record (nil: stored).
func (p *Publisher) PublishNew(ctx context.Context, recs []*Record) []error {
	errs := make([]error, len(recs))
	var msgs []*nats.Msg
	var owner []int
	for i, rec := range recs {
		m, err := p.encode(rec)
		if err != nil {
			errs[i] = err
			continue
		}
		for range m {
			owner = append(owner, i)
		}
		msgs = append(msgs, m...)
	}
	for j, err := range broker.PublishAll(ctx, p.JS, msgs, jetstream.WithExpectStream(messages.StreamExec)) {
		if err != nil && errs[owner[j]] == nil {
			errs[owner[j]] = fmt.Errorf("store exec record %s on %s: %w", recs[owner[j]].Exec.ExecID, messages.StreamExec, err)
		}
	}
	return errs
}

// encode turns rec into the messages of a new revision.
func (p *Publisher) encode(rec *Record) ([]*nats.Msg, error) {
	max := p.PartBytes
	if max <= 0 {
		max = DefaultPartBytes
	}
	parts := split(rec, max)
	// Revisions only need to be distinct per exec; the restore orders
	// them by stream sequence. Wall time keeps them distinct across
	// restarts, the counter within one process.
	rev := strconv.FormatInt(p.nextRev(), 36)
	msgs := make([]*nats.Msg, len(parts))
	for i, part := range parts {
		data, gzipped, err := encodePart(part)
		if err != nil {
			return nil, err
		}
		msg := &nats.Msg{Subject: Subject(rec.Exec.ExecID, rev, i), Data: data, Header: nats.Header{}}
		msg.Header.Set(HeaderParts, strconv.Itoa(len(parts)))
		if gzipped {
			msg.Header.Set("Content-Encoding", "gzip")
		}
		msgs[i] = msg
	}
	return msgs, nil
}

func (p *Publisher) nextRev() int64 {
	now := time.Now().UnixNano()
	for {
		last := p.rev.Load()
		next := max(now, last+1)
		if p.rev.CompareAndSwap(last, next) {
			return next
		}
	}
}

// restoreMarker is the projection_checkpoints row of a restore: last_seq 0
// while it runs, the last stream sequence read once it is done. A restore
// that was interrupted is run again at the next start.
const restoreMarker = "exec-records"

// probeTimeout bounds RestoreIfWiped's look at the EXEC stream.
const probeTimeout = 15 * time.Second

// Result is what a restore did.
type Result struct {
	// Execs is how many execs were written back.
	Execs int
	// Skipped counts messages that could not be read (recorded nowhere
	// else: the record is the engine's, not an agent's, so one lost here
	// was damaged in the broker) and revisions missing a part.
	Skipped int
}

// RestoreIfWiped writes the records of the EXEC stream back into the store
// when the store is new (fresh: it never projected results) and has no
// executions while the stream has records (the database was deleted or
// replaced), or when an earlier restore did not finish. It runs before the
// results projector replays RESULTS, so that every replayed result finds
// its exec. Otherwise it does nothing: in a database that has projected
// results, no executions means retention deleted them, and they stay
// deleted.
func RestoreIfWiped(ctx context.Context, st *storage.Store, js Streams, log *slog.Logger, fresh bool) (Result, error) {
	// The look at the stream gets a short deadline of its own: the caller's
	// covers a whole restore (minutes), and on a NATS cluster a JetStream
	// API request sent while a stream elects a new leader can go
	// unanswered, so it would wait out that deadline instead of failing and
	// being retried (seen in the cluster test: a new leader's results
	// projector silent after the NATS node leading a stream was killed).
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	stream, err := js.Stream(pctx, messages.StreamExec)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		// Deleted behind our back (the health check reports it): there is
		// nothing to restore, and results must still be projected.
		log.Warn("stream EXEC is missing; executions cannot be restored from it", "stream", messages.StreamExec)
		return Result{}, nil
	}
	if err != nil {
		return Result{}, fmt.Errorf("exec records: stream %s: %w", messages.StreamExec, err)
	}
	info, err := stream.Info(pctx)
	if err != nil {
		return Result{}, fmt.Errorf("exec records: stream %s: %w", messages.StreamExec, err)
	}
	if info.State.Msgs == 0 {
		return Result{}, nil
	}
	var marker storage.Checkpoint
	err = st.R.NewSelect().Model(&marker).Where("projection = ?", restoreMarker).Scan(ctx)
	interrupted := err == nil && marker.LastSeq == 0
	if err != nil && !IsNotFound(err) {
		return Result{}, fmt.Errorf("exec records: read restore marker: %w", err)
	}
	if !interrupted && !fresh {
		return Result{}, nil
	}
	if !interrupted {
		exists, err := st.R.NewSelect().Model((*storage.Execution)(nil)).ColumnExpr("1").Exists(ctx)
		if err != nil {
			return Result{}, fmt.Errorf("exec records: probe executions: %w", err)
		}
		if exists {
			return Result{}, nil
		}
	}
	log.Warn("restoring executions from the EXEC stream", "records", info.State.Msgs,
		"reason", map[bool]string{true: "an earlier restore did not finish", false: "table executions is empty"}[interrupted])
	t0 := time.Now()
	if err := saveMarker(ctx, st, 0); err != nil {
		return Result{}, err
	}
	res, last, err := restore(ctx, st, stream, info.State.LastSeq, log)
	if err != nil {
		return res, err
	}
	if err := saveMarker(ctx, st, last); err != nil {
		return res, err
	}
	log.Info("executions restored from the EXEC stream", "execs", res.Execs, "skipped", res.Skipped, "took", time.Since(t0).Round(time.Millisecond))
	return res, nil
}

func saveMarker(ctx context.Context, st *storage.Store, seq uint64) error {
	m := storage.Checkpoint{Projection: restoreMarker, Stream: messages.StreamExec, LastSeq: seq, UpdatedAt: storage.T(time.Now())}
	err := st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewInsert().Model(&m).On("CONFLICT (projection) DO UPDATE").
			Set("last_seq = EXCLUDED.last_seq").Set("updated_at = EXCLUDED.updated_at").Exec(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("exec records: save restore marker: %w", err)
	}
	return nil
}

// pendingRev collects the parts of one revision until all are there.
type pendingRev struct {
	parts map[int]*Record
	want  int
}

// restoreBatchRows bounds the rows written in one transaction.
const restoreBatchRows = 20000

// restore reads the stream from its first message up to last and writes
// every complete revision, the later one winning for the same exec.
func restore(ctx context.Context, st *storage.Store, stream jetstream.Stream, last uint64, log *slog.Logger) (Result, uint64, error) {
	var res Result
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{messages.SubjectCommandsExecAll},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return res, 0, fmt.Errorf("exec records: consumer: %w", err)
	}
	open := map[string]*pendingRev{} // by exec_id + "." + rev
	var batch []*Record
	rows := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
			for _, rec := range batch {
				if err := Restore(ctx, tx, rec); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("exec records: write %d execs: %w", len(batch), err)
		}
		res.Execs += len(batch)
		batch, rows = batch[:0], 0
		return nil
	}
	skip := func(subject string, err error) {
		res.Skipped++
		log.Error("exec record skipped", "subject", subject, "err", err)
	}
	var seq uint64
	pending := uint64(1)
	for seq < last && pending > 0 {
		msgs, err := cons.FetchNoWait(500)
		if err != nil {
			return res, seq, fmt.Errorf("exec records: fetch after seq %d: %w", seq, err)
		}
		n := 0
		for m := range msgs.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				skip(m.Subject(), err)
				continue
			}
			seq, pending = md.Sequence.Stream, md.NumPending
			id, rev, idx, err := parseSubject(m.Subject())
			if err != nil {
				skip(m.Subject(), err)
				continue
			}
			want, err := strconv.Atoi(m.Headers().Get(HeaderParts))
			if err != nil || want <= 0 || idx >= want {
				skip(m.Subject(), fmt.Errorf("header %s = %q does not fit part %d", HeaderParts, m.Headers().Get(HeaderParts), idx))
				continue
			}
			part, err := decodePart(m.Data())
			if err != nil {
				skip(m.Subject(), err)
				continue
			}
			key := id + "." + rev
			p := open[key]
			if p == nil {
				p = &pendingRev{parts: map[int]*Record{}, want: want}
				open[key] = p
			}
			p.parts[idx] = part
			if len(p.parts) < p.want {
				continue
			}
			delete(open, key)
			rec, err := assemble(id, p)
			if err != nil {
				skip(m.Subject(), err)
				continue
			}
			batch = append(batch, rec)
			rows += 1 + len(rec.Requests) + len(rec.Expected) + len(rec.Waves)
			if rows >= restoreBatchRows {
				if err := flush(); err != nil {
					return res, seq, err
				}
			}
		}
		if err := msgs.Error(); err != nil {
			return res, seq, fmt.Errorf("exec records: fetch after seq %d: %w", seq, err)
		}
		if n == 0 {
			break // the rest was purged or expired while reading
		}
	}
	if err := flush(); err != nil {
		return res, seq, err
	}
	// Revisions still open lost a part (a crash mid-publish); the exec's
	// previous revision, when there is one, was restored instead.
	for key := range open {
		skip(subjectPrefix+key, errors.New("revision incomplete"))
	}
	return res, max(seq, last), nil
}

func assemble(execID string, p *pendingRev) (*Record, error) {
	rec := p.parts[0]
	if rec.Exec.ExecID != execID {
		return nil, fmt.Errorf("record names exec %q, subject %q", rec.Exec.ExecID, execID)
	}
	for i := 1; i < p.want; i++ {
		rec.merge(p.parts[i])
	}
	return rec, nil
}
