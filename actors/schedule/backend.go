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

	"kanade-backend/actors/exec"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker"
)

// Backend implements Reader, Writer and Source over the SQL read model and
// KV schedules: the fleet view's initial state, the dedup seeds and the
// last fires come from SQL, schedules from KV (their source of truth).
type Backend struct {
	Store *storage.Store
	JS    jetstream.JetStream

	handles     broker.KVHandles
	handlesOnce sync.Once
}

var (
	_ Reader = (*Backend)(nil)
	_ Writer = (*Backend)(nil)
)

// NewBackend returns a Backend over st and js.
func NewBackend(st *storage.Store, js jetstream.JetStream) *Backend {
	return &Backend{Store: st, JS: js}
}

// bucket opens a KV bucket once and keeps the handle (broker.KVHandles):
// ticks read the jobs bucket constantly.
func (b *Backend) bucket(ctx context.Context, name string) (jetstream.KeyValue, error) {
	if b.JS == nil {
		return nil, messages.Unavailablef("NATS is not connected")
	}
	b.handlesOnce.Do(func() { b.handles.JS = b.JS })
	kv, err := b.handles.Open(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("open kv bucket %s: %w", name, err)
	}
	return kv, nil
}

// Schedules opens the schedules bucket.
func (b *Backend) Schedules(ctx context.Context) (jetstream.KeyValue, error) {
	return b.bucket(ctx, messages.BucketSchedules)
}

// LoadFleet reads the fleet view's initial state: the jobs mirror, every
// agent's last heartbeat, every PC's mirrored groups and the
// decommissioned PCs, in five plain scans (10 000 agents take a few
// milliseconds).
func (b *Backend) LoadFleet(ctx context.Context) (*FleetSnapshot, error) {
	s := &FleetSnapshot{Agents: map[string]time.Time{}, Groups: map[string]SnapshotGroups{}}
	var jobs []storage.Job
	if err := b.Store.R.NewSelect().Model(&jobs).Column("id", "manifest", "kv_revision").Scan(ctx); err != nil {
		return nil, fmt.Errorf("load the jobs mirror: %w", err)
	}
	for _, j := range jobs {
		s.Jobs = append(s.Jobs, SnapshotJob{ID: j.ID, Manifest: j.Manifest, Rev: j.KVRevision})
	}
	var agents []storage.Agent
	if err := b.Store.R.NewSelect().Model(&agents).Column("pc_id", "last_heartbeat").Scan(ctx); err != nil {
		return nil, fmt.Errorf("load agents: %w", err)
	}
	for _, a := range agents {
		s.Agents[a.PcID] = a.LastHeartbeat.Time
	}
	var revs []storage.GroupRevision
	if err := b.Store.R.NewSelect().Model(&revs).Column("pc_id", "kv_revision").Scan(ctx); err != nil {
		return nil, fmt.Errorf("load agent_groups revisions: %w", err)
	}
	for _, r := range revs {
		s.Groups[r.PcID] = SnapshotGroups{Rev: r.KVRevision}
	}
	var members []storage.GroupMember
	if err := b.Store.R.NewSelect().Model(&members).Scan(ctx); err != nil {
		return nil, fmt.Errorf("load group members: %w", err)
	}
	for _, m := range members {
		g := s.Groups[m.PcID]
		g.Groups = append(g.Groups, m.GroupName)
		s.Groups[m.PcID] = g
	}
	var gone []storage.DecommissionedPC
	if err := b.Store.R.NewSelect().Model(&gone).Column("pc_id", "last_heartbeat").Scan(ctx); err != nil {
		return nil, fmt.Errorf("load decommissioned PCs: %w", err)
	}
	if len(gone) > 0 {
		s.Decommissioned = make(map[string]time.Time, len(gone))
	}
	for _, d := range gone {
		var last time.Time
		if d.LastHeartbeat != nil {
			last = d.LastHeartbeat.Time
		}
		s.Decommissioned[d.PcID] = last
	}
	return s, nil
}

// seedChunk bounds the ids of one IN (...) list of the seed queries.
const seedChunk = 500

