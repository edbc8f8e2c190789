package sim_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"kanade-backend/actors/clock"
	"kanade-backend/internal/sim"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
)

// With a ramp the agents come on one after another, each announcing itself
// with a heartbeat; an agent switched off before its turn stays off (no
// heartbeat, no run) until it is switched on again.
func TestRampAndSwitchOff(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	fake := clock.NewFake(epoch)
	var mu sync.Mutex
	var beats []string
	onHeartbeats(t, b.Conn, func(hb messages.Heartbeat) {
		mu.Lock()
		beats = append(beats, fmt.Sprintf("%s@%s", hb.PcID, hb.At.Sub(epoch)))
		mu.Unlock()
	})
	res := watchResults(t, b.Conn)
	// A heartbeat interval far beyond the test keeps the wheel out of it.
	f := startFleet(t, b, sim.Config{Agents: 4, Ramp: 4 * time.Second, Heartbeat: 1000 * time.Hour, Clock: fake})
	if err := f.SwitchOff("SIM-0004"); err != nil {
		t.Fatal(err)
	}
	if err := f.SwitchOff("SIM-0099"); err == nil {
		t.Fatal("switched off an agent that does not exist")
	}
	seen := func(want ...string) {
		t.Helper()
		testsupport.Eventually(t, 5*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(beats, want) {
				return fmt.Errorf("heartbeats %v, want %v", beats, want)
			}
			return nil
		})
	}
	seen("SIM-0001@0s")
	// A Command to an agent that is not on yet reaches nobody.
	publish(t, b.Conn, messages.CommandsPCSubject("SIM-0003"), command("early", "1", "echo hi"))
	res.none(t, 200*time.Millisecond)
	fake.Advance(time.Second)
	seen("SIM-0001@0s", "SIM-0002@1s")
	fake.Advance(3 * time.Second)
	seen("SIM-0001@0s", "SIM-0002@1s", "SIM-0003@2s")
	publish(t, b.Conn, messages.CommandsPCSubject("SIM-0004"), command("off", "1", "echo hi"))
	publish(t, b.Conn, messages.CommandsPCSubject("SIM-0003"), command("on", "1", "echo hi"))
	if r := res.next(t, 5*time.Second); r.PcID != "SIM-0003" || r.ExitCode != 0 {
		t.Fatalf("result %+v", r)
	}
	res.none(t, 200*time.Millisecond)
	// Switched on again: it announces itself and runs what it gets.
	if err := f.SwitchOn("SIM-0004"); err != nil {
		t.Fatal(err)
	}
	seen("SIM-0001@0s", "SIM-0002@1s", "SIM-0003@2s", "SIM-0004@4s")
	publish(t, b.Conn, messages.CommandsPCSubject("SIM-0004"), command("back", "1", "echo hi"))
	if r := res.next(t, 5*time.Second); r.PcID != "SIM-0004" || r.Stdout != "hi\n" {
		t.Fatalf("result %+v", r)
	}
}
