package app_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"kanade-backend/cmd/internal/lease"
	"kanade-backend/internal/apptest"
	"kanade-backend/storage/storagetest"
)

// A backend that takes the leader lease raises the store's leader fence
// to the lease's revision (its fencing token) before its scheduler seeds:
// by the time it is ready, the fence holds the revision of the lease key
// it holds.
func TestLeaderRaisesTheFenceToItsToken(t *testing.T) {
	storagetest.RunDialects(t, func(t *testing.T, d storagetest.Dialect) {
		b := apptest.Start(t, apptest.Options{DBURL: d.URL(t)})
		kv, err := b.JS.KeyValue(context.Background(), lease.DefaultBucket)
		if err != nil {
			t.Fatal(err)
		}
		apptest.Eventually(t, 10*time.Second, func() error {
			ctx := context.Background()
			e, err := kv.Get(ctx, lease.DefaultKey)
			if err != nil {
				return err
			}
			fence, err := b.Store.Fence(ctx)
			if err != nil {
				return err
			}
			// The fence is the token of the Create that acquired the
			// lease; renewals move the key's revision on from there.
			if fence == 0 || fence > e.Revision() {
				return fmt.Errorf("fence %d, lease revision %d", fence, e.Revision())
			}
			return nil
		})
	})
}
