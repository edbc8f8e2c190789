// Package jobs serves the job catalog API: listing, upserting and deleting
// manifests in KV jobs (the catalog's source of truth) and revoking or
// restoring scripts in KV script_status. It also writes the jobs mirror row
// of every change it makes, guarded by the KV revision, so that a read of
// the mirror right after a write sees it; the projector's KV watch keeps
// the mirror for every other writer.
package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/uptrace/bun"

	"kanade-backend/actors/audit"
	"kanade-backend/actors/clock"
	"kanade-backend/actors/projector/mirror"
	"kanade-backend/http/httpx"
	"kanade-backend/http/internal/opaudit"
	"kanade-backend/http/server"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker"
)

// kvTimeout bounds the KV calls of one request.
const kvTimeout = 10 * time.Second

// Buckets opens KV buckets by name.
type Buckets interface {
	KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error)
}

var _ Buckets = (jetstream.JetStream)(nil)

// Auditor publishes audit events.
type Auditor interface {
	Publish(ctx context.Context, ev messages.AuditEvent) error
}

var _ Auditor = (*audit.Publisher)(nil)

// Deps is what the routes need.
type Deps struct {
	KV    Buckets
	Store *storage.Store
	Audit Auditor
	Clock clock.Clock
	// Logger reports failures that do not fail the request (audit, mirror).
	Logger *slog.Logger
}

type handlers struct {
	Deps
	handles *broker.KVHandles
}

// Register adds the routes.
func Register(r *server.Router, d Deps) {
	if d.Clock == nil {
		d.Clock = clock.Real{}
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	h := &handlers{Deps: d, handles: broker.NewKVHandles(d.KV)}
	r.API("GET /api/jobs", h.list)
	r.API("POST /api/jobs", h.upsert)
	r.API("DELETE /api/jobs/{id}", h.delete)
	r.API("POST /api/scripts/{job_id}/revoke", h.scriptStatus(messages.ScriptStatusRevoked, messages.ActionScriptRevoke))
	r.API("POST /api/scripts/{job_id}/unrevoke", h.scriptStatus(messages.ScriptStatusActive, messages.ActionScriptUnrevoke))
}

// bucket opens a bucket once (broker.KVHandles); failures are not kept.
func (h *handlers) bucket(ctx context.Context, name string) (jetstream.KeyValue, error) {
	kv, err := h.handles.Open(ctx, name)
	if err != nil {
		return nil, messages.Unavailablef("KV bucket %s unavailable: %v", name, err)
	}
	return kv, nil
}

// list answers [Manifest] sorted by id, [] for an empty catalog. Paging
// applies only when limit or offset is given: upstream clients expect the
// whole catalog in one array. X-Total-Count is always set.
func (h *handlers) list(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	paged := q.Has("limit") || q.Has("offset")
	page, err := httpx.ParsePage(r)
	if err != nil {
		return err
	}
	// Served from the jobs mirror, which the API writes through on every
	// change and the projector's watch keeps in step with KV: the catalog
	// stays readable while NATS is away.
	var rows []storage.Job
	if err := h.Store.R.NewSelect().Model(&rows).Column("id", "manifest").Order("id").Scan(r.Context()); err != nil {
		return fmt.Errorf("read jobs mirror: %w", err)
	}
	out := make([]messages.Manifest, 0, len(rows))
	for _, row := range rows {
		var m messages.Manifest
		if err := messages.DecodeJSON(row.Manifest, &m); err != nil {
			// The mirror holds what KV held; one bad value (written
			// around the API) must not hide the rest of the catalog.
			h.Logger.Warn("job catalog value is not a manifest; left out of the list", "key", row.ID, "err", err)
			continue
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b messages.Manifest) int { return strings.Compare(a.ID, b.ID) })
	total := len(out)
	if paged {
		out = out[min(page.Offset, total):min(page.Offset+page.Limit, total)]
	}
	httpx.WriteList(w, out, total)
	return nil
}

// values reads every live value of a bucket in one watch: the initial
// values arrive first and a nil entry marks their end (wire.md §3), which
// also makes an empty bucket an empty list rather than ErrNoKeysFound.
func values(ctx context.Context, kv jetstream.KeyValue) ([]jetstream.KeyValueEntry, error) {
	wt, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer func() { _ = wt.Stop() }()
	var out []jetstream.KeyValueEntry
	for {
		select {
		case e, ok := <-wt.Updates():
			if !ok {
				return nil, errors.New("watch closed before the initial values ended")
			}
			if e == nil {
				return out, nil
			}
			out = append(out, e)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// upsertResponse is the 200 body of POST /api/jobs.
type upsertResponse struct {
	ID          string  `json:"id"`
	Version     string  `json:"version"`
	Description *string `json:"description"`
	Inventory   bool    `json:"inventory"`
}

// upsert stores a manifest posted as JSON or YAML.
func (h *handlers) upsert(w http.ResponseWriter, r *http.Request) error {
	body, err := httpx.ReadBody(w, r, httpx.MaxBodyBytes)
	if err != nil {
		return err
	}
	parse := messages.ParseManifestJSON
	if httpx.IsYAML(r) {
		parse = messages.ParseManifestYAML
	}
	m, err := parse(body)
	if err != nil {
		return messages.Invalidf("%s", err.Error())
	}
	value, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode manifest %s: %w", m.ID, err)
	}
	ctx, cancel := context.WithTimeout(r.Context(), kvTimeout)
	defer cancel()
	kv, err := h.bucket(ctx, messages.BucketJobs)
	if err != nil {
		return err
	}
	rev, err := kv.Put(ctx, m.ID, value)
	if err != nil {
		return messages.Unavailablef("store job '%s' in KV %s: %v", m.ID, messages.BucketJobs, err)
	}
	err = h.Store.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		return mirror.Job(ctx, tx, m.ID, value, rev, h.Clock.Now())
	})
	if err != nil {
		h.Logger.Error("jobs mirror not updated; the projector's watch will", "job_id", m.ID, "err", err)
	}
	h.audit(r.Context(), messages.ActionJobUpsert, m.ID, map[string]any{"version": m.Version, "revision": rev})
	httpx.WriteJSON(w, http.StatusOK, upsertResponse{ID: m.ID, Version: m.Version, Description: m.Description, Inventory: m.Inventory != nil})
	return nil
}

// delete removes a job unless a schedule uses it. The check reads KV
// schedules, the source of truth, so that a schedule created a moment ago
// (not yet in the mirror) still counts.
func (h *handlers) delete(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := messages.ValidateToken("job id", id); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), kvTimeout)
	defer cancel()
	schedules, err := h.bucket(ctx, messages.BucketSchedules)
	if err != nil {
		return err
	}
	if sid, err := referencingSchedule(ctx, schedules, id); err != nil {
		return messages.Unavailablef("read KV %s: %v", messages.BucketSchedules, err)
	} else if sid != "" {
		return messages.Conflictf("job '%s' is referenced by schedule '%s'; remove the schedule first", id, sid)
	}
	kv, err := h.bucket(ctx, messages.BucketJobs)
	if err != nil {
		return err
	}
	// The revision being deleted bounds the mirror delete: KV Delete does not
	// return the marker's revision, but it is newer than this one, so a row
	// at this revision or older goes and a concurrent newer put stays (the
	// watch then applies the marker with its real revision).
	var prev uint64
	switch e, err := kv.Get(ctx, id); {
	case err == nil:
		prev = e.Revision()
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return messages.Unavailablef("read job '%s' from KV %s: %v", id, messages.BucketJobs, err)
	}
	if err := kv.Delete(ctx, id); err != nil {
		return messages.Unavailablef("delete job '%s' from KV %s: %v", id, messages.BucketJobs, err)
	}
	if prev > 0 {
		err := h.Store.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
			return mirror.DeleteJob(ctx, tx, id, prev+1)
		})
		if err != nil {
			h.Logger.Error("jobs mirror row not deleted; the projector's watch will", "job_id", id, "err", err)
		}
	}
	h.audit(r.Context(), messages.ActionJobDelete, id, nil)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// referencingSchedule returns the first schedule id (in id order) whose
