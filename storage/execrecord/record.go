// Package execrecord keeps the exec engine's records durable in JetStream,
// so that a wiped database gets its executions back (behaviour.md §1: the
// SQL store is a rebuildable read model).
//
// An ExecResult carries no exec_id: a result finds its exec only through
// the exec_requests row of its request_id. Those rows, the expected PCs
// and the rollout waves are made by the exec engine, not projected from a
// stream, so without a durable copy a rebuild re-projects every result
// without its exec and forgets waves still due. The engine therefore
// publishes, after every change it makes to an exec, the exec's engine-owned
// state (Record) on the EXEC stream; the results projector restores the
// four tables from there before it replays RESULTS into an empty database.
//
// On the wire a record is one or more JSON parts (gzip-compressed from a
// few kilobytes on) on commands.exec.<exec_id>.<rev>.<part>, each under
// the server's payload limit (a 10 000-PC fan-out lists 10 000
// request_ids or PCs). After a new
// revision is stored the older ones are purged, so the stream holds one
// record per exec (EXEC keeps them 7 days). A revision counts only when all
// its parts are there: a crash mid-publish leaves the previous revision
// in force.
//
// The record leaves out what the projectors own (answers, counters and the
// status they derive): a rebuild replays RESULTS after the restore and
// counts every answer again from zero.
package execrecord

import (
	"bytes"
	"compress/gzip"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/uptrace/bun"

	"kanade-backend/storage"
)

// Record is the engine-owned state of one exec.
type Record struct {
	Exec     Exec               `json:"exec"`
	Requests []Request          `json:"requests,omitempty"`
	Expected []string           `json:"expected,omitempty"`
	Waves    []storage.ExecWave `json:"waves,omitempty"`
}

// Exec is the executions row as the engine wrote it. Manifest shadows the
// embedded column, which storage.Execution hides from its API JSON.
type Exec struct {
	storage.Execution
	Manifest json.RawMessage `json:"manifest,omitempty"`
}

// Request is an exec_requests row.
type Request struct {
	RequestID   string       `json:"request_id"`
	Subject     string       `json:"subject"`
	PublishedAt storage.Time `json:"published_at"`
}

// Load reads exec id's record from the store, leaving out the projectors'
// part: counters are zero, answers are not listed, and the status is the
// one the engine set (pending, or cancelled / failed when nothing of the
// exec was ever published).
func Load(ctx context.Context, db bun.IDB, execID string) (*Record, error) {
	rec := &Record{}
	ex := &rec.Exec.Execution
	if err := db.NewSelect().Model(ex).Where("exec_id = ?", execID).Scan(ctx); err != nil {
		return nil, fmt.Errorf("load exec %s: %w", execID, err)
	}
	rec.Exec.Manifest, ex.Manifest = ex.Manifest, nil
	ex.SuccessCount, ex.FailureCount = 0, 0
	if !engineFinal(ex) {
		ex.Status, ex.FinishedAt = storage.ExecPending, storage.Time{}
	}
	var reqs []storage.PublishedRequest
	if err := db.NewSelect().Model(&reqs).Where("exec_id = ?", execID).Order("request_id").Scan(ctx); err != nil {
		return nil, fmt.Errorf("load request_ids of exec %s: %w", execID, err)
	}
	rec.Requests = make([]Request, len(reqs))
	for i, r := range reqs {
		rec.Requests[i] = Request{RequestID: r.RequestID, Subject: r.Subject, PublishedAt: r.PublishedAt}
	}
	if err := db.NewSelect().Model((*storage.ExecExpected)(nil)).Column("pc_id").
		Where("exec_id = ?", execID).Order("pc_id").Scan(ctx, &rec.Expected); err != nil {
		return nil, fmt.Errorf("load expected PCs of exec %s: %w", execID, err)
	}
	if err := db.NewSelect().Model(&rec.Waves).Where("exec_id = ?", execID).Order("wave_index").Scan(ctx); err != nil {
		return nil, fmt.Errorf("load waves of exec %s: %w", execID, err)
	}
	return rec, nil
}

