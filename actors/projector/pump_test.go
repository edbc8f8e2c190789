package projector

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/messages"
	"kanade-backend/storage/broker/brokertest"
)

// A backlog is written in larger transactions: with 400 results already
// in the stream, the batches after the first are of BacklogBatchSize (40)
// while at least 40 wait behind them, then of BatchSize (10) again: 13
// transactions, where BatchSize alone takes 40.
func TestBacklogGrowsTheBatch(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: Config{BatchSize: 10, BacklogBatchSize: 40}})
	var msgs []pubMsg
	for i := range 400 {
		msgs = append(msgs, result("req-backlog", fmt.Sprintf("pc-%03d", i), 0, "x", ""))
	}
	publishJS(t, h.broker.JS, msgs)
	h.start()
	h.waitCount("execution_results", 400, 10*time.Second)
	h.consumerIdle(messages.StreamResults, DurableResults)
	batches := h.metric("kanade_projection_batch_size", "projection", ProjResults)
	if batches < 10 || batches >= 40 {
		t.Fatalf("400 backlogged results applied in %v batches, want 10–39 (batches of 40 while the backlog lasts)", batches)
	}
}

// The read-ahead grows only for a backlog of at least backlogBatch
// messages, and not when the batch in hand says that many would hold more
// than backlogBytes (real messages from a real consumer: NumPending is
// the broker's).
func TestReadAheadGrowsForSmallMessagesOnly(t *testing.T) {
	br := brokertest.Start(t)
	large := pubMsg{subject: messages.ResultsSubject("req-large"), data: make([]byte, 512<<10)}
	small := result("req-small", "pc-1", 0, "x", "")
	// 3 large, 3 small, then 100 small behind them.
	var msgs []pubMsg
	for range 3 {
		msgs = append(msgs, large)
	}
	for range 103 {
		msgs = append(msgs, small)
	}
	publishJS(t, br.JS, msgs)
	ctx := context.Background()
	cons, err := br.JS.CreateConsumer(ctx, messages.StreamResults, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy})
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(n int) []jetstream.Msg {
		t.Helper()
		b, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got, err := drain(b, nil)
		if err != nil || len(got) != n {
			t.Fatalf("fetched %d of %d (%v)", len(got), n, err)
		}
		return got
	}
	cfg := pumpConfig{batch: 3, backlogBatch: 100}
	// 512 KiB × 100 > backlogBytes: stays at batch although 103 wait.
	if got := cfg.readAhead(fetch(3)); got != 3 {
		t.Fatalf("after 3 large messages with 103 behind: read-ahead %d, want 3", got)
	}
	// Small messages with 100 behind: the backlog batch.
	if got := cfg.readAhead(fetch(3)); got != 100 {
		t.Fatalf("after 3 small messages with 100 behind: read-ahead %d, want 100", got)
	}
	// 99 behind: below the backlog batch, back to batch.
	if got := cfg.readAhead(fetch(1)); got != 3 {
		t.Fatalf("after 1 small message with 99 behind: read-ahead %d, want 3", got)
	}
	// Without a backlog batch configured above batch, always batch.
	if got := (pumpConfig{batch: 3}).readAhead(fetch(3)); got != 3 {
		t.Fatalf("without a backlog batch: read-ahead %d, want 3", got)
	}
}
