package storage_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

// The leader fence: a fire under a token older than the stored one is
// refused, a raise never lowers the token and tells a stale leader so,
// and a raise waits for a fire still in flight under the old token (so
// that every fire after it sees the new one).
func TestLeaderFence(t *testing.T) {
	storagetest.ForEachDialect(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		check := func(token uint64) error {
			return s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error { return storage.CheckFence(ctx, tx, token) })
		}
		if got, err := s.Fence(ctx); err != nil || got != 0 {
			t.Fatalf("fresh fence %d, %v; want 0", got, err)
		}
		if err := check(1); err != nil {
			t.Fatalf("first leader's fire: %v", err)
		}
		if err := s.RaiseFence(ctx, 5); err != nil {
			t.Fatal(err)
		}
		var fe *storage.FenceError
		if err := check(4); !errors.As(err, &fe) || !errors.Is(err, storage.ErrFenced) || fe.Token != 4 || fe.Fence != 5 {
			t.Fatalf("stale fire under 4 after a raise to 5: %v", err)
		}
		for _, tok := range []uint64{5, 6} {
			if err := check(tok); err != nil {
				t.Fatalf("fire under %d: %v", tok, err)
			}
		}
		// A stale leader's raise is refused and lowers nothing.
		if err := s.RaiseFence(ctx, 3); !errors.As(err, &fe) || fe.Fence != 5 {
			t.Fatalf("raise to 3 over 5: %v", err)
		}
		if got, _ := s.Fence(ctx); got != 5 {
			t.Fatalf("fence %d after a stale raise, want 5", got)
		}

		// A fire under 5 is in its transaction when leader 9 raises: the
		// raise waits for it, and a fire under 5 after the raise is
		// refused.
		inFire, release, fireDone := make(chan struct{}), make(chan struct{}), make(chan error, 1)
		go func() {
			fireDone <- s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
				if err := storage.CheckFence(ctx, tx, 5); err != nil {
					return err
				}
				select {
				case <-inFire:
				default:
					close(inFire)
				}
				<-release
				// The fire's own write, as the exec engine's.
				_, err := tx.NewRaw("UPDATE leader_fence SET id = id WHERE id = 1").Exec(ctx)
				return err
			})
		}()
		<-inFire
		raised := make(chan error, 1)
		go func() { raised <- s.RaiseFence(ctx, 9) }()
		select {
		case err := <-raised:
			t.Fatalf("the raise did not wait for the fire in flight: %v", err)
		case <-time.After(300 * time.Millisecond):
		}
		close(release)
		if err := <-fireDone; err != nil {
			t.Fatalf("the fire in flight before the raise: %v", err)
		}
		if err := <-raised; err != nil {
			t.Fatal(err)
		}
		if err := check(5); !errors.As(err, &fe) || fe.Fence != 9 {
			t.Fatalf("fire under 5 after the raise to 9: %v", err)
		}
	})
}
