// Package schedules serves the schedules API (api.md §3): list, upsert
// and delete schedules in KV, and, beyond upstream, each schedule's live
// status, a preview of any cron expression, and a manual run. Definitions
// are read from and written to KV schedules, the source of truth; status
// and runs are asked of the schedule supervisor, which owns the running
// schedules.
package schedules

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/uptrace/bun"

	"kanade-backend/actors/clock"
	"kanade-backend/actors/projector/mirror"
	"kanade-backend/actors/schedule"
	"kanade-backend/http/httpx"
	"kanade-backend/http/internal/opaudit"
	"kanade-backend/http/server"
	"kanade-backend/http/targets"
	"kanade-backend/messages"
	"kanade-backend/messages/cron"
	"kanade-backend/storage"
	"kanade-backend/storage/broker"
)

// Scheduler is what the routes ask of the running scheduler
// (schedule.Client).
type Scheduler interface {
	Status(ctx context.Context, id string) (schedule.Status, error)
	Run(ctx context.Context, id string) (schedule.Tick, error)
}

var _ Scheduler = (*schedule.Client)(nil)

// Auditor publishes audit events (actors/audit.Publisher).
type Auditor interface {
	Publish(ctx context.Context, ev messages.AuditEvent) error
}

// Writer runs a write transaction (storage.Store).
type Writer interface {
	InTx(ctx context.Context, fn func(ctx context.Context, tx bun.Tx) error) error
}

// Deps is what the routes need.
type Deps struct {
	JS jetstream.JetStream
	// DB is the store's read pool, for the target warning of an upsert;
	// nil leaves the warning out.
	DB bun.IDB
	// Writer writes the schedules mirror through on every change, so that
	// the list (served from the mirror when DB is set) reads its own
	// writes; nil leaves the mirror to the projector's watch.
	Writer    Writer
	Audit     Auditor
	Scheduler Scheduler
	Clock     clock.Clock
	Logger    *slog.Logger
}

// PreviewMax bounds n of GET /api/schedules/preview.
const PreviewMax = 100

// reservedID cannot name a schedule: GET /api/schedules/preview is the
// preview route, so such a schedule's status could never be read.
const reservedID = "preview"

