package projector

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"

	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/execrecord"
)

// resultItem is one decoded ExecResult.
type resultItem = messages.ExecResult

// resultsCodec projects the RESULTS stream: a row per (request_id, pc_id)
// in execution_results (a broadcast Command is answered by many PCs with
// one request_id: upstream defect 1), inventory facts for inventory jobs,
// and exec progress.
type resultsCodec struct {
	// stmts keeps the full-chunk statements prepared (nil: unprepared).
	stmts *stmtCache
}

var _ codec[resultItem] = resultsCodec{}

func (resultsCodec) projection() string { return ProjResults }
func (resultsCodec) stream() string     { return messages.StreamResults }
func (resultsCodec) durable() string    { return DurableResults }
func (resultsCodec) table() string      { return "execution_results" }

// beforeConsume restores the exec engine's records into a wiped database
// before RESULTS is replayed: a result finds its exec only through the
// request_ids those records hold.
func (resultsCodec) beforeConsume(ctx context.Context, c actor.Context, e *env) error {
	cp, err := loadCheckpoint(ctx, e.store.R, ProjResults)
	if err != nil {
		return err
	}
	res, err := execrecord.RestoreIfWiped(ctx, e.store, e.js, e.log, cp == 0)
	if err != nil {
		return fmt.Errorf("projector %s: %w", ProjResults, err)
	}
	if res.Execs > 0 {
		c.ActorSystem().EventStream.Publish(&messages.ExecsRestored{Execs: res.Execs})
	}
	return nil
}

// decode rejects what the schema could not store, so that a bad message is
// poison instead of a database error that would fail its batch forever.
func (resultsCodec) decode(data []byte) (resultItem, error) {
	// Decoding through a type without ExecResult's UnmarshalJSON scans the
	// payload once instead of twice (a fifth of the projection's CPU); the
	// UTC normalisation that method adds is done here.
	type fields messages.ExecResult
	var r messages.ExecResult
	if err := json.Unmarshal(data, (*fields)(&r)); err != nil {
		return r, fmt.Errorf("decode ExecResult: %w", err)
	}
	r.StartedAt, r.FinishedAt = r.StartedAt.UTC(), r.FinishedAt.UTC()
	switch {
	case r.RequestID == "":
		return r, errors.New("ExecResult has no request_id")
	case r.PcID == "":
		return r, errors.New("ExecResult has no pc_id")
	case r.StartedAt.IsZero() || r.FinishedAt.IsZero():
		return r, errors.New("ExecResult lacks started_at or finished_at")
	}
	// The pc_id is what a re-run or a once_per_pc schedule addresses
	// Commands to; one that is not a subject token cannot be a PC.
	if err := messages.ValidateToken("pc_id", r.PcID); err != nil {
		return r, fmt.Errorf("ExecResult: %w", err)
	}
	return r, nil
}

const resultColumns = "request_id, pc_id, exec_id, job_id, exit_code, stdout, stderr, started_at, finished_at, recorded_at, stream_seq"

