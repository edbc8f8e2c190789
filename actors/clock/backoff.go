package clock

import (
	"context"
	"time"
)

// Backoff paces a retry loop: the first wait is Min, each next one doubles,
// up to Max; Reset (after a success) starts again at Min. It is the one
// backoff of the code base, so every retry loop waits and logs the same
// way. A Backoff belongs to one loop (it is not safe for concurrent use);
// its zero value with Min and Max set is ready.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// Next returns the wait before the next attempt and advances the pacing.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.Min
	} else {
		b.cur = min(2*b.cur, b.Max)
	}
	return b.cur
}

// Reset makes the next wait Min again.
func (b *Backoff) Reset() { b.cur = 0 }

// Wait waits Next() on c, or until ctx ends; it reports whether to carry
// on (false: ctx ended).
func (b *Backoff) Wait(ctx context.Context, c Clock) bool { return Sleep(ctx, c, b.Next()) }

// Sleep waits d on c, or until ctx ends; it reports whether to carry on
// (false: ctx ended). On a Fake clock it returns once a test advances the
// clock by d.
func Sleep(ctx context.Context, c Clock, d time.Duration) bool {
	if ctx.Err() != nil {
		return false
	}
	fired := make(chan struct{})
	t := c.AfterFunc(d, func() { close(fired) })
	defer t.Stop()
	select {
	case <-fired:
		return true
	case <-ctx.Done():
		return false
	}
}