// job_id is jobID, or "". Values are decoded leniently: a schedule that is
// invalid in other ways still references its job.
func referencingSchedule(ctx context.Context, kv jetstream.KeyValue, jobID string) (string, error) {
	entries, err := values(ctx, kv)
	if err != nil {
		return "", err
	}
	var ids []string
	for _, e := range entries {
		var s struct {
			JobID string `json:"job_id"`
		}
		if json.Unmarshal(e.Value(), &s) == nil && s.JobID == jobID {
			ids = append(ids, e.Key())
		}
	}
	if len(ids) == 0 {
		return "", nil
	}
	slices.Sort(ids)
	return ids[0], nil
}

// scriptStatus writes the raw script_status value agents check before
// running a job's Command.
func (h *handlers) scriptStatus(value, action string) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("job_id")
		if err := messages.ValidateToken("job id", id); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(r.Context(), kvTimeout)
		defer cancel()
		kv, err := h.bucket(ctx, messages.BucketScriptStatus)
		if err != nil {
			return err
		}
		if _, err := kv.Put(ctx, id, []byte(value)); err != nil {
			return messages.Unavailablef("write %s[%s] = %s: %v", messages.BucketScriptStatus, id, value, err)
		}
		h.audit(r.Context(), action, id, map[string]any{"status": value})
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
}

// audit records the operator event of a change already made.
func (h *handlers) audit(ctx context.Context, action, target string, payload map[string]any) {
	opaudit.Record(ctx, h.Audit, h.Logger, action, target, payload)
}