func (c resultsCodec) apply(ctx context.Context, tx bun.Tx, now time.Time, batch []envelope[resultItem], out *outcome) error {
	refs, err := lookupExecs(ctx, tx, batch)
	if err != nil {
		return err
	}
	execOf := func(r resultItem) string { return refs[r.RequestID].attribute(r) }
	inserted, err := insertResults(ctx, tx, c.stmts, batch, execOf, now)
	if err != nil {
		return err
	}
	var fresh []envelope[resultItem]
	for i, e := range batch {
		if inserted[i] {
			fresh = append(fresh, e)
		}
	}
	if len(fresh) == 0 {
		return nil // all redeliveries
	}
	hints, err := lookupInventoryJobs(ctx, tx, fresh)
	if err != nil {
		return err
	}
	prog := newProgress(c.stmts)
	projected := make([]messages.ProjectedResult, 0, len(fresh))
	for _, e := range fresh {
		r := e.item
		execID := execOf(r)
		if ref := refs[r.RequestID]; ref.unexpected(r) {
			// Stored, so that it can be looked at, but neither attributed
			// to the exec nor counted as the PC's answer: the Command of
			// this request_id went to another PC.
			out.errors = append(out.errors, storage.ProjectionError{
				Projection: ProjResults, Stream: messages.StreamResults, StreamSeq: e.seq, Subject: e.subject,
				Error:   fmt.Sprintf("unexpected result: request %s was sent to pc %s, not to pc %s", r.RequestID, ref.pc, r.PcID),
				Payload: e.data, RecordedAt: storage.T(now),
			})
		}
		jobID := deref(r.ManifestID)
		projected = append(projected, messages.ProjectedResult{
			RequestID: r.RequestID, PcID: r.PcID, ExecID: execID, JobID: jobID,
			ExitCode: r.ExitCode, FinishedAt: r.FinishedAt,
		})
		if execID != "" {
			prog.answer(execID, r)
		}
		if hint, ok := hints[jobID]; ok && r.ExitCode == 0 {
			if err := upsertFacts(ctx, tx, r, jobID, hint, now); err != nil {
				if !errors.Is(err, errNotJSON) {
					return err
				}
				out.errors = append(out.errors, storage.ProjectionError{
					Projection: ProjResults, Stream: messages.StreamResults, StreamSeq: e.seq, Subject: e.subject,
					Error: err.Error(), Payload: e.data, RecordedAt: storage.T(now),
				})
			}
		}
	}
	progressed, err := prog.apply(ctx, tx, now)
	if err != nil {
		return err
	}
	out.events = append(out.events, &messages.ResultsProjected{Results: projected})
	for _, p := range progressed {
		out.events = append(out.events, p)
	}
	return nil
}

// execRef is what a request_id says about the results answering it: its
// exec, and the one PC it was sent to when it was a commands.pc.<pc_id>
// Command (broadcast and group Commands are answered by many PCs).
type execRef struct{ exec, pc string }

// unexpected reports a result from a PC the request was not sent to: a PC
// that answers another PC's Command (a forged result, since the wire does
// not say who published it) must not count as that exec's answer.
func (x execRef) unexpected(r resultItem) bool { return x.exec != "" && x.pc != "" && x.pc != r.PcID }

// attribute is the exec a result counts for ("" for none).
func (x execRef) attribute(r resultItem) string {
	if x.unexpected(r) {
		return ""
	}
	return x.exec
}