// Seeds loads the dedup state of many schedules with one grouped query
// per chunk of jobs (the covering index execution_results_success answers
// it without touching the table) and one per chunk of schedules (index
// executions_schedule): the seed of 10 000 schedules at start costs a few
// queries, not two per schedule.
func (b *Backend) Seeds(ctx context.Context, keys []SeedKey, now time.Time) (*Seeds, error) {
	out := &Seeds{Latest: map[string]map[string]time.Time{}, InFlight: map[string][]InFlightPC{}}
	jobOf := make(map[string]string, len(keys))
	var jobs, schedules []string
	for _, k := range keys {
		if _, ok := out.Latest[k.JobID]; !ok {
			out.Latest[k.JobID] = map[string]time.Time{}
			jobs = append(jobs, k.JobID)
		}
		if _, ok := jobOf[k.ScheduleID]; !ok {
			schedules = append(schedules, k.ScheduleID)
		}
		jobOf[k.ScheduleID] = k.JobID
	}
	for i := 0; i < len(jobs); i += seedChunk {
		var rows []struct {
			JobID string       `bun:"job_id"`
			PcID  string       `bun:"pc_id"`
			Last  storage.Time `bun:"last"`
		}
		if err := seedQuery(b.Store.R, jobs[i:min(i+seedChunk, len(jobs))]).Scan(ctx, &rows); err != nil {
			return nil, fmt.Errorf("latest successes of %d jobs: %w", min(seedChunk, len(jobs)-i), err)
		}
		for _, r := range rows {
			out.Latest[r.JobID][r.PcID] = r.Last.Time
		}
	}
	for i := 0; i < len(schedules); i += seedChunk {
		var rows []struct {
			ScheduleID  string       `bun:"schedule_id"`
			JobID       string       `bun:"job_id"`
			ExecID      string       `bun:"exec_id"`
			PcID        string       `bun:"pc_id"`
			CreatedAt   storage.Time `bun:"created_at"`
			TimeoutSecs uint64       `bun:"timeout_secs"`
			JitterSecs  *uint64      `bun:"jitter_secs"`
		}
		if err := inFlightQuery(b.Store.R, schedules[i:min(i+seedChunk, len(schedules))], now).Scan(ctx, &rows); err != nil {
			return nil, fmt.Errorf("in-flight PCs of %d schedules: %w", min(seedChunk, len(schedules)-i), err)
		}
		for _, r := range rows {
			if jobOf[r.ScheduleID] != r.JobID {
				continue // a fire of the schedule's earlier job
			}
			window := time.Duration(r.TimeoutSecs)*time.Second + InFlightMargin
			if r.JitterSecs != nil {
				window += time.Duration(*r.JitterSecs) * time.Second
			}
			if until := r.CreatedAt.Add(window); until.After(now) {
				out.InFlight[r.ScheduleID] = append(out.InFlight[r.ScheduleID],
					InFlightPC{PC: r.PcID, ExecID: r.ExecID, Since: r.CreatedAt.Time, Until: until})
			}
		}
	}
	return out, nil
}

// Settle is exec.Settle on the scheduler's store.
func (b *Backend) Settle(ctx context.Context, req *messages.ExecRequest, reason string, now time.Time) (exec.Settlement, error) {
	return exec.Settle(ctx, b.Store, req, reason, now)
}

// inFlightLookback bounds the executions InFlight looks at. A job timeout
// longer than this is unheard of; the bound keeps the query on the index
// range of recent fires.
const inFlightLookback = 7 * 24 * time.Hour

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

// seedQuery is the once_per_pc seed: the newest success per PC of some
// jobs, answered by the covering index execution_results_success.
func seedQuery(db bun.IDB, jobIDs []string) *bun.SelectQuery {
	return db.NewSelect().TableExpr("execution_results").
		ColumnExpr("job_id, pc_id").ColumnExpr("MAX(finished_at) AS last").
		Where("job_id IN (?)", bun.List(jobIDs)).Where("exit_code = 0").
		GroupExpr("job_id, pc_id")
}

// inFlightQuery lists the PCs recent fires of some schedules expect and
// that have not answered (index executions_schedule).
func inFlightQuery(db bun.IDB, scheduleIDs []string, now time.Time) *bun.SelectQuery {
	return db.NewSelect().TableExpr("executions AS e").
		ColumnExpr("e.schedule_id, e.job_id, e.exec_id, x.pc_id, e.created_at, e.timeout_secs, e.jitter_secs").
		Join("JOIN exec_expected AS x ON x.exec_id = e.exec_id").
		Where("e.schedule_id IN (?)", bun.List(scheduleIDs)).
		Where("e.created_at >= ?", storage.T(now.Add(-inFlightLookback))).
		Where("e.status IN (?)", bun.List([]string{storage.ExecPending, storage.ExecRunning})).
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
