// Package broker owns the backend's side of NATS: the embedded nats-server
// that is the zero-configuration default, the client connection (in-process
// or to an external server, reconnecting forever), and the JetStream
// resources of wire.md §3, which it creates or updates at every start.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// EmbeddedOptions configure the embedded server.
type EmbeddedOptions struct {
	// StoreDir holds the JetStream file store.
	StoreDir string
	// Listen is "host:port" for agents and the CLI, or "" / "off" to accept
	// in-process connections only.
	Listen string
	// Token, when set, is required from every client (KANADE_NATS_TOKEN).
	Token string
	// Callout, when set, authorizes clients through the backend's auth
	// callout instead (auth.go); Token is then left to the callout.
	Callout *CalloutOptions
	Logger  *slog.Logger
	// Store, when set, watches the server's log for store failures and
	// recovers them by restarting the server (see StoreHealth).
	Store *StoreHealth
}

// ConnectOptions configure Connect.
type ConnectOptions struct {
	// URL of an external server; ignored when InProcess is set.
	URL string
	// InProcess connects to an embedded server without a socket (an
	// *Embedded, which the connection follows across restarts, or a
	// *server.Server).
	InProcess nats.InProcessConnProvider
	Token     string
	// User and Password authenticate as a configured user instead (the
	// backend's service user when the server runs the auth callout).
	User, Password string
	// Name shows up in the server's connection list.
	Name   string
	Logger *slog.Logger
	// OnStateChange is told about disconnects and reconnects (for health and
	// metrics). It may be nil.
	OnStateChange func(connected bool)
}

// Connect opens the client connection. Against an external server it
// retries the first connection and reconnects forever with backoff, so the
// API stays up and reports degraded health while NATS is away.
func Connect(opts ConnectOptions) (*nats.Conn, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	log := opts.Logger.With("component", "nats")
	notify := func(up bool) {
		if opts.OnStateChange != nil {
			opts.OnStateChange(up)
		}
	}
	nopts := []nats.Option{
		nats.Name(opts.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectJitter(500*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(true),
		// No reconnect buffer: while NATS is away a publish (and so every
		// KV or JetStream request) fails at once with
		// ErrReconnectBufExceeded instead of waiting in a buffer until its
		// caller's timeout, so an operation that needs NATS answers 503
		// within moments (IsUnavailable) and a Command that did not go
		// out is known not to have gone out.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			notify(false)
			// A nil error is our own Drain/Close at shutdown, not an outage.
			if err != nil && !c.IsClosed() && !c.IsDraining() {
				log.Warn("disconnected from NATS; reconnecting", "err", err)
			}
		}),
		// With RetryOnFailedConnect a first connection made late is a
		// connect, not a reconnect: without this the state stayed "down".
		nats.ConnectHandler(func(c *nats.Conn) {
			log.Info("connected to NATS", "url", c.ConnectedUrlRedacted())
			notify(true)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("reconnected to NATS", "url", c.ConnectedUrlRedacted())
			notify(true)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("NATS async error", "subject", subject, "err", err)
		}),
	}
	if opts.Token != "" {
		nopts = append(nopts, nats.Token(opts.Token))
	}
	if opts.User != "" {
		nopts = append(nopts, nats.UserInfo(opts.User, opts.Password))
	}
	url := opts.URL
	if opts.InProcess != nil {
		nopts = append(nopts, nats.InProcessServer(opts.InProcess))
		url = ""
	}
	nc, err := nats.Connect(url, nopts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS %s: %w", redact(url), err)
	}
	notify(nc.IsConnected())
	return nc, nil
}

// WaitConnected blocks until nc is connected or ctx ends; with
// RetryOnFailedConnect the first connection may still be pending.
func WaitConnected(ctx context.Context, nc *nats.Conn) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !nc.IsConnected() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for NATS connection: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// ErrNATSUnavailable is what operations that need NATS fail with while the
// connection is down; its text is what the API answers with (503).
var ErrNATSUnavailable = errors.New("nats unavailable")

// ErrNATSDown is ErrNATSUnavailable when the connection itself says so.
var ErrNATSDown = fmt.Errorf("%w: the backend is not connected to NATS (reconnecting); try again later", ErrNATSUnavailable)

// IsUnavailable reports whether err says the NATS connection is down (or
// not up yet): the operation failed without reaching NATS.
func IsUnavailable(err error) bool {
	return errors.Is(err, ErrNATSUnavailable) ||
		errors.Is(err, nats.ErrReconnectBufExceeded) ||
		errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, nats.ErrConnectionClosed) ||
		errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, nats.ErrNoServers) ||
		errors.Is(err, jetstream.ErrConnectionClosed)
}
