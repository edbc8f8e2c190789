package jobs

import (
	"context"
	"encoding/json"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/messages"
	"kanade-backend/storage"
)

// upsertMirror writes the jobs mirror row of a KV put. The revision guard
// makes it commute with the projector's watch: whichever of the two writes
// a revision last, the newest revision stays.
func upsertMirror(ctx context.Context, st *storage.Store, m *messages.Manifest, value json.RawMessage, rev uint64, now time.Time) error {
	return st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO jobs (id, version, description, has_inventory, manifest, kv_revision, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET version = excluded.version, description = excluded.description,
  has_inventory = excluded.has_inventory, manifest = excluded.manifest,
  kv_revision = excluded.kv_revision, updated_at = excluded.updated_at
WHERE jobs.kv_revision < excluded.kv_revision`,
			m.ID, m.Version, m.Description, m.Inventory != nil, string(value), rev, storage.T(now))
		return err
	})
}

// deleteMirror removes the mirror row of a deleted job. KV Delete does not
// return the delete marker's revision, so the row goes unconditionally;
// the projector's watch replays a later put, if any, in order.
func deleteMirror(ctx context.Context, st *storage.Store, id string) error {
	return st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewDelete().Model((*storage.Job)(nil)).Where("id = ?", id).Exec(ctx)
		return err
	})
}
