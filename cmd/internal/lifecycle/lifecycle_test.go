package lifecycle

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestStartInOrderStopInReverse(t *testing.T) {
	var log []string
	g := New(nil)
	add := func(name string) {
		g.Add(name,
			func(context.Context) error { log = append(log, "start "+name); return nil },
			func(context.Context) error { log = append(log, "stop "+name); return nil })
	}
	add("a")
	add("b")
	add("c")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Run(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	want := "start a,start b,start c,stop c,stop b,stop a"
	if got := strings.Join(log, ","); got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
}

func TestStartFailureStopsOnlyStarted(t *testing.T) {
	var log []string
	g := New(nil)
	g.Add("a", func(context.Context) error { return nil }, func(context.Context) error { log = append(log, "stop a"); return nil })
	g.Add("b", func(context.Context) error { return errors.New("no port") }, func(context.Context) error { log = append(log, "stop b"); return nil })
	g.Add("c", func(context.Context) error { log = append(log, "start c"); return nil }, nil)
	err := g.Run(context.Background(), time.Second)
	if err == nil || !strings.Contains(err.Error(), "start b: no port") {
		t.Fatalf("err = %v", err)
	}
	if got := strings.Join(log, ","); got != "stop a" {
		t.Fatalf("log = %s", got)
	}
}

func TestFatalStopsTheGroup(t *testing.T) {
	g := New(nil)
	stopped := false
	g.Add("listener", func(context.Context) error {
		go g.Fatal(errors.New("listener died"))
		return nil
	}, func(context.Context) error { stopped = true; return nil })
	err := g.Run(context.Background(), time.Second)
	if err == nil || !strings.Contains(err.Error(), "listener died") || !stopped {
		t.Fatalf("err=%v stopped=%v", err, stopped)
	}
}

func TestStopDeadlineIsShared(t *testing.T) {
	// Two components: the one added last stops first and takes a second;
	// the one stopped after it must see the same deadline, now a second
	// closer, not a fresh stopTimeout of its own.
	g := New(nil)
	deadlines := map[string]time.Time{}
	var secondLeft time.Duration
	g.Add("first", func(context.Context) error { return nil }, func(ctx context.Context) error {
		d, _ := ctx.Deadline()
		deadlines["first"] = d
		secondLeft = time.Until(d)
		return nil
	})
	g.Add("slow", func(context.Context) error { return nil }, func(ctx context.Context) error {
		d, _ := ctx.Deadline()
		deadlines["slow"] = d
		time.Sleep(time.Second)
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = g.Run(ctx, 3*time.Second)
	if deadlines["first"].IsZero() || !deadlines["first"].Equal(deadlines["slow"]) {
		t.Fatalf("stop deadlines %v, want one shared deadline", deadlines)
	}
	if secondLeft <= 0 || secondLeft > 2*time.Second+100*time.Millisecond {
		t.Fatalf("the component stopped after a 1s stop had %v left of 3s, want at most about 2s", secondLeft)
	}
}
