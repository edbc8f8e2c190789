package replicas_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"kanade-backend/actors/clock"
	"kanade-backend/internal/testsupport"
	"kanade-backend/storage/broker/brokertest"
	"kanade-backend/storage/broker/replicas"
)

// Two replicas announce themselves (the address as known at each
// announcement, refreshed on the announcer's clock); the list is sorted
// by id; a replica that stops leaves at once.
func TestAnnounceListLeave(t *testing.T) {
	br := brokertest.Start(t)
	ctx := context.Background()
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	clk := clock.NewFake(t0)
	var addr atomic.Value
	addr.Store("127.0.0.1:0")
	b := replicas.Start(replicas.Options{JS: br.JS, Self: replicas.Entry{ID: "b", Started: t0}, Address: func() string { return addr.Load().(string) },
		Every: time.Second, Clock: clk})
	a := replicas.Start(replicas.Options{JS: br.JS, Self: replicas.Entry{ID: "a", Address: "10.0.0.1:8080", Started: t0}, Clock: clk})
	list := func() []replicas.Entry {
		l, err := replicas.List(ctx, br.JS)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	testsupport.Eventually(t, 5*time.Second, func() error {
		if l := list(); len(l) != 2 || l[0].ID != "a" || l[0].Address != "10.0.0.1:8080" || l[1].Address != "127.0.0.1:0" || !l[1].LastSeen.Equal(t0) {
			return fmt.Errorf("list %+v", l)
		}
		return nil
	})
	addr.Store("127.0.0.1:8081") // the listener is up
	clk.Advance(time.Second)
	testsupport.Eventually(t, 5*time.Second, func() error {
		if l := list(); len(l) != 2 || l[1].Address != "127.0.0.1:8081" || !l[1].LastSeen.Equal(t0.Add(time.Second)) {
			return fmt.Errorf("after a refresh %+v", l)
		}
		return nil
	})
	if err := b.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if l := list(); len(l) != 1 || l[0].ID != "a" {
		t.Fatalf("after b stopped: %+v", l)
	}
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if l := list(); len(l) != 0 {
		t.Fatalf("after both stopped: %+v", l)
	}
}
