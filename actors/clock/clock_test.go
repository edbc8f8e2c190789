package clock

import (
	"testing"
	"time"
)

func TestFakeRunsDueCallbacksInOrder(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewFake(start)
	var got []string
	var seen []time.Time
	c.AfterFunc(2*time.Second, func() { got = append(got, "b"); seen = append(seen, c.Now()) })
	c.AfterFunc(time.Second, func() { got = append(got, "a"); seen = append(seen, c.Now()) })
	stopped := c.AfterFunc(1500*time.Millisecond, func() { got = append(got, "x") })
	if !stopped.Stop() {
		t.Fatal("Stop of a pending timer returned false")
	}
	c.Advance(1500 * time.Millisecond)
	if len(got) != 1 || got[0] != "a" || !seen[0].Equal(start.Add(time.Second)) {
		t.Fatalf("after 1.5s: got %v at %v", got, seen)
	}
	// A callback may schedule another one that is already due.
	c.AfterFunc(100*time.Millisecond, func() { got = append(got, "c") })
	c.Advance(time.Second)
	if join(got) != "a c b" {
		t.Fatalf("order = %v, want a c b (c due at 1.6s, b at 2s)", got)
	}
	if !c.Now().Equal(start.Add(2500 * time.Millisecond)) {
		t.Fatalf("now = %v", c.Now())
	}
	if c.Pending() != 0 {
		t.Fatalf("pending = %d", c.Pending())
	}
}

func join(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += " "
		}
		out += x
	}
	return out
}
