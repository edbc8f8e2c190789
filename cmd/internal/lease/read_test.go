package lease

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"kanade-backend/actors/clock"
	"kanade-backend/internal/testsupport"
	"kanade-backend/storage/broker/brokertest"
)

// Read names nobody before the lease exists, the holder (its replica id,
// the key's revision, which grows with its renewals) while held, and
// nobody again once the holder resigned.
func TestReadNamesTheHolder(t *testing.T) {
	br := brokertest.Start(t)
	ctx := context.Background()
	if _, _, err := Read(ctx, br.JS, "", ""); !errors.Is(err, ErrNoHolder) {
		t.Fatalf("before any lease: %v", err)
	}
	clk := clock.NewFake(time.Now())
	c := newCandidate(t, br, clk, "replica-1")
	c.start()
	tok := <-c.acquired
	h, rev, err := Read(ctx, br.JS, "", "")
	if err != nil || h.ReplicaID != "replica-1" || rev != tok {
		t.Fatalf("held: %+v revision %d (token %d), %v", h, rev, tok, err)
	}
	clk.Advance(testRenew)
	testsupport.Eventually(t, 5*time.Second, func() error {
		if _, rev2, err := Read(ctx, br.JS, "", ""); err != nil || rev2 <= rev {
			return fmt.Errorf("after a renewal: revision %d (was %d), %v", rev2, rev, err)
		}
		return nil
	})
	if err := c.l.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Read(ctx, br.JS, "", ""); !errors.Is(err, ErrNoHolder) {
		t.Fatalf("after resigning: %v", err)
	}
}
