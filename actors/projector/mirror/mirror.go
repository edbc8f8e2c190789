// Package mirror writes the SQL mirrors of the KV buckets jobs, schedules
// and agent_groups (behaviour.md §1), so that the API and the scheduler
// query tables instead of scanning keys.
//
// Two writers feed each mirror: the KV mirror projectors (actors/projector),
// which apply every watch event, and API handlers, which write the row
// right after their own KV put so that a client reads its write at once.
// Both go through these functions, and every write carries the KV revision
// it comes from: a row only ever moves to a newer revision, so the two
// writers converge whatever order their writes land in.
package mirror

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/messages"
	"kanade-backend/storage"
)

// ErrUndecodable marks a KV value that cannot be mirrored because it does
// not decode; the projector records it as a projection error and moves on.
var ErrUndecodable = errors.New("undecodable KV value")

// Job mirrors the KV jobs value of id at revision rev (a Manifest JSON). It
// does nothing when the row already holds rev or a newer revision.
func Job(ctx context.Context, db bun.IDB, id string, manifestJSON []byte, rev uint64, now time.Time) error {
	var m messages.Manifest
	if err := json.Unmarshal(manifestJSON, &m); err != nil {
		return fmt.Errorf("job %s rev %d: %w: %v", id, rev, ErrUndecodable, err)
	}
	row := storage.Job{
		ID:           id,
		Version:      m.Version,
		Description:  m.Description,
		HasInventory: m.Inventory != nil,
		Manifest:     compact(manifestJSON),
		KVRevision:   rev,
		UpdatedAt:    storage.T(now),
	}
	_, err := db.NewInsert().Model(&row).
		On("CONFLICT (id) DO UPDATE").
		Set("version = EXCLUDED.version").
		Set("description = EXCLUDED.description").
		Set("has_inventory = EXCLUDED.has_inventory").
		Set("manifest = EXCLUDED.manifest").
		Set("kv_revision = EXCLUDED.kv_revision").
		Set("updated_at = EXCLUDED.updated_at").
		Where("job.kv_revision < EXCLUDED.kv_revision").
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("mirror job %s rev %d: %w", id, rev, err)
	}
	return nil
}

// DeleteJob removes the mirror row of id unless it holds a revision newer
// than the delete (rev is the revision of the delete or purge marker).
func DeleteJob(ctx context.Context, db bun.IDB, id string, rev uint64) error {
	_, err := db.NewDelete().Model((*storage.Job)(nil)).
		Where("id = ?", id).Where("kv_revision < ?", rev).Exec(ctx)
	if err != nil {
		return fmt.Errorf("delete job mirror %s rev %d: %w", id, rev, err)
	}
	return nil
}

// Schedule mirrors the KV schedules value of id at revision rev. A schedule
// that decodes but does not validate (bad cron, unknown zone) is mirrored
// all the same: the listing shows it and the scheduler reports why it
// cannot run.
func Schedule(ctx context.Context, db bun.IDB, id string, scheduleJSON []byte, rev uint64, now time.Time) error {
	var s messages.Schedule
	if err := json.Unmarshal(scheduleJSON, &s); err != nil {
		return fmt.Errorf("schedule %s rev %d: %w: %v", id, rev, ErrUndecodable, err)
	}
	row := storage.ScheduleRow{
		ID:         id,
		JobID:      s.JobID,
		Enabled:    s.Enabled,
		Definition: compact(scheduleJSON),
		KVRevision: rev,
		UpdatedAt:  storage.T(now),
	}
	_, err := db.NewInsert().Model(&row).
		On("CONFLICT (id) DO UPDATE").
		Set("job_id = EXCLUDED.job_id").
		Set("enabled = EXCLUDED.enabled").
		Set("definition = EXCLUDED.definition").
		Set("kv_revision = EXCLUDED.kv_revision").
		Set("updated_at = EXCLUDED.updated_at").
		Where("schedule_row.kv_revision < EXCLUDED.kv_revision").
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("mirror schedule %s rev %d: %w", id, rev, err)
	}
	return nil
}

// DeleteSchedule removes the mirror row of id unless it is newer than rev.
func DeleteSchedule(ctx context.Context, db bun.IDB, id string, rev uint64) error {
	_, err := db.NewDelete().Model((*storage.ScheduleRow)(nil)).
		Where("id = ?", id).Where("kv_revision < ?", rev).Exec(ctx)
	if err != nil {
		return fmt.Errorf("delete schedule mirror %s rev %d: %w", id, rev, err)
	}
	return nil
}

// GroupsJSON mirrors the KV agent_groups value of pcID at revision rev. It
// reads the {"groups":[...]} wrapper and tolerates a bare array; an empty
// value (a delete or purge marker) means no groups.
func GroupsJSON(ctx context.Context, db bun.IDB, pcID string, value []byte, rev uint64, now time.Time) error {
	g, err := messages.ParseAgentGroups(value)
	if err != nil {
		return fmt.Errorf("agent_groups %s rev %d: %w: %v", pcID, rev, ErrUndecodable, err)
	}
	return Groups(ctx, db, pcID, g.Groups, rev, now)
}

// Groups replaces the memberships of pcID with groups (sorted and
// de-duplicated here) if rev is newer than the revision mirrored so far.
// Deleting a PC's key is Groups(pc, nil, rev of the marker): the revision
// row stays behind as a tombstone, so an older value replayed later cannot
// bring the memberships back.
//
// The revision row is claimed first, in one statement that moves it only
// forwards and says whether it did: the claim holds the row's lock until
// commit on PostgreSQL, so of two writers of one PC (the watch and an API
// handler, or two replicas) the second waits, then finds the newer
// revision and leaves the memberships alone. Reading the revision and then
// writing would let both pass and interleave their memberships.
func Groups(ctx context.Context, db bun.IDB, pcID string, groups []string, rev uint64, now time.Time) error {
	rr := storage.GroupRevision{PcID: pcID, KVRevision: rev, UpdatedAt: storage.T(now)}
	var claimed []string
	err := db.NewInsert().Model(&rr).
		On("CONFLICT (pc_id) DO UPDATE").
		Set("kv_revision = EXCLUDED.kv_revision").
		Set("updated_at = EXCLUDED.updated_at").
		Where("group_revision.kv_revision < EXCLUDED.kv_revision").
		Returning("pc_id").
		Scan(ctx, &claimed)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("record agent_groups revision of %s: %w", pcID, err)
	}
	if len(claimed) == 0 {
		return nil // the mirror holds rev or a newer revision
	}
	if _, err := db.NewDelete().Model((*storage.GroupMember)(nil)).Where("pc_id = ?", pcID).Exec(ctx); err != nil {
		return fmt.Errorf("clear groups of %s: %w", pcID, err)
	}
	if gs := messages.NormalizeGroups(groups); len(gs) > 0 {
		rows := make([]storage.GroupMember, len(gs))
		for i, g := range gs {
			rows[i] = storage.GroupMember{PcID: pcID, GroupName: g}
		}
		if _, err := db.NewInsert().Model(&rows).Exec(ctx); err != nil {
			return fmt.Errorf("insert groups of %s: %w", pcID, err)
		}
	}
	return nil
}

// compact stores JSON without insignificant whitespace; a value that is not
// valid JSON cannot reach here (it failed to decode).
func compact(b []byte) json.RawMessage {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return json.RawMessage(b)
	}
	return out.Bytes()
}
