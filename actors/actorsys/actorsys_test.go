package actorsys_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/goleak"

	"kanade-backend/actors/actorsys"
)

type stopRecorder struct {
	name string
	log  *[]string
	mu   *sync.Mutex
}

func (s *stopRecorder) Receive(c actor.Context) {
	if _, ok := c.Message().(*actor.Stopping); ok {
		s.mu.Lock()
		*s.log = append(*s.log, s.name)
		s.mu.Unlock()
	}
}

// Stop stops actors in the given order and leaves no goroutine behind.
func TestStopOrderAndNoLeaks(t *testing.T) {
	defer goleak.VerifyNone(t)

	var buf bytes.Buffer
	sys := actorsys.New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	var order []string
	var mu sync.Mutex
	spawn := func(name string) *actor.PID {
		pid, err := sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor {
			return &stopRecorder{name: name, log: &order, mu: &mu}
		}), name)
		if err != nil {
			t.Fatal(err)
		}
		return pid
	}
	a, b, c := spawn("a"), spawn("b"), spawn("c")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := actorsys.Stop(ctx, sys, c, b, a); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(order, "") != "cba" {
		t.Fatalf("stop order = %v", order)
	}
	// The library's Info chatter ("actor system started") is demoted to
	// Debug and must not reach an Info-level log.
	if strings.Contains(buf.String(), "actor system started") {
		t.Fatalf("library info leaked into the application log: %s", buf.String())
	}
}

type panicker struct{ starts *int32m }

type int32m struct {
	mu sync.Mutex
	n  int
}

func (p *panicker) Receive(c actor.Context) {
	switch c.Message().(type) {
	case *actor.Started:
		p.starts.mu.Lock()
		p.starts.n++
		p.starts.mu.Unlock()
	case string:
		panic("boom")
	}
}

type parent struct {
	child      *actor.PID
	starts     *int32m
	terminated chan struct{}
}

func (p *parent) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		p.child = c.Spawn(actor.PropsFromProducer(func() actor.Actor { return &panicker{starts: p.starts} }))
	case string:
		c.Send(p.child, m)
	case *actor.Terminated:
		close(p.terminated)
	}
}

// RestartLimited restarts a failing child, reports each failure, and stops
// it for good after too many failures in the window.
func TestRestartLimited(t *testing.T) {
	sys := actorsys.New(slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)))
	defer sys.Shutdown()
	var failures int
	var fmu sync.Mutex
	p := &parent{starts: &int32m{}, terminated: make(chan struct{})}
	props := actor.PropsFromProducer(func() actor.Actor { return p },
		actor.WithSupervisor(actorsys.RestartLimited(2, time.Minute, func(*actor.PID, any) {
			fmu.Lock()
			failures++
			fmu.Unlock()
		})))
	pid := sys.Root.Spawn(props)
	for i := 0; i < 3; i++ {
		sys.Root.Send(pid, "crash")
	}
	select {
	case <-p.terminated:
	case <-time.After(5 * time.Second):
		t.Fatal("child was not stopped after exceeding the restart limit")
	}
	fmu.Lock()
	defer fmu.Unlock()
	p.starts.mu.Lock()
	defer p.starts.mu.Unlock()
	if failures != 3 || p.starts.n != 3 {
		t.Fatalf("failures=%d starts=%d, want 3 and 3 (1 start + 2 restarts)", failures, p.starts.n)
	}
}

// Ask returns the answer; an actor that does not answer costs the timeout
// (shortened to the caller's deadline); a caller out of time is not asked.
func TestAsk(t *testing.T) {
	sys := actorsys.New(nil)
	echo := sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		if s, ok := c.Message().(string); ok && s != "silent" {
			c.Respond(s + "!")
		}
	}))
	t.Cleanup(func() { _ = actorsys.Stop(context.Background(), sys, echo) })

	res, _, err := actorsys.Ask(context.Background(), sys.Root, echo, "hi", time.Second)
	if err != nil || res != "hi!" {
		t.Fatalf("Ask = %v, %v", res, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, waited, err := actorsys.Ask(ctx, sys.Root, echo, "silent", time.Minute)
	if !errors.Is(err, actor.ErrTimeout) || waited > 100*time.Millisecond || time.Since(start) > 10*time.Second {
		t.Fatalf("silent actor: err %v, waited %v, took %v", err, waited, time.Since(start))
	}
	<-ctx.Done()
	if _, _, err := actorsys.Ask(ctx, sys.Root, echo, "hi", time.Minute); !errors.Is(err, actorsys.ErrNotAsked) {
		t.Fatalf("ended context: %v", err)
	}
}