// New is the record of an exec the engine has just written, built from the
// rows it wrote instead of reading them back: what Load would return for
// them (lists in Load's order, the projectors' part left out).
func New(ex *storage.Execution, reqs []storage.PublishedRequest, expected []string, waves []storage.ExecWave) *Record {
	rec := &Record{Exec: Exec{Execution: *ex, Manifest: ex.Manifest}}
	e := &rec.Exec.Execution
	e.Manifest, e.SuccessCount, e.FailureCount = nil, 0, 0
	if !engineFinal(e) {
		e.Status, e.FinishedAt = storage.ExecPending, storage.Time{}
	}
	rec.Requests = make([]Request, len(reqs))
	for i, r := range reqs {
		rec.Requests[i] = Request{RequestID: r.RequestID, Subject: r.Subject, PublishedAt: r.PublishedAt}
	}
	slices.SortFunc(rec.Requests, func(a, b Request) int { return strings.Compare(a.RequestID, b.RequestID) })
	rec.Expected = slices.Clone(expected)
	slices.Sort(rec.Expected)
	rec.Waves = slices.Clone(waves)
	slices.SortFunc(rec.Waves, func(a, b storage.ExecWave) int { return a.WaveIndex - b.WaveIndex })
	return rec
}

// engineFinal reports whether the exec's status was set by the engine and
// no result can change it: cancelled (before any wave went out, or its
// rollout aborted), failed because not a single Command could be
// published, or held at a rollout gate (until the engine itself releases
// it: a rebuild must not let the projector finish a held exec).
func engineFinal(ex *storage.Execution) bool {
	return ex.Status == storage.ExecCancelled || ex.Status == storage.ExecHeld ||
		ex.TargetCount == 0 && ex.Status == storage.ExecFailed
}

// Restore writes rec into the store, replacing whatever the store holds
// for its exec (a later revision wins).
func Restore(ctx context.Context, tx bun.IDB, rec *Record) error {
	id := rec.Exec.ExecID
	for _, model := range []any{(*storage.PublishedRequest)(nil), (*storage.ExecExpected)(nil), (*storage.ExecWave)(nil), (*storage.Execution)(nil)} {
		if _, err := tx.NewDelete().Model(model).Where("exec_id = ?", id).Exec(ctx); err != nil {
			return fmt.Errorf("restore exec %s: clear: %w", id, err)
		}
	}
	ex := rec.Exec.Execution
	ex.Manifest = rec.Exec.Manifest
	if _, err := tx.NewInsert().Model(&ex).Exec(ctx); err != nil {
		return fmt.Errorf("restore exec %s: %w", id, err)
	}
	reqs := make([]storage.PublishedRequest, len(rec.Requests))
	for i, r := range rec.Requests {
		reqs[i] = storage.PublishedRequest{RequestID: r.RequestID, ExecID: id, Subject: r.Subject, PublishedAt: r.PublishedAt}
	}
	exp := make([]storage.ExecExpected, len(rec.Expected))
	for i, pc := range rec.Expected {
		exp[i] = storage.ExecExpected{ExecID: id, PcID: pc}
	}
	waves := make([]storage.ExecWave, len(rec.Waves))
	for i, w := range rec.Waves {
		w.ExecID = id
		waves[i] = w
	}
	// A request_id belongs to one exec; should two records claim it (they
	// cannot, short of a uuid collision) the first one keeps it.
	if err := storage.InsertChunked(ctx, tx, reqs, true); err != nil {
		return fmt.Errorf("restore request_ids of exec %s: %w", id, err)
	}
	if err := storage.InsertChunked(ctx, tx, exp, false); err != nil {
		return fmt.Errorf("restore expected PCs of exec %s: %w", id, err)
	}
	if err := storage.InsertChunked(ctx, tx, waves, false); err != nil {
		return fmt.Errorf("restore waves of exec %s: %w", id, err)
	}
	return nil
}