// Register adds the routes. The literal /api/schedules/preview is more
// specific than /api/schedules/{id}, so ServeMux sends it to the preview
// whatever the registration order.
func Register(r *server.Router, d Deps) {
	if d.Clock == nil {
		d.Clock = clock.Real{}
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	h := &handlers{Deps: d, handles: broker.NewKVHandles(d.JS)}
	r.API("GET /api/schedules", h.list)
	r.API("POST /api/schedules", h.upsert)
	r.API("GET /api/schedules/preview", h.preview)
	r.API("GET /api/schedules/{id}", h.status)
	r.API("DELETE /api/schedules/{id}", h.delete)
	r.API("POST /api/schedules/{id}/run", h.run)
}

type handlers struct {
	Deps

	handles *broker.KVHandles
}

// kv opens a bucket once (broker.KVHandles); failures are not cached.
func (h *handlers) kv(ctx context.Context, name string) (jetstream.KeyValue, error) {
	if h.JS == nil {
		return nil, messages.Unavailablef("NATS is not connected")
	}
	kv, err := h.handles.Open(ctx, name)
	if err != nil {
		return nil, messages.Unavailablef("KV bucket %s is unavailable: %v", name, err)
	}
	return kv, nil
}

// list returns every schedule sorted by id; an empty bucket is [] (upstream
// answered 500, defect 15). Paging applies only when limit or offset is
// given: the upstream CLI and the dashboard expect the whole list.
func (h *handlers) list(w http.ResponseWriter, r *http.Request) error {
	var out []messages.Schedule
	var err error
	if h.DB != nil {
		out, err = h.fromMirror(r.Context())
	} else {
		var kv jetstream.KeyValue
		if kv, err = h.kv(r.Context(), messages.BucketSchedules); err == nil {
			out, err = readAll(r.Context(), kv, h.Logger)
		}
	}
	if err != nil {
		return err
	}
	total := len(out)
	q := r.URL.Query()
	if q.Has("limit") || q.Has("offset") {
		p, err := httpx.ParsePage(r)
		if err != nil {
			return err
		}
		out = out[min(p.Offset, len(out)):]
		out = out[:min(p.Limit, len(out))]
	}
	httpx.WriteList(w, out, total)
	return nil
}

// fromMirror reads every schedule from the schedules mirror, sorted by id:
// the list does not need NATS, so it answers while NATS is away.
func (h *handlers) fromMirror(ctx context.Context) ([]messages.Schedule, error) {
	var rows []storage.ScheduleRow
	if err := h.DB.NewSelect().Model(&rows).Column("id", "definition").Order("id").Scan(ctx); err != nil {
		return nil, fmt.Errorf("read schedules mirror: %w", err)
	}
	out := make([]messages.Schedule, 0, len(rows))
	for _, row := range rows {
		var s messages.Schedule
		if err := messages.DecodeJSON(row.Definition, &s); err != nil {
			h.Logger.Warn("schedules mirror holds a value that is not a schedule", "key", row.ID, "err", err)
			continue
		}
		out = append(out, s)
	}
	return out, nil
}

// mirror writes a change through to the schedules mirror; a failure only
// delays it until the projector's watch applies the same revision.
func (h *handlers) mirror(ctx context.Context, id string, fn func(ctx context.Context, tx bun.Tx) error) {
	if h.Writer == nil {
		return
	}
	if err := h.Writer.InTx(ctx, fn); err != nil {
		h.Logger.Error("schedules mirror not updated; the projector's watch will", "schedule_id", id, "err", err)
	}
}

// readAll reads the current value of every key through one watch (no
// per-key round trips) and decodes the schedules; a value that does not
// decode is logged and left out.
func readAll(ctx context.Context, kv jetstream.KeyValue, log *slog.Logger) ([]messages.Schedule, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	kw, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, messages.Unavailablef("read KV schedules: %v", err)
	}
	defer func() { _ = kw.Stop() }()
	out := []messages.Schedule{}
	for {
		select {
		case <-ctx.Done():
			return nil, messages.Unavailablef("read KV schedules: %v", ctx.Err())
		case e, ok := <-kw.Updates():
			if !ok {
				return nil, messages.Unavailablef("read KV schedules: the watch closed")
			}
			if e == nil {
				slices.SortFunc(out, func(a, b messages.Schedule) int { return strings.Compare(a.ID, b.ID) })
				return out, nil
			}
			var s messages.Schedule
			if err := messages.DecodeJSON(e.Value(), &s); err != nil {
				log.Warn("KV schedules holds a value that is not a schedule", "key", e.Key(), "err", err)
				continue
			}
			out = append(out, s)
		}
	}
}

// upsertResponse is upstream's answer to POST /api/schedules, plus (beyond
// upstream, omitted when there is nothing to say) a warning about the
// target: a schedule may target a group that has no member yet, since
// groups fill as PCs are set up, but the operator should know.
type upsertResponse struct {
	ID      string `json:"id"`
	Cron    string `json:"cron"`
	JobID   string `json:"job_id"`
	Enabled bool   `json:"enabled"`
	Warning string `json:"warning,omitempty"`
}

func badSchedule(err error) error {
	return messages.Invalidf("invalid schedule: %v", err)
}

