// Package auditlog serves GET /api/audit: the audit trail the audit
// projector stored from the AUDIT stream, newest first, filtered and paged.
// (The package is not called audit so that it never shadows actors/audit,
// which publishes the events.)
package auditlog

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/http/httpx"
	"kanade-backend/http/server"
	"kanade-backend/storage"
)

// Deps is what the route needs: the store's read pool.
type Deps struct {
	DB bun.IDB
}

// Register adds the route.
func Register(r *server.Router, d Deps) {
	h := &handler{db: d.DB}
	r.API("GET /api/audit", h.list)
}

// newestFirst is the list order; id (the rowid) breaks ties between events
// of the same instant, and every audit index already ends in it, so the
// order comes straight from the index.
const newestFirst = "occurred_at DESC, id DESC"

type handler struct {
	db bun.IDB
}

type filter struct {
	actor, action string
	since         time.Time
}

func parseFilter(r *http.Request) (filter, error) {
	var f filter
	var err error
	if f.actor, err = httpx.QueryText(r, "actor"); err != nil {
		return f, err
	}
	if f.action, err = httpx.QueryText(r, "action"); err != nil {
		return f, err
	}
	if f.since, _, err = httpx.QueryTime(r, "since"); err != nil {
		return f, err
	}
	return f, nil
}

func (f filter) apply(q *bun.SelectQuery) *bun.SelectQuery {
	if f.actor != "" {
		q = q.Where("actor = ?", f.actor)
	}
	if f.action != "" {
		q = q.Where("action = ?", f.action)
	}
	if !f.since.IsZero() {
		q = q.Where("occurred_at >= ?", storage.T(f.since))
	}
	return q
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) error {
	f, err := parseFilter(r)
	if err != nil {
		return err
	}
	p, err := httpx.ParsePage(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	var rows []storage.AuditRow
	err = h.db.NewSelect().Model(&rows).Apply(f.apply).
		OrderExpr(newestFirst).Limit(int64(p.Limit)).Offset(int64(p.Offset)).Scan(ctx)
	if err != nil {
		return fmt.Errorf("list audit: %w", err)
	}
	total, err := httpx.PageTotal(p, len(rows), func() (int, bool, error) { return h.count(ctx, f) })
	if err != nil {
		return fmt.Errorf("count audit: %w", err)
	}
	httpx.WritePage(w, rows, total)
	return nil
}

func (h *handler) count(ctx context.Context, f filter) (int, bool, error) {
	q := h.db.NewSelect().TableExpr("audit_log").ColumnExpr("1").Apply(f.apply).OrderExpr(newestFirst)
	return storage.CountUpTo(ctx, h.db, q, httpx.TotalCap)
}
