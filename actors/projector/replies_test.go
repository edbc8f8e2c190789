package projector

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"kanade-backend/storage/broker/brokertest"
)

// An ack, nak or term that cannot reach the server is counted by consumer
// and op, not dropped without a trace; replies that go through are not.
func TestRepliesCountFailures(t *testing.T) {
	b := brokertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := b.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "REPLIES", Subjects: []string{"replies.>"}})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := b.JS.Publish(ctx, "replies.x", []byte("m")); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "replies-test", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(5, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != 5 {
		t.Fatalf("fetched %d messages, want 5", len(msgs))
	}
	failures := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "f"}, []string{"consumer", "op"})
	r := replies{consumer: "replies-test", failures: failures}

	r.ack(msgs[:1])
	if n := testutil.ToFloat64(failures.WithLabelValues("replies-test", "ack")); n != 0 {
		t.Fatalf("a delivered ack counted as failed: %v", n)
	}
	b.Conn.Close()
	r.ack(msgs[1:3])
	r.nak(msgs[3:4], time.Second)
	r.term(msgs[4:])
	for op, want := range map[string]float64{"ack": 2, "nak": 1, "term": 1} {
		if n := testutil.ToFloat64(failures.WithLabelValues("replies-test", op)); n != want {
			t.Errorf("%s failures = %v, want %v", op, n, want)
		}
	}
}
