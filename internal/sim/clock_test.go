package sim_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"kanade-backend/actors/clock"
	"kanade-backend/internal/sim"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
)

var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// Heartbeats start at random phases within the interval and keep them:
// with a fake clock, each agent beats exactly once per interval, exactly
// one interval apart.
func TestHeartbeatPhases(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	fake := clock.NewFake(epoch)
	var mu sync.Mutex
	beats := map[string][]time.Time{}
	onHeartbeats(t, b.Conn, func(hb messages.Heartbeat) {
		mu.Lock()
		beats[hb.PcID] = append(beats[hb.PcID], hb.At)
		mu.Unlock()
	})
	const n = 20
	startFleet(t, b, sim.Config{Agents: n, Heartbeat: 30 * time.Second, Clock: fake})
	count := func() (total int) {
		mu.Lock()
		defer mu.Unlock()
		for _, v := range beats {
			total += len(v)
		}
		return total
	}
	if count() != 0 {
		t.Fatal("heartbeat before the first phase")
	}
	for round := 1; round <= 3; round++ {
		fake.Advance(30 * time.Second)
		testsupport.Eventually(t, 5*time.Second, func() error {
			if c := count(); c != round*n {
				return fmt.Errorf("%d heartbeats after round %d", c, round)
			}
			return nil
		})
	}
	mu.Lock()
	defer mu.Unlock()
	phases := map[time.Duration]bool{}
	for id, at := range beats {
		if len(at) != 3 {
			t.Fatalf("%s beat %d times", id, len(at))
		}
		phase := at[0].Sub(epoch)
		if phase <= 0 || phase > 30*time.Second || at[1].Sub(at[0]) != 30*time.Second || at[2].Sub(at[1]) != 30*time.Second {
			t.Fatalf("%s beats at %v", id, at)
		}
		phases[phase] = true
	}
	if len(phases) < n/2 {
		t.Fatalf("phases not spread: %d distinct of %d", len(phases), n)
	}
}

// Jitter delays a run by a random whole number of seconds in
// [0, jitter_secs).
func TestJitter(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	fake := clock.NewFake(epoch)
	// A long heartbeat keeps its timer out of the way of the jitter timers.
	startFleet(t, b, sim.Config{Agents: 1, Heartbeat: 1000 * time.Hour, Clock: fake})
	res := watchResults(t, b.Conn)
	testsupport.Eventually(t, 5*time.Second, func() error {
		if fake.Pending() != 1 {
			return fmt.Errorf("agent not started")
		}
		return nil
	})
	const cmds, jitter = 8, 10
	for range cmds {
		cmd := command("spread", "1", "echo hi")
		j := uint64(jitter)
		cmd.JitterSecs = &j
		publish(t, b.Conn, messages.CommandsPCSubject("SIM-0001"), cmd)
	}
	var got []messages.ExecResult
	collect := func(want int) {
		t.Helper()
		for len(got) < want {
			got = append(got, res.next(t, 5*time.Second))
		}
	}
	// Every Command either ran at once (jitter 0) or armed a timer.
	var delayed int
	testsupport.Eventually(t, 5*time.Second, func() error {
		delayed = fake.Pending() - 1
		if len(got)+len(res.ch)+delayed != cmds {
			return fmt.Errorf("%d results, %d delayed", len(got)+len(res.ch), delayed)
		}
		return nil
	})
	collect(cmds - delayed)
	for s := 1; s <= jitter; s++ {
		fake.Advance(time.Second)
		collect(cmds - (fake.Pending() - 1))
	}
	if len(got) != cmds || fake.Pending() != 1 {
		t.Fatalf("%d results, %d timers left", len(got), fake.Pending()-1)
	}
	offsets := map[time.Duration]bool{}
	for _, r := range got {
		off := r.StartedAt.Sub(epoch)
		if off < 0 || off >= jitter*time.Second || off%time.Second != 0 || r.Stdout != "hi\n" {
			t.Fatalf("result started at +%v: %+v", off, r)
		}
		offsets[off] = true
	}
	if len(offsets) < 3 {
		t.Fatalf("jitter not random: offsets %v", offsets)
	}
}
