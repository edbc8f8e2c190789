package storage

import (
	"context"
	"errors"
	"fmt"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
)

// The leader fence (issue 13, scaleout.md §0.3): the one-row table
// leader_fence holds the fencing token of the newest leader, the revision
// of the lease key its Create got (cmd/internal/lease). Revisions only
// grow, so a later leader always holds a larger token.
//
//   - A scheduled fire checks the fence inside the transaction that first
//     writes it (CheckFence), and records nothing when a newer leader
//     raised the token past its own.
//   - A new leader raises the fence (RaiseFence) before it seeds any
//     schedule state. On PostgreSQL the fire's read takes a share lock
//     (FOR SHARE), so the UPDATE waits for every fire of the former leader
//     still in flight, and every fire that starts after it sees the new
//     token; SQLite runs one write transaction at a time, which gives the
//     same order.
//
// With several backends on separate SQLite files the fence is per file;
// the shared-database topology is PostgreSQL.

// ErrFenced is the cause of a fire refused because a newer leader raised
// the fence past the fire's token.
var ErrFenced = errors.New("a newer leader holds the fence")

// FenceError says by how much a token is behind the fence.
type FenceError struct {
	Token, Fence uint64
}

func (e *FenceError) Error() string {
	return fmt.Sprintf("%v: fencing token %d is behind the stored token %d", ErrFenced, e.Token, e.Fence)
}

func (e *FenceError) Unwrap() error { return ErrFenced }

// leaderFence is the table's one row.
type leaderFence struct {
	bun.BaseModel `bun:"table:leader_fence"`
	ID            int    `bun:"id,pk"`
	Token         uint64 `bun:"token"`
}

// CheckFence reads the stored token inside tx (a share lock on
// PostgreSQL, held until tx ends, so that a raise waits for tx) and
// returns a *FenceError when it is above token.
func CheckFence(ctx context.Context, tx bun.Tx, token uint64) error {
	stored, err := readFence(ctx, tx, true)
	if err != nil {
		return err
	}
	if stored > token {
		return &FenceError{Token: token, Fence: stored}
	}
	return nil
}

func readFence(ctx context.Context, db bun.IDB, share bool) (uint64, error) {
	var row leaderFence
	q := db.NewSelect().Model(&row).Where("id = 1")
	if share && db.Dialect().Name() == dialect.PG {
		q = q.For("SHARE")
	}
	if err := q.Scan(ctx); err != nil {
		return 0, fmt.Errorf("read the leader fence: %w", err)
	}
	return row.Token, nil
}

// RaiseFence raises the stored token to token unless it is higher
// already, and returns a *FenceError when it is (a newer leader raised it
// first: this one is stale). It waits for the fires in flight under older
// tokens (PostgreSQL: their share locks).
func (s *Store) RaiseFence(ctx context.Context, token uint64) error {
	return s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewUpdate().Model((*leaderFence)(nil)).Set("token = ?", token).
			Where("id = 1").Where("token < ?", token).Exec(ctx); err != nil {
			return fmt.Errorf("raise the leader fence to %d: %w", token, err)
		}
		stored, err := readFence(ctx, tx, false)
		if err != nil {
			return err
		}
		if stored > token {
			return &FenceError{Token: token, Fence: stored}
		}
		return nil
	})
}

// Fence reads the stored token.
func (s *Store) Fence(ctx context.Context) (uint64, error) {
	return readFence(ctx, s.R, false)
}
