package assets_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/messages"
)

// fakeFleet is a handful of agents speaking the wire contract just enough
// for the dashboard's tests: heartbeats every second, an ExecResult for
// every Command addressed to them, and an answer to logs.fetch. Scripts
// follow the simulator's convention: "echo-json <json>" prints the JSON,
// "exit <n>" exits n, anything else prints a greeting.
type fakeFleet struct {
	nc     *nats.Conn
	ids    []string
	groups map[string][]string // group → pcs
	stop   chan struct{}
	wg     sync.WaitGroup
}

func startFakeFleet(t *testing.T, natsURL string, n int, groupsOf func(i int) []string) *fakeFleet {
	t.Helper()
	nc, err := nats.Connect(natsURL, nats.Name("dashboard-test-fleet"))
	if err != nil {
		t.Fatalf("fleet connect: %v", err)
	}
	f := &fakeFleet{nc: nc, groups: map[string][]string{}, stop: make(chan struct{})}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, messages.BucketAgentGroups)
	if err != nil {
		t.Fatalf("agent_groups bucket: %v", err)
	}
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("SIM-%04d", i)
		f.ids = append(f.ids, id)
		gs := groupsOf(i)
		for _, g := range gs {
			f.groups[g] = append(f.groups[g], id)
		}
		b, _ := json.Marshal(messages.AgentGroups{Groups: gs})
		if _, err := kv.Put(ctx, id, b); err != nil {
			t.Fatalf("put groups of %s: %v", id, err)
		}
	}
	if _, err := nc.Subscribe("commands.>", f.onCommand); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe("logs.fetch.*", func(m *nats.Msg) {
		pc := strings.TrimPrefix(m.Subject, "logs.fetch.")
		_ = m.Respond([]byte("INFO agent " + pc + " started\nINFO heartbeat sent\n"))
	}); err != nil {
		t.Fatal(err)
	}
	f.wg.Add(1)
	go f.heartbeats()
	t.Cleanup(func() {
		close(f.stop)
		f.wg.Wait()
		nc.Close()
	})
	return f
}

func (f *fakeFleet) heartbeats() {
	defer f.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		for _, id := range f.ids {
			host, osf := strings.ToLower(id), messages.OSWindows
			b, _ := json.Marshal(messages.Heartbeat{PcID: id, At: time.Now().UTC(), AgentVersion: "0.21.2", Hostname: &host, OsFamily: &osf})
			_ = f.nc.Publish(messages.HeartbeatSubject(id), b)
		}
		select {
		case <-f.stop:
			return
		case <-tick.C:
		}
	}
}

func (f *fakeFleet) onCommand(m *nats.Msg) {
	var c messages.Command
	if err := json.Unmarshal(m.Data, &c); err != nil {
		return
	}
	var pcs []string
	switch rest := strings.TrimPrefix(m.Subject, "commands."); {
	case rest == "all":
		pcs = f.ids
	case strings.HasPrefix(rest, "group."):
		pcs = f.groups[strings.TrimPrefix(rest, "group.")]
	case strings.HasPrefix(rest, "pc."):
		pcs = []string{strings.TrimPrefix(rest, "pc.")}
	}
	for _, pc := range pcs {
		started := time.Now().UTC()
		code, out := 0, "hello from "+pc+"\n"
		script := strings.TrimSpace(c.Script)
		switch {
		case strings.HasPrefix(script, "echo-json "):
			out = strings.TrimPrefix(script, "echo-json ")
		case strings.HasPrefix(script, "exit "):
			code = int(script[len(script)-1] - '0')
		}
		r := messages.ExecResult{RequestID: c.RequestID, PcID: pc, ExitCode: code, Stdout: out,
			StartedAt: started, FinishedAt: started.Add(150 * time.Millisecond)}
		if c.ID != "" {
			id := c.ID
			r.ManifestID = &id
		}
		b, _ := json.Marshal(r)
		_ = f.nc.Publish(messages.ResultsSubject(c.RequestID), b)
	}
}
