package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/uptrace/bun"

	"kanade-backend/messages"
	"kanade-backend/storage"
)

// Backend implements Reader and Writer over the SQL read model and the
// KV buckets: jobs and schedules are read from KV (the source of truth, so
// that an edit applies at the very next tick rather than when a mirror
// catches up), targets, results and executions from SQL.
type Backend struct {
	Store *storage.Store
	JS    jetstream.JetStream

	mu      sync.Mutex
	buckets map[string]jetstream.KeyValue
}

var (
	_ Reader = (*Backend)(nil)
	_ Writer = (*Backend)(nil)
)

// NewBackend returns a Backend over st and js.
func NewBackend(st *storage.Store, js jetstream.JetStream) *Backend {
	return &Backend{Store: st, JS: js}
}

// bucket opens a KV bucket once and keeps the handle: opening costs a
// round trip to the server, and ticks read the jobs bucket constantly.
// A failure is not cached, so a bucket that appears later is found.
func (b *Backend) bucket(ctx context.Context, name string) (jetstream.KeyValue, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if kv, ok := b.buckets[name]; ok {
		return kv, nil
	}
	if b.JS == nil {
		return nil, messages.Unavailablef("NATS is not connected")
	}
	kv, err := b.JS.KeyValue(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("open kv bucket %s: %w", name, err)
	}
	if b.buckets == nil {
		b.buckets = map[string]jetstream.KeyValue{}
	}
	b.buckets[name] = kv
	return kv, nil
}

// Schedules opens the schedules bucket.
func (b *Backend) Schedules(ctx context.Context) (jetstream.KeyValue, error) {
	return b.bucket(ctx, messages.BucketSchedules)
}

// Job reads the job from KV jobs.
func (b *Backend) Job(ctx context.Context, jobID string) (messages.Manifest, error) {
	kv, err := b.bucket(ctx, messages.BucketJobs)
	if err != nil {
		return messages.Manifest{}, err
	}
	e, err := kv.Get(ctx, jobID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return messages.Manifest{}, messages.NotFoundf("job '%s' not found in catalog", jobID)
	}
	if err != nil {
		return messages.Manifest{}, fmt.Errorf("read job %s: %w", jobID, err)
	}
	var m messages.Manifest
	if err := messages.DecodeJSON(e.Value(), &m); err != nil {
		return messages.Manifest{}, fmt.Errorf("decode job %s: %w", jobID, err)
	}
	return m, nil
}

// ResolveTargets is storage.ResolveTargetPCs on the read pool.
func (b *Backend) ResolveTargets(ctx context.Context, t messages.Target, now time.Time) ([]string, error) {
	return storage.ResolveTargetPCs(ctx, b.Store.R, t, now)
}

// LatestSuccesses runs one grouped query that the covering index
// execution_results_success (job_id, exit_code, pc_id, finished_at)
// answers without touching the table.
func (b *Backend) LatestSuccesses(ctx context.Context, jobID string) (map[string]time.Time, error) {
	var rows []struct {
		PcID string       `bun:"pc_id"`
		Last storage.Time `bun:"last"`
	}
	err := seedQuery(b.Store.R, jobID).Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("latest successes of job %s: %w", jobID, err)
	}
	out := make(map[string]time.Time, len(rows))
	for _, r := range rows {
		out[r.PcID] = r.Last.Time
	}
	return out, nil
}

// inFlightLookback bounds the executions InFlight looks at. A job timeout
// longer than this is unheard of; the bound keeps the query on the index
// range of recent fires.
const inFlightLookback = 7 * 24 * time.Hour

// InFlight finds the PCs that recent fires of the schedule expect and that
// have not answered, using the exec engine's records (executions,
// exec_expected) and the projected results.
func (b *Backend) InFlight(ctx context.Context, scheduleID, jobID string, now time.Time) ([]InFlightPC, error) {
	var rows []struct {
		ExecID      string       `bun:"exec_id"`
		PcID        string       `bun:"pc_id"`
		CreatedAt   storage.Time `bun:"created_at"`
		TimeoutSecs uint64       `bun:"timeout_secs"`
		JitterSecs  *uint64      `bun:"jitter_secs"`
	}
	err := inFlightQuery(b.Store.R, scheduleID, jobID, now).Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("in-flight PCs of schedule %s: %w", scheduleID, err)
	}
	var out []InFlightPC
	for _, r := range rows {
		window := time.Duration(r.TimeoutSecs)*time.Second + InFlightMargin
		if r.JitterSecs != nil {
			window += time.Duration(*r.JitterSecs) * time.Second
		}
		until := r.CreatedAt.Add(window)
		if until.After(now) {
			out = append(out, InFlightPC{PC: r.PcID, ExecID: r.ExecID, Since: r.CreatedAt.Time, Until: until})
		}
	}
	return out, nil
}