func (h *handlers) upsert(w http.ResponseWriter, r *http.Request) error {
	body, err := httpx.ReadBody(w, r, httpx.MaxBodyBytes)
	if err != nil {
		return err
	}
	var s messages.Schedule
	if httpx.IsYAML(r) {
		s, err = messages.ParseScheduleYAML(body)
	} else {
		s, err = messages.ParseScheduleJSON(body)
	}
	if err != nil {
		return badSchedule(err)
	}
	if s.ID == reservedID {
		return badSchedule(fmt.Errorf("schedule id %q is reserved (GET /api/schedules/preview)", reservedID))
	}
	// Parse accepted the expression; one whose every instant is past (a
	// year field such as 1970) would be stored and never fire.
	expr, err := s.CronExpr()
	if err != nil {
		return badSchedule(err)
	}
	if err := expr.CheckFuture(h.Clock.Now()); err != nil {
		return badSchedule(err)
	}
	jobs, err := h.kv(r.Context(), messages.BucketJobs)
	if err != nil {
		return err
	}
	if _, err := jobs.Get(r.Context(), s.JobID); errors.Is(err, jetstream.ErrKeyNotFound) {
		return badSchedule(fmt.Errorf("job '%s' not found in catalog", s.JobID))
	} else if err != nil {
		return fmt.Errorf("check job %s: %w", s.JobID, err)
	}
	// Stored in canonical form: defaults explicit (mode, enabled), the
	// wire's field order, durations as written.
	val, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode schedule %s: %w", s.ID, err)
	}
	kv, err := h.kv(r.Context(), messages.BucketSchedules)
	if err != nil {
		return err
	}
	rev, err := kv.Put(r.Context(), s.ID, val)
	if err != nil {
		return messages.Unavailablef("write schedule %s: %v", s.ID, err)
	}
	h.mirror(r.Context(), s.ID, func(ctx context.Context, tx bun.Tx) error {
		return mirror.Schedule(ctx, tx, s.ID, val, rev, h.Clock.Now())
	})
	h.audit(r, messages.ActionScheduleUpsert, s.ID, map[string]any{
		"cron": s.Cron, "job_id": s.JobID, "mode": string(s.EffectiveMode()), "enabled": s.Enabled, "revision": rev,
	})
	httpx.WriteJSON(w, http.StatusOK, upsertResponse{ID: s.ID, Cron: s.Cron, JobID: s.JobID, Enabled: s.Enabled,
		Warning: h.targetWarning(r.Context(), s)})
	return nil
}

// targetWarning previews the schedule's target. The schedule is stored
// already, so a failing preview only loses the warning (logged).
func (h *handlers) targetWarning(ctx context.Context, s messages.Schedule) string {
	if h.DB == nil {
		return ""
	}
	p, err := targets.Resolve(ctx, h.DB, targets.ReachedTarget(s.FanoutPlan), h.Clock.Now())
	if err != nil {
		h.Logger.Warn("preview schedule target", "schedule_id", s.ID, "err", err)
		return ""
	}
	return p.Warning()
}

// audit records the operator event of a change already stored.
func (h *handlers) audit(r *http.Request, action, target string, payload map[string]any) {
	opaudit.Record(r.Context(), h.Audit, h.Logger, action, target, payload)
}

func pathID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if err := messages.ValidateToken("schedule id", id); err != nil {
		return "", messages.Invalidf("%v", err)
	}
	return id, nil
}

