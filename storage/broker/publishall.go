package broker

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// AsyncPublisher is the part of JetStream PublishAll needs.
type AsyncPublisher interface {
	PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error)
}

var _ AsyncPublisher = (jetstream.JetStream)(nil)

// PublishWindow is how many of PublishAll's messages wait for their
// acknowledgement at once: well under the client's limit of outstanding
// asynchronous publishes (4 000 by default, shared by the whole
// connection), past which a publish stalls and then fails.
const PublishWindow = 512

// PublishAll stores msgs in JetStream with pipelined asynchronous
// publishes, PublishWindow acknowledgements outstanding at a time, and
// returns one error per message (nil: the stream stored it). A thousand
// small messages cost a few round trips instead of a thousand. ctx bounds
// the wait for acknowledgements: a message still unacknowledged when it
// ends counts as failed (it may still be stored).
func PublishAll(ctx context.Context, js AsyncPublisher, msgs []*nats.Msg, opts ...jetstream.PublishOpt) []error {
	errs := make([]error, len(msgs))
	for start := 0; start < len(msgs); start += PublishWindow {
		end := min(start+PublishWindow, len(msgs))
		if err := ctx.Err(); err != nil {
			for i := start; i < len(msgs); i++ {
				errs[i] = fmt.Errorf("publish on %s: not sent: %w", msgs[i].Subject, err)
			}
			break
		}
		futures := make([]jetstream.PubAckFuture, end-start)
		for i := start; i < end; i++ {
			f, err := js.PublishMsgAsync(msgs[i], opts...)
			if err != nil {
				errs[i] = fmt.Errorf("publish on %s: %w", msgs[i].Subject, err)
				continue
			}
			futures[i-start] = f
		}
		for i, f := range futures {
			if f == nil {
				continue
			}
			select {
			case <-f.Ok():
			case err := <-f.Err():
				errs[start+i] = fmt.Errorf("publish on %s: %w", msgs[start+i].Subject, err)
			case <-ctx.Done():
				errs[start+i] = fmt.Errorf("publish on %s: no acknowledgement: %w", msgs[start+i].Subject, ctx.Err())
			}
		}
	}
	return errs
}