// LastFires returns the newest exec of every schedule that ever fired, in
// one grouped query (executions_schedule index), so that catch-up after
// downtime costs one query for the whole fleet of schedules.
func (b *Backend) LastFires(ctx context.Context) (map[string]time.Time, error) {
	var rows []struct {
		ScheduleID string       `bun:"schedule_id"`
		Last       storage.Time `bun:"last"`
	}
	err := lastFiresQuery(b.Store.R).Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("last fire of each schedule: %w", err)
	}
	out := make(map[string]time.Time, len(rows))
	for _, r := range rows {
		out[r.ScheduleID] = r.Last.Time
	}
	return out, nil
}

// seedQuery is the once_per_pc seed: the newest success per PC of one job,
// answered by the covering index execution_results_success.
func seedQuery(db bun.IDB, jobID string) *bun.SelectQuery {
	return db.NewSelect().TableExpr("execution_results").
		ColumnExpr("pc_id").ColumnExpr("MAX(finished_at) AS last").
		Where("job_id = ?", jobID).Where("exit_code = 0").
		GroupExpr("pc_id")
}

// inFlightQuery lists the PCs recent fires of a schedule for a job expect
// and that have not answered (index executions_schedule).
func inFlightQuery(db bun.IDB, scheduleID, jobID string, now time.Time) *bun.SelectQuery {
	return db.NewSelect().TableExpr("executions AS e").
		ColumnExpr("e.exec_id, x.pc_id, e.created_at, e.timeout_secs, e.jitter_secs").
		Join("JOIN exec_expected AS x ON x.exec_id = e.exec_id").
		Where("e.schedule_id = ?", scheduleID).Where("e.job_id = ?", jobID).
		Where("e.created_at >= ?", storage.T(now.Add(-inFlightLookback))).
		Where("e.status IN (?)", bun.In([]string{storage.ExecPending, storage.ExecRunning})).
		Where("NOT EXISTS (SELECT 1 FROM execution_results AS r WHERE r.exec_id = e.exec_id AND r.pc_id = x.pc_id)")
}

// lastFiresQuery is the newest fire of every schedule (index
// executions_schedule).
func lastFiresQuery(db bun.IDB) *bun.SelectQuery {
	return db.NewSelect().TableExpr("executions").
		ColumnExpr("schedule_id").ColumnExpr("MAX(created_at) AS last").
		Where("schedule_id IS NOT NULL").GroupExpr("schedule_id")
}

// Disable compare-and-sets enabled=false on the schedule's KV entry.
// Upstream wrote the whole schedule back with a blind put, which could
// erase an operator's edit made in between (behaviour.md §5, defect 14).
func (b *Backend) Disable(ctx context.Context, s messages.Schedule, rev uint64) (uint64, *Versioned, error) {
	kv, err := b.Schedules(ctx)
	if err != nil {
		return 0, nil, err
	}
	s.Enabled = false
	val, err := json.Marshal(s)
	if err != nil {
		return 0, nil, fmt.Errorf("encode schedule %s: %w", s.ID, err)
	}
	newRev, err := kv.Update(ctx, s.ID, val, rev)
	if err == nil {
		return newRev, nil, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return 0, nil, fmt.Errorf("disable schedule %s at revision %d: %w", s.ID, rev, err)
	}
	// Someone wrote the schedule since this actor last saw it: return what
	// is there now, so that the caller decides again on the new version.
	cur, gerr := kv.Get(ctx, s.ID)
	if errors.Is(gerr, jetstream.ErrKeyNotFound) || errors.Is(gerr, jetstream.ErrKeyDeleted) {
		return 0, nil, messages.Conflictf("schedule %s was deleted since revision %d", s.ID, rev)
	}
	if gerr != nil {
		return 0, nil, fmt.Errorf("re-read schedule %s after a revision conflict: %w", s.ID, gerr)
	}
	v := DecodeVersioned(cur.Value(), cur.Revision())
	return 0, &v, messages.Conflictf("schedule %s changed since revision %d (now %d)", s.ID, rev, cur.Revision())
}

// DecodeVersioned reads a KV schedules value. A value that does not even
// decode is returned with Err set and whatever could be read, so that the
// schedule stays visible with its reason.
func DecodeVersioned(val []byte, rev uint64) Versioned {
	var s messages.Schedule
	if err := messages.DecodeJSON(val, &s); err != nil {
		return Versioned{Rev: rev, Err: err}
	}
	expr, err := s.ValidateExpr()
	return Versioned{Def: s, Rev: rev, Err: err, expr: expr}
}
