package schedule

import (
	"slices"
	"testing"
	"time"

	"kanade-backend/actors/clock"
)

// Alarms at one instant share one clock timer and ring in arming order,
// whatever zone their instant is expressed in; a stopped alarm does not
// ring, and the instant's timer goes with its last alarm.
func TestAlarmsShareOneTimerPerInstant(t *testing.T) {
	fake := clock.NewFake(t0)
	s := newAlarms(fake)
	var rang []int
	ring := func(i int) func() { return func() { rang = append(rang, i) } }
	at := t0.Add(time.Second)
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	a0 := s.at(fake.Now(), at, ring(0))
	a1 := s.at(fake.Now(), at.In(tokyo), ring(1))
	s.at(fake.Now(), at, ring(2))
	later := s.at(fake.Now(), at.Add(time.Second), ring(3))
	if n := fake.Pending(); n != 2 {
		t.Fatalf("%d clock timers for two instants", n)
	}
	if !a1.Stop() || a1.Stop() {
		t.Fatal("Stop of a pending alarm: want true once, then false")
	}
	fake.Set(at)
	if want := []int{0, 2}; !slices.Equal(rang, want) {
		t.Fatalf("rang %v, want %v", rang, want)
	}
	if a0.Stop() {
		t.Fatal("Stop after ringing reported true")
	}
	if !later.Stop() {
		t.Fatal("Stop of the later alarm reported false")
	}
	if n := fake.Pending(); n != 0 {
		t.Fatalf("%d clock timers left after the last alarm stopped", n)
	}
	fake.Advance(time.Minute)
	if len(rang) != 2 {
		t.Fatalf("a stopped alarm rang: %v", rang)
	}
	if len(s.due) != 0 {
		t.Fatalf("%d instants still filed", len(s.due))
	}
}