// lookupExecs attributes results to execs through the request_ids each exec
// recorded before publishing (the ExecResult does not carry the exec id).
func lookupExecs(ctx context.Context, tx bun.Tx, batch []envelope[resultItem]) (map[string]execRef, error) {
	seen := map[string]bool{}
	var ids []string
	for _, e := range batch {
		if !seen[e.item.RequestID] {
			seen[e.item.RequestID] = true
			ids = append(ids, e.item.RequestID)
		}
	}
	out := make(map[string]execRef, len(ids))
	err := chunks(ids, chunkRows, func(ids []string) error {
		q := storage.NewDriverSQL(tx, len(ids))
		q.WriteString("SELECT request_id, exec_id, subject FROM exec_requests WHERE request_id IN (")
		q.List(ids)
		q.WriteByte(')')
		rows, err := tx.Tx.QueryContext(ctx, q.String(), q.Args...)
		if err != nil {
			return fmt.Errorf("attribute results to execs: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var req, exec, subject string
			if err := rows.Scan(&req, &exec, &subject); err != nil {
				return fmt.Errorf("attribute results to execs: %w", err)
			}
			pc, _ := strings.CutPrefix(subject, "commands.pc.")
			if pc == subject {
				pc = ""
			}
			out[req] = execRef{exec: exec, pc: pc}
		}
		return rows.Err()
	})
	return out, err
}

// insertResults inserts the batch and reports which envelopes produced a
// new row. A redelivered result has its (request_id, pc_id) key stored
// already, a second copy inside the batch is dropped before the insert
// (the first copy wins), and the database says which rows it took: an
// INSERT that skips stored keys, RETURNING the new ones. No read comes
// before the insert, so a second writer (another replica on PostgreSQL)
// that stores the same key meanwhile cannot make a result count twice.
func insertResults(ctx context.Context, tx bun.Tx, stmts *stmtCache, batch []envelope[resultItem], execOf func(resultItem) string, now time.Time) ([]bool, error) {
	type key struct{ req, pc string }
	first := make(map[key]int, len(batch))
	bySeq := make(map[int64]int, len(batch))
	var candidates []int
	for i, e := range batch {
		k := key{e.item.RequestID, e.item.PcID}
		if _, dup := first[k]; !dup {
			first[k] = i
			bySeq[int64(e.seq)] = i
			candidates = append(candidates, i)
		}
	}
	// In key order, as heartbeats are. A fleet answers in no particular
	// order, and every index that orders a broadcast's rows by pc_id (the
	// key, the PC's history, the exec's) would take them out of order,
	// splitting pages and dirtying many; sorted, each statement walks
	// them forward. Answers in random order (BenchmarkBroadcastProjection,
	// order=random): 10 000 projected in about 0.5 s instead of 0.65,
	// 100 000 in 18 s instead of 61. On PostgreSQL, writers that overlap
	// also take the keys' locks in one order.
	slices.SortFunc(candidates, func(a, b int) int {
		x, y := batch[a].item, batch[b].item
		return cmp.Or(strings.Compare(x.RequestID, y.RequestID), strings.Compare(x.PcID, y.PcID))
	})
	inserted := make([]bool, len(batch))
	rec := storage.T(now)
	err := chunks(candidates, chunkRows, func(part []int) error {
		q := insertResultsSQL(tx, len(part), func(q *storage.DriverSQL, n int) {
			i := part[n]
			r := batch[i].item
			q.Tuple(r.RequestID, r.PcID, nullable(execOf(r)), nullable(deref(r.ManifestID)),
				r.ExitCode, r.Stdout, r.Stderr, storage.T(r.StartedAt), storage.T(r.FinishedAt), rec, int64(batch[i].seq))
		})
		rows, err := stmts.query(ctx, tx, q, len(part) == chunkRows)
		if err != nil {
			return fmt.Errorf("insert %d results: %w", len(part), err)
		}
		defer rows.Close()
		for rows.Next() {
			var seq int64
			if err := rows.Scan(&seq); err != nil {
				return fmt.Errorf("insert %d results: %w", len(part), err)
			}
			i, ok := bySeq[seq]
			if !ok {
				return fmt.Errorf("insert results: the database returned stream_seq %d, which the batch does not hold", seq)
			}
			inserted[i] = true
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("insert %d results: %w", len(part), err)
		}
		return nil
	})
	return inserted, err
}

// insertResultsSQL is the INSERT of n results, tuple writing the i-th
// row's values (its text depends on n only).
func insertResultsSQL(db bun.IDB, n int, tuple func(q *storage.DriverSQL, i int)) *storage.DriverSQL {
	q := storage.NewDriverSQL(db, n*11)
	// On SQLite, OR IGNORE rather than ON CONFLICT DO NOTHING: both skip a
	// stored key, but under ON CONFLICT the NOT NULL checks may still
	// abort the statement, so SQLite copies every page the statement
	// touches into a statement journal first, to undo it alone. Rows out
	// of key order touch a page each: that copy was a quarter of the
	// projection's CPU for 100 000 answers in random order, which now
	// project in 11 s instead of 18. The rows' NOT NULL values are always
	// set here, so there is nothing else for OR IGNORE to skip.
	pg := db.Dialect().Name() == dialect.PG
	if pg {
		q.WriteString("INSERT INTO execution_results (" + resultColumns + ") VALUES ")
	} else {
		q.WriteString("INSERT OR IGNORE INTO execution_results (" + resultColumns + ") VALUES ")
	}
	for i := range n {
		if i > 0 {
			q.WriteByte(',')
		}
		tuple(q, i)
	}
	// Only the stream sequence comes back (unique per message, and the
	// batch holds each key once): scanning one integer per new row rather
	// than two strings keeps the common case, every row new, cheap.
	if pg {
		q.WriteString(" ON CONFLICT (request_id, pc_id) DO NOTHING")
	}
	q.WriteString(" RETURNING stream_seq")
	return q
}

// hotResultsSQL is the text of the full-chunk statements every large
// results batch runs: the insert of its rows and the answers to execs.
func hotResultsSQL(db bun.IDB) []string {
	insert := insertResultsSQL(db, chunkRows, func(q *storage.DriverSQL, _ int) { q.Tuple(make([]any, 11)...) })
	return []string{insert.String(), answersSQL(db, "", make([]answerRow, answerChunk)).String()}
}

// inventoryHint is the display snapshot of an inventory job.
type inventoryHint struct {
	display json.RawMessage
	summary json.RawMessage // nil when the hint has no summary
}

// lookupInventoryJobs returns the inventory hints of the batch's jobs that
// have one, from the jobs mirror.
func lookupInventoryJobs(ctx context.Context, tx bun.IDB, batch []envelope[resultItem]) (map[string]inventoryHint, error) {
	seen := map[string]bool{}
	var ids []string
	for _, e := range batch {
		if id := deref(e.item.ManifestID); id != "" && e.item.ExitCode == 0 && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	out := map[string]inventoryHint{}
	err := chunks(ids, chunkRows, func(ids []string) error {
		var jobs []storage.Job
		if err := tx.NewSelect().Model(&jobs).Column("id", "manifest").
			Where("has_inventory = ?", true).Where("id IN (?)", bun.List(ids)).Scan(ctx); err != nil {
			return fmt.Errorf("look up inventory jobs: %w", err)
		}
		for _, j := range jobs {
			var m struct {
				Inventory *messages.InventoryHint `json:"inventory"`
			}
			if err := json.Unmarshal(j.Manifest, &m); err != nil || m.Inventory == nil {
				// The mirror only stores manifests that decoded; a row that
				// does not is not an inventory job as far as facts go.
				continue
			}
			h := inventoryHint{display: mustJSON(nonNil(m.Inventory.Display))}
			if m.Inventory.Summary != nil {
				h.summary = mustJSON(m.Inventory.Summary)
			}
			out[j.ID] = h
		}
		return nil
	})
	return out, err
}

var errNotJSON = errors.New("inventory stdout is not one JSON value")

// upsertFacts stores a PC's latest facts for an inventory job. An older
// result (replayed, or a slow agent) never replaces newer facts.
func upsertFacts(ctx context.Context, tx bun.IDB, r resultItem, jobID string, h inventoryHint, now time.Time) error {
	facts := bytes.TrimSpace([]byte(r.Stdout))
	var buf bytes.Buffer
	if !json.Valid(facts) || json.Compact(&buf, facts) != nil {
		return fmt.Errorf("job %s, pc %s: %w", jobID, r.PcID, errNotJSON)
	}
	row := storage.InventoryFact{
		PcID: r.PcID, JobID: jobID, Facts: buf.Bytes(), Display: h.display, Summary: h.summary,
		CollectedAt: storage.T(r.FinishedAt), RecordedAt: storage.T(now),
	}
	_, err := tx.NewInsert().Model(&row).
		On("CONFLICT (pc_id, job_id) DO UPDATE").
		Set("facts = EXCLUDED.facts").
		Set("display = EXCLUDED.display").
		Set("summary = EXCLUDED.summary").
		Set("collected_at = EXCLUDED.collected_at").
		Set("recorded_at = EXCLUDED.recorded_at").
		Where("inventory_fact.collected_at <= EXCLUDED.collected_at").
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("upsert inventory facts %s/%s: %w", r.PcID, jobID, err)
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// mustJSON encodes values whose encoding cannot fail (plain structs).
func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Errorf("encode %T: %w", v, err))
	}
	return b
}
