// Package inventory serves the inventory facts that the results projector
// extracts from jobs with an inventory hint (behaviour.md §1): which jobs
// are inventory probes, every PC's facts for one probe, and every probe's
// facts for one PC.
//
// The three routes overlap in net/http's pattern syntax:
// /api/inventory/jobs and /api/inventory/{pc_id} both match
// "/api/inventory/jobs". ServeMux picks the more specific pattern, the
// literal, so a PC literally named "jobs" has its facts only under
// /api/inventory/by-job/{manifest_id}; /api/inventory/by-job/{manifest_id}
// has two segments and never meets {pc_id}.
package inventory

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/uptrace/bun"

	"kanade-backend/http/httpx"
	"kanade-backend/http/server"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

// Deps is what the routes need: the store's read pool.
type Deps struct {
	DB bun.IDB
}

// Register adds the routes.
func Register(r *server.Router, d Deps) {
	h := &handler{db: d.DB}
	r.API("GET /api/inventory/jobs", h.jobs)
	r.API("GET /api/inventory/by-job/{manifest_id}", h.byJob)
	r.API("GET /api/inventory/{pc_id}", h.byPC)
}

// Job is an inventory probe: a catalog job with an inventory hint.
//
// Summary is null when the hint has none, as upstream sent it (the
// upstream SPA shows `summary ?? display`, so [] would show no columns).
type Job struct {
	ManifestID  string                  `json:"manifest_id"`
	Description *string                 `json:"description"`
	Display     []messages.DisplayField `json:"display"`
	Summary     []messages.DisplayField `json:"summary"`
}

// ByJob is every PC's facts for one probe.
type ByJob struct {
	ManifestID string                  `json:"manifest_id"`
	Display    []messages.DisplayField `json:"display"`
	Summary    []messages.DisplayField `json:"summary"`
	Rows       []PCFacts               `json:"rows"`
}

// PCFacts is one PC's row of ByJob.
type PCFacts struct {
	bun.BaseModel `bun:"table:inventory_facts"`

	PcID        string          `bun:"pc_id" json:"pc_id"`
	Facts       json.RawMessage `bun:"facts" json:"facts"`
	CollectedAt storage.Time    `bun:"collected_at" json:"collected_at"`
}

// JobFacts is one probe's row for a PC: the facts and the display hint as it
// was when they were collected.
type JobFacts struct {
	JobID       string                  `json:"job_id"`
	Facts       json.RawMessage         `json:"facts"`
	Display     []messages.DisplayField `json:"display"`
	Summary     []messages.DisplayField `json:"summary"`
	CollectedAt storage.Time            `json:"collected_at"`
	RecordedAt  storage.Time            `json:"recorded_at"`
}

type handler struct {
	db bun.IDB
}

// hintOf reads the inventory hint of a stored manifest. Only the hint is
// decoded, leniently: the catalog validated the manifest when it was
// stored, and a listing must not fail on a field added later.
func hintOf(manifest []byte) (*messages.InventoryHint, error) {
	var m struct {
		Inventory *messages.InventoryHint `json:"inventory"`
	}
	if err := json.Unmarshal(manifest, &m); err != nil {
		return nil, err
	}
	return m.Inventory, nil
}

// summaryOf decodes a stored summary snapshot; NULL or empty is nil (JSON
// null: the hint had no summary).
func summaryOf(b []byte) ([]messages.DisplayField, error) {
	if len(b) == 0 || string(b) == "null" {
		return nil, nil
	}
	return fields(b)
}

