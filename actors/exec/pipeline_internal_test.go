package exec

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"kanade-backend/messages"
	"kanade-backend/storage/execrecord"
)

// blockingRecorder stands for the EXEC stream where a test must see the
// context a store runs under: it reports each call's context (and whether
// it had already ended then) and, when block is set, waits until that
// context ends.
type blockingRecorder struct {
	block bool
	calls chan storeCall
}

type storeCall struct {
	ctx   context.Context
	ended error // ctx.Err() when the store began
}

func (r *blockingRecorder) Publish(ctx context.Context, _ *execrecord.Record) error {
	return r.call(ctx)
}

func (r *blockingRecorder) PublishNew(ctx context.Context, recs []*execrecord.Record) []error {
	err := r.call(ctx)
	errs := make([]error, len(recs))
	for i := range errs {
		errs[i] = err
	}
	return errs
}

func (r *blockingRecorder) call(ctx context.Context) error {
	r.calls <- storeCall{ctx: ctx, ended: ctx.Err()}
	if r.block {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

type noAudit struct{}

func (noAudit) PublishAll(_ context.Context, evs []messages.AuditEvent) []error {
	return make([]error, len(evs))
}

func testPipeline(base context.Context, rec Recorder) *pipeline {
	d := &Deps{Records: rec, Audit: noAudit{}, Metrics: NewMetrics(nil), Context: base}
	return newPipeline(d, slog.New(slog.NewTextHandler(io.Discard, nil)), actor.NewPID("local", "engine"), func(*actor.PID, any) {})
}

func oneRecord() *handoff {
	return &handoff{fresh: []*execrecord.Record{{Exec: execrecord.Exec{}}}}
}

// The app cancels the base context before the engine stops; what the
// pipeline still holds is stored at stop all the same, under a live
// context.
func TestPipelineStoresWhatItHoldsAfterTheBaseEnds(t *testing.T) {
	base, cancel := context.WithCancel(context.Background())
	rec := &blockingRecorder{calls: make(chan storeCall, 1)}
	p := testPipeline(base, rec)
	p.push(oneRecord())
	cancel()
	p.stop(10 * time.Second)
	select {
	case c := <-rec.calls:
		if c.ended != nil {
			t.Fatalf("the held record was stored under an ended context: %v", c.ended)
		}
	default:
		t.Fatal("the held record was not stored at stop")
	}
}

// A store still running when stop's grace ends is cancelled, not left to
// run opTimeout after the backend stopped.
func TestPipelineStopCancelsAStoreStillRunning(t *testing.T) {
	rec := &blockingRecorder{block: true, calls: make(chan storeCall, 1)}
	p := testPipeline(context.Background(), rec)
	p.push(oneRecord())
	p.release()
	c := <-rec.calls // the store is running, blocked
	p.stop(10 * time.Millisecond)
	select {
	case <-c.ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the running store's context did not end with the stop")
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the pipeline did not end after its store was cancelled")
	}
}
