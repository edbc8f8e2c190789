package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
)

// DefaultConnectTimeout is how long kanade-fleet tries to reach NATS
// before it gives up and exits 1.
const DefaultConnectTimeout = 10 * time.Second

// retryEvery is the pause between two connection attempts.
const retryEvery = time.Second

// Dial connects the kanade-fleet command to NATS. Unlike the backend,
// which waits for NATS forever, an operator trying the simulator needs to
// know at once why nothing happens: every failed attempt is logged with
// its reason (refused, authorization, timeout), and when ctx ends first
// the error says why the last attempt failed. Once connected, the
// connection reconnects forever like any agent's.
func Dial(ctx context.Context, url, token string, log *slog.Logger) (*nats.Conn, error) {
	dialer := &recordingDialer{}
	opts := []nats.Option{
		nats.SetCustomDialer(dialer),
		nats.Name("kanade-fleet"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(retryEvery),
		nats.ReconnectJitter(500*time.Millisecond, time.Second),
		// A stop closes the connection on purpose: no callbacks after it,
		// so nothing is logged as if NATS had gone away.
		nats.NoCallbacksAfterClientClose(),
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			if err != nil && !c.IsClosed() && !c.IsDraining() {
				log.Warn("disconnected from NATS; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("reconnected to NATS", "url", c.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("NATS async error", "subject", subject, "err", err)
		}),
	}
	if token != "" {
		opts = append(opts, nats.Token(token))
	}
	for attempt := 1; ; attempt++ {
		timeout := 2 * time.Second
		if d, ok := ctx.Deadline(); ok {
			timeout = min(timeout, max(time.Until(d), 100*time.Millisecond))
		}
		dialer.reset(timeout)
		nc, err := nats.Connect(url, append(opts, nats.Timeout(timeout))...)
		if errors.Is(err, nats.ErrNoServers) {
			// nats.go reports a refused dial as "no servers available";
			// the dial itself says why.
			if cause := dialer.lastErr(); cause != nil {
				err = cause
			}
		}
		if err == nil {
			if attempt > 1 {
				log.Info("connected to NATS", "url", nc.ConnectedUrlRedacted(), "attempt", attempt)
			}
			return nc, nil
		}
		why := Reason(err)
		log.Warn("NATS connection attempt failed", "url", url, "attempt", attempt, "reason", why, "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no connection to NATS %s after %d attempt%s: %s: %w", url, attempt, plural(attempt), why, err)
		case <-time.After(retryEvery):
		}
	}
}

// recordingDialer dials like nats.go's default dialer and keeps the last
// dial error, which nats.Connect replaces by ErrNoServers.
type recordingDialer struct {
	mu   sync.Mutex
	d    net.Dialer
	last error
}

func (r *recordingDialer) Dial(network, address string) (net.Conn, error) {
	r.mu.Lock()
	d := r.d
	r.mu.Unlock()
	c, err := d.Dial(network, address)
	r.mu.Lock()
	r.last = err
	r.mu.Unlock()
	return c, err
}

func (r *recordingDialer) reset(timeout time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.d.Timeout, r.last = timeout, nil
}

func (r *recordingDialer) lastErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// Reason names why a connection attempt failed, in the words an operator
// acts on.
func Reason(err error) string {
	var dns *net.DNSError
	var nerr net.Error
	msg := strings.ToLower(err.Error())
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused (nothing listens there: is the backend running, and is --nats-url right?)"
	case errors.Is(err, nats.ErrAuthorization) || strings.Contains(msg, "authorization"):
		return "authorization violation (the server wants another token: set KANADE_NATS_TOKEN to the backend's)"
	case errors.As(err, &dns):
		return "unknown host"
	case errors.Is(err, nats.ErrTimeout) || errors.As(err, &nerr) && nerr.Timeout():
		return "timed out (a firewall, or the wrong address?)"
	}
	return "error"
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