// fields decodes a stored display/summary snapshot; NULL or empty is [].
func fields(b []byte) ([]messages.DisplayField, error) {
	out := []messages.DisplayField{}
	if len(b) == 0 || string(b) == "null" {
		return out, nil
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	if out == nil {
		out = []messages.DisplayField{}
	}
	return out, nil
}

func nonNil(f []messages.DisplayField) []messages.DisplayField {
	if f == nil {
		return []messages.DisplayField{}
	}
	return f
}

func (h *handler) jobs(w http.ResponseWriter, r *http.Request) error {
	p, paged, err := httpx.ParseOptionalPage(r)
	if err != nil {
		return err
	}
	var jobs []storage.Job
	q := h.db.NewSelect().Model(&jobs).Where("has_inventory").OrderExpr("id")
	if paged {
		q = q.Limit(int64(p.Limit)).Offset(int64(p.Offset))
	}
	total, err := q.ScanAndCount(r.Context())
	if err != nil {
		return fmt.Errorf("list inventory jobs: %w", err)
	}
	out := make([]Job, 0, len(jobs))
	for _, j := range jobs {
		hint, err := hintOf(j.Manifest)
		if err != nil {
			return fmt.Errorf("decode manifest of job %s: %w", j.ID, err)
		}
		item := Job{ManifestID: j.ID, Description: j.Description, Display: []messages.DisplayField{}}
		if hint != nil {
			item.Display, item.Summary = nonNil(hint.Display), hint.Summary
		}
		out = append(out, item)
	}
	httpx.WriteList(w, out, int(total))
	return nil
}

// byJob answers for a catalog job, or for a job that has since left the
// catalog but whose facts are still stored (they age out with the PCs'
// next runs). A job unknown to both answers the empty shape
// ({display: [], summary: null, rows: []}), as upstream did: a probe whose
// PCs have not reported yet and a misspelt one look the same to a client.
// The display hint is the catalog's current one, else the snapshot stored
// with the newest facts.
func (h *handler) byJob(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("manifest_id")
	if err := messages.ValidateToken("job id", id); err != nil {
		return err
	}
	p, paged, err := httpx.ParseOptionalPage(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	out := ByJob{ManifestID: id}
	hint, err := h.catalogHint(ctx, id)
	if err != nil {
		return err
	}
	if hint != nil {
		out.Display, out.Summary = nonNil(hint.Display), hint.Summary
	} else if out.Display, out.Summary, err = h.snapshotHint(ctx, id); err != nil {
		return err
	}

	q := h.db.NewSelect().Model(&out.Rows).Where("job_id = ?", id).OrderExpr("pc_id")
	if paged {
		q = q.Limit(int64(p.Limit)).Offset(int64(p.Offset))
	}
	total, err := q.ScanAndCount(ctx)
	if err != nil {
		return fmt.Errorf("inventory facts of job %s: %w", id, err)
	}
	if out.Rows == nil {
		out.Rows = []PCFacts{}
	}
	w.Header().Set("X-Total-Count", fmt.Sprint(total))
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

// catalogHint returns the job's current hint (nil when the job has none
// or is not in the catalog).
func (h *handler) catalogHint(ctx context.Context, id string) (*messages.InventoryHint, error) {
	var manifest []byte
	err := h.db.NewSelect().Model((*storage.Job)(nil)).Column("manifest").Where("id = ?", id).Scan(ctx, &manifest)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load job %s: %w", id, err)
	}
	hint, err := hintOf(manifest)
	if err != nil {
		return nil, fmt.Errorf("decode manifest of job %s: %w", id, err)
	}
	return hint, nil
}

// snapshotHint returns the display hint stored with the job's newest facts;
// [] and nil when there are none.
func (h *handler) snapshotHint(ctx context.Context, id string) (display, summary []messages.DisplayField, err error) {
	var row storage.InventoryFact
	err = h.db.NewSelect().Model(&row).Column("display", "summary").
		Where("job_id = ?", id).OrderExpr("collected_at DESC").Limit(1).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return []messages.DisplayField{}, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("display snapshot of job %s: %w", id, err)
	}
	if display, err = fields(row.Display); err != nil {
		return nil, nil, fmt.Errorf("decode display snapshot of job %s: %w", id, err)
	}
	if summary, err = summaryOf(row.Summary); err != nil {
		return nil, nil, fmt.Errorf("decode summary snapshot of job %s: %w", id, err)
	}
	return display, summary, nil
}

// byPC lists a PC's facts per probe, by job id. A PC without facts (or
// unknown) has an empty list: it may simply not have run a probe yet.
func (h *handler) byPC(w http.ResponseWriter, r *http.Request) error {
	pc := r.PathValue("pc_id")
	if err := messages.ValidateToken("pc_id", pc); err != nil {
		return err
	}
	p, paged, err := httpx.ParseOptionalPage(r)
	if err != nil {
		return err
	}
	var rows []storage.InventoryFact
	q := h.db.NewSelect().Model(&rows).Where("pc_id = ?", pc).OrderExpr("job_id")
	if paged {
		q = q.Limit(int64(p.Limit)).Offset(int64(p.Offset))
	}
	total, err := q.ScanAndCount(r.Context())
	if err != nil {
		return fmt.Errorf("inventory facts of pc %s: %w", pc, err)
	}
	out := make([]JobFacts, 0, len(rows))
	for _, f := range rows {
		item := JobFacts{JobID: f.JobID, Facts: f.Facts, CollectedAt: f.CollectedAt, RecordedAt: f.RecordedAt}
		if item.Display, err = fields(f.Display); err != nil {
			return fmt.Errorf("decode display snapshot of %s/%s: %w", pc, f.JobID, err)
		}
		if item.Summary, err = summaryOf(f.Summary); err != nil {
			return fmt.Errorf("decode summary snapshot of %s/%s: %w", pc, f.JobID, err)
		}
		out = append(out, item)
	}
	httpx.WriteList(w, out, int(total))
	return nil
}