// delete is idempotent: deleting a schedule that does not exist is 204 too.
func (h *handlers) delete(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	kv, err := h.kv(r.Context(), messages.BucketSchedules)
	if err != nil {
		return err
	}
	existed := true
	var prev uint64
	if e, err := kv.Get(r.Context(), id); errors.Is(err, jetstream.ErrKeyNotFound) {
		existed = false
	} else if err != nil {
		return messages.Unavailablef("read schedule %s: %v", id, err)
	} else {
		prev = e.Revision()
	}
	if existed {
		if err := kv.Delete(r.Context(), id); err != nil {
			return messages.Unavailablef("delete schedule %s: %v", id, err)
		}
		// As for jobs: the delete marker is newer than prev, so a row at
		// prev or older goes and a concurrent newer put stays.
		h.mirror(r.Context(), id, func(ctx context.Context, tx bun.Tx) error {
			return mirror.DeleteSchedule(ctx, tx, id, prev+1)
		})
	}
	h.audit(r, messages.ActionScheduleDelete, id, map[string]any{"existed": existed})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// statusResponse is GET /api/schedules/{id}: the definition, and the
// scheduler's view of it.
type statusResponse struct {
	Schedule messages.Schedule `json:"schedule"`
	Status   any               `json:"status"`
}

// StateLoading is shown for a schedule that is in KV but not (yet) known
// to the scheduler: just written, or the scheduler is starting.
const StateLoading = "loading"

func (h *handlers) status(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	if h.Scheduler != nil {
		st, err := h.Scheduler.Status(r.Context(), id)
		if err == nil {
			httpx.WriteJSON(w, http.StatusOK, statusResponse{Schedule: st.Schedule, Status: st})
			return nil
		}
		if !errors.Is(err, messages.ErrNotFound) && !errors.Is(err, messages.ErrUnavailable) {
			return err
		}
	}
	// The scheduler does not know it (yet): answer from KV.
	kv, err := h.kv(r.Context(), messages.BucketSchedules)
	if err != nil {
		return err
	}
	e, err := kv.Get(r.Context(), id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return messages.NotFoundf("schedule '%s' not found", id)
	}
	if err != nil {
		return messages.Unavailablef("read schedule %s: %v", id, err)
	}
	v := schedule.DecodeVersioned(e.Value(), e.Revision())
	if v.Def.ID == "" {
		v.Def.ID = id
	}
	st := schedule.Status{Schedule: v.Def, Revision: v.Rev, State: StateLoading, TZ: v.Def.TZ,
		NextFires: []schedule.FireTime{}, LastTicks: []schedule.Tick{}}
	if st.TZ == "" {
		st.TZ = "UTC"
	}
	if v.Err != nil {
		msg := v.Err.Error()
		st.State, st.Error = schedule.StateInvalid, &msg
	} else if v.Def.Enabled {
		if expr, err := v.Def.CronExpr(); err == nil {
			st.NextFires = schedule.NextFireTimes(expr, h.Clock.Now(), schedule.NextFireCount)
		}
	} else {
		st.State = schedule.StateDisabled
	}
	httpx.WriteJSON(w, http.StatusOK, statusResponse{Schedule: v.Def, Status: st})
	return nil
}

// previewResponse lists the next instants of an expression.
type previewResponse struct {
	Cron       string              `json:"cron"`
	TZ         string              `json:"tz"`
	Normalized string              `json:"normalized"`
	Next       []schedule.FireTime `json:"next"`
}

func (h *handlers) preview(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	expr := strings.TrimSpace(q.Get("cron"))
	if expr == "" {
		return messages.Invalidf("cron is required (e.g. ?cron=*/30 * * * * *)")
	}
	tz := q.Get("tz")
	n := schedule.NextFireCount
	if s := q.Get("n"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > PreviewMax {
			return messages.Invalidf("invalid n %q: must be an integer between 1 and %d", s, PreviewMax)
		}
		n = v
	}
	e, err := cron.Parse(expr, tz)
	if err != nil {
		return messages.Invalidf("%v", err)
	}
	// The same refusal as the upsert's, so that the editor, which checks
	// as you type through this route, shows it before saving.
	if err := e.CheckFuture(h.Clock.Now()); err != nil {
		return messages.Invalidf("%v", err)
	}
	if tz == "" {
		tz = "UTC"
	}
	httpx.WriteJSON(w, http.StatusOK, previewResponse{Cron: expr, TZ: tz, Normalized: e.Normalized(),
		Next: schedule.NextFireTimes(e, h.Clock.Now(), n)})
	return nil
}

// run fires the schedule now through its normal dedup path and returns
// the tick's outcome.
func (h *handlers) run(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	if h.Scheduler == nil {
		return messages.Unavailablef("the scheduler is not running")
	}
	tk, err := h.Scheduler.Run(r.Context(), id)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, tk)
	return nil
}
