package clock

import (
	"context"
	"testing"
	"time"

	"kanade-backend/internal/testsupport"
)

func TestBackoffDoublesUpToMaxAndResets(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := b.Next(); got != w*time.Millisecond {
			t.Fatalf("wait %d = %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
	b.Reset()
	if got := b.Next(); got != 100*time.Millisecond {
		t.Fatalf("after Reset: %v, want Min", got)
	}
}

func TestBackoffWaitsOnTheClock(t *testing.T) {
	c := NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	b := Backoff{Min: time.Second, Max: 4 * time.Second}
	b.Next() // the second wait is 2 s
	done := make(chan bool, 1)
	go func() { done <- b.Wait(context.Background(), c) }()
	testsupport.EventuallyTrue(t, 5*time.Second, func() bool { return c.Pending() == 1 }, "no timer set yet")
	c.Advance(1999 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("Wait returned before its 2 s had passed")
	default:
	}
	c.Advance(time.Millisecond)
	if !<-done {
		t.Fatal("Wait reported stop although its time passed")
	}
}

func TestSleepStopsWithTheContext(t *testing.T) {
	c := NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan bool, 1)
	go func() { done <- Sleep(ctx, c, time.Hour) }()
	testsupport.EventuallyTrue(t, 5*time.Second, func() bool { return c.Pending() == 1 }, "no timer set yet")
	cancel()
	if <-done {
		t.Fatal("Sleep reported carry on after its context ended")
	}
	if c.Pending() != 0 {
		t.Fatal("Sleep left its timer behind")
	}
	if Sleep(ctx, c, 0) {
		t.Fatal("Sleep on an ended context reported carry on")
	}
}
