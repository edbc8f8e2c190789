package agentauth_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"kanade-backend/actors/clock"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/agentauth"
	"kanade-backend/storage/storagetest"
)

// The credential store's SQL on both databases: mint, look up by hash,
// record use, bind an enrollment, revoke.
func TestStoreOnEveryDialect(t *testing.T) {
	storagetest.ForEachDialect(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
		fake := clock.NewFake(t0)
		s := agentauth.NewStore(st, fake)

		is, err := s.MintPC(ctx, []string{"PC-1", "PC-2"}, "admin")
		if err != nil || len(is) != 2 || is[1].PcID == nil || *is[1].PcID != "PC-2" {
			t.Fatalf("mint: %+v %v", is, err)
		}
		c, found, err := s.ByTokenHash(ctx, agentauth.TokenHash(is[0].Token))
		if err != nil || !found || c.ID != is[0].ID || c.State != agentauth.StateActive || *c.PcID != "PC-1" {
			t.Fatalf("lookup: %+v %v %v", c, found, err)
		}
		if _, found, _ := s.ByTokenHash(ctx, agentauth.TokenHash("kanade_pc_nope")); found {
			t.Fatal("an unknown token was found")
		}
		if err := s.Touch(ctx, map[string]time.Time{is[0].ID: t0.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		// An older use never moves last_used_at back.
		if err := s.Touch(ctx, map[string]time.Time{is[0].ID: t0}); err != nil {
			t.Fatal(err)
		}
		list, total, err := s.ListPC(ctx, "PC-1", 10, 0)
		if err != nil || total != 1 || !list[0].LastUsedAt.Equal(t0.Add(time.Minute)) || list[0].CreatedBy != "admin" {
			t.Fatalf("list: %+v %d %v", list, total, err)
		}

		en, err := s.CreateEnrollments(ctx, 2, []string{"canary", "lab"}, t0.Add(time.Hour), "admin")
		if err != nil || len(en) != 2 || en[0].State != agentauth.StatePending {
			t.Fatalf("enrollments: %+v %v", en, err)
		}
		if _, err := s.Bind(ctx, en[0].ID, "PC-1"); !errors.Is(err, agentauth.ErrNotBindable) {
			t.Fatalf("bound over PC-1's own credential: %v", err)
		}
		b, err := s.Bind(ctx, en[0].ID, "NEW-1")
		if err != nil || b.State != agentauth.StateActive || !slices.Equal([]string(b.Groups), []string{"canary", "lab"}) {
			t.Fatalf("bind: %+v %v", b, err)
		}
		if _, err := s.Bind(ctx, en[0].ID, "NEW-2"); !errors.Is(err, agentauth.ErrNotBindable) {
			t.Fatalf("bound twice: %v", err)
		}
		fake.Advance(2 * time.Hour)
		if c, _, _ := s.ByTokenHash(ctx, agentauth.TokenHash(en[1].Token)); c.State != agentauth.StateExpired {
			t.Fatalf("unused enrollment after its expiry: %s", c.State)
		}
		if c, _, _ := s.ByTokenHash(ctx, agentauth.TokenHash(en[0].Token)); c.State != agentauth.StateActive {
			t.Fatalf("a bound enrollment expired: %s", c.State)
		}
		all, total, err := s.ListEnrollments(ctx, 10, 0)
		if err != nil || total != 2 || len(all) != 2 {
			t.Fatalf("list enrollments: %d %v", total, err)
		}

		revoked, err := s.RevokePC(ctx, "PC-1", "admin")
		if err != nil || len(revoked) != 1 || revoked[0].State != agentauth.StateRevoked {
			t.Fatalf("revoke: %+v %v", revoked, err)
		}
		if again, err := s.RevokePC(ctx, "PC-1", "admin"); err != nil || len(again) != 0 {
			t.Fatalf("revoke again: %+v %v", again, err)
		}
		if _, err := s.Revoke(ctx, is[1].ID, agentauth.Match{PcID: "PC-1"}, "admin"); !errors.Is(err, messages.ErrNotFound) {
			t.Fatalf("revoked PC-2's credential through PC-1: %v", err)
		}
		if _, err := s.Revoke(ctx, is[1].ID, agentauth.Match{Kind: agentauth.KindEnrollment}, "admin"); !errors.Is(err, messages.ErrNotFound) {
			t.Fatalf("revoked a PC credential as an enrollment: %v", err)
		}
		before, err := s.Revoke(ctx, is[1].ID, agentauth.Match{PcID: "PC-2"}, "admin")
		if err != nil || before.State != agentauth.StateActive {
			t.Fatalf("revoke one: %+v %v", before, err)
		}
		if live, err := s.HasLive(ctx, "PC-2"); err != nil || live {
			t.Fatalf("PC-2 still has a live credential: %v", err)
		}
		if c, _, _ := s.ByTokenHash(ctx, agentauth.TokenHash(is[1].Token)); c.State != agentauth.StateRevoked {
			t.Fatalf("revoked credential looks %s", c.State)
		}
	})
}