// Size estimates of one list entry in a part's JSON, used to cut parts
// without encoding twice: the quotes, the separators and, for requests,
// the field names and a timestamp.
const (
	requestOverhead  = 90
	expectedOverhead = 3
	execOverhead     = 4096
)

// split cuts rec into parts whose JSON stays under about maxBytes each.
// Part 0 carries the exec row and the waves, every part some of the lists;
// merging the parts in order gives rec back.
func split(rec *Record, maxBytes int) []*Record {
	first := &Record{Exec: rec.Exec, Waves: rec.Waves}
	size := execOverhead + len(rec.Exec.Plan) + len(rec.Exec.Manifest) + len(rec.Exec.Subjects) + 200*len(rec.Waves)
	parts := []*Record{first}
	cur := first
	room := func(n int) {
		if size+n > maxBytes && (len(cur.Requests) > 0 || len(cur.Expected) > 0) {
			cur = &Record{}
			parts = append(parts, cur)
			size = execOverhead
		}
		size += n
	}
	for _, r := range rec.Requests {
		room(len(r.RequestID) + len(r.Subject) + requestOverhead)
		cur.Requests = append(cur.Requests, r)
	}
	for _, pc := range rec.Expected {
		room(len(pc) + expectedOverhead)
		cur.Expected = append(cur.Expected, pc)
	}
	return parts
}

// merge appends part (a later part of the same revision) to rec.
func (rec *Record) merge(part *Record) {
	rec.Requests = append(rec.Requests, part.Requests...)
	rec.Expected = append(rec.Expected, part.Expected...)
}

// compressAbove is the JSON size from which a part is gzip-compressed. A
// small exec's record (one PC: about a kilobyte) barely shrinks, and
// compressing it cost more CPU than the rest of recording it; a part
// starts with the gzip magic bytes or with '{', so a restore reads both.
const compressAbove = 4 << 10

// gzipWriters reuses compressors: a new gzip.Writer allocates its whole
// deflate state (hundreds of KiB).
var gzipWriters = sync.Pool{New: func() any { return gzip.NewWriter(io.Discard) }}

// encodePart returns a part's payload and whether it is compressed.
func encodePart(part *Record) ([]byte, bool, error) {
	raw, err := json.Marshal(part)
	if err != nil {
		return nil, false, fmt.Errorf("encode exec record: %w", err)
	}
	if len(raw) < compressAbove {
		return raw, false, nil
	}
	var buf bytes.Buffer
	zw := gzipWriters.Get().(*gzip.Writer)
	defer gzipWriters.Put(zw)
	zw.Reset(&buf)
	if _, err := zw.Write(raw); err != nil {
		return nil, false, fmt.Errorf("compress exec record: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, false, fmt.Errorf("compress exec record: %w", err)
	}
	return buf.Bytes(), true, nil
}

// maxDecoded bounds what one part may inflate to, so a corrupt or hostile
// message cannot exhaust memory during a restore.
const maxDecoded = 64 << 20

// gzipMagic starts every gzip stream.
var gzipMagic = []byte{0x1f, 0x8b}

func decodePart(data []byte) (*Record, error) {
	raw := data
	if bytes.HasPrefix(data, gzipMagic) {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("exec record part is not gzip: %w", err)
		}
		if raw, err = io.ReadAll(io.LimitReader(zr, maxDecoded+1)); err != nil {
			return nil, fmt.Errorf("inflate exec record part: %w", err)
		}
		if len(raw) > maxDecoded {
			return nil, fmt.Errorf("exec record part inflates beyond %d bytes", maxDecoded)
		}
	}
	var part Record
	if err := json.Unmarshal(raw, &part); err != nil {
		return nil, fmt.Errorf("decode exec record part: %w", err)
	}
	return &part, nil
}

// IsNotFound reports whether err says the exec does not exist (Load).
func IsNotFound(err error) bool { return errors.Is(err, sql.ErrNoRows) }
