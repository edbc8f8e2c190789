package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Embedded is the embedded nats-server. It can be restarted in place
// (Restart) with the same options, store and listen address: a JetStream
// store that hit a write error (disk full) stays broken inside a running
// server, and a fresh server recovers it from disk. In-process clients
// follow the restart because Embedded is their InProcessConnProvider (the
// client reconnects to whichever server is current); TCP clients reconnect
// to the same port.
type Embedded struct {
	opts  EmbeddedOptions
	sopts server.Options // template; Port is the bound port after the first start

	mu     sync.Mutex
	ns     *server.Server // nil while a restart failed to start a server
	closed bool           // Shutdown was called: no restart after it
}

// StartEmbedded starts a nats-server with JetStream and waits until it
// accepts connections.
func StartEmbedded(opts EmbeddedOptions) (*Embedded, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	e := &Embedded{opts: opts, sopts: server.Options{
		ServerName:             "kanade-backend",
		JetStream:              true,
		StoreDir:               opts.StoreDir,
		Authorization:          opts.Token,
		NoSigs:                 true, // the application owns signal handling
		MaxPayload:             8 << 20,
		DisableJetStreamBanner: true,
	}}
	applyLimits(&e.sopts)
	if opts.Callout != nil {
		if err := opts.Callout.apply(&e.sopts); err != nil {
			return nil, err
		}
	}
	if opts.Listen == "" || opts.Listen == "off" {
		e.sopts.DontListen = true
	} else {
		host, port, err := splitHostPort(opts.Listen)
		if err != nil {
			return nil, fmt.Errorf("nats listen address %q: %w", opts.Listen, err)
		}
		e.sopts.Host, e.sopts.Port = host, port
	}
	ns, err := e.start()
	if err != nil {
		return nil, err
	}
	if addr, ok := ns.Addr().(*net.TCPAddr); ok {
		// A restart binds the same port, even when the first start picked
		// a free one: agents reconnect to the URL they know.
		e.sopts.Port = addr.Port
	}
	e.ns = ns
	if opts.Store != nil {
		opts.Store.attach(e)
	}
	return e, nil
}

func (e *Embedded) start() (*server.Server, error) {
	sopts := e.sopts // NewServer keeps and amends the options it is given
	ns, err := server.NewServer(&sopts)
	if err != nil {
		return nil, fmt.Errorf("create embedded nats server: %w", err)
	}
	ns.SetLoggerV2(&serverLogger{l: e.opts.Logger.With("component", "nats-server"), store: e.opts.Store}, false, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded nats server not ready within 10s (listen %q)", e.opts.Listen)
	}
	return ns, nil
}

// Server is the running server (nil while a restart is failing).
func (e *Embedded) Server() *server.Server {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ns
}

// errServerDown is what in-process clients get while no server runs.
var errServerDown = errors.New("embedded nats server is restarting")

// InProcessConn connects in-process to the current server.
func (e *Embedded) InProcessConn() (net.Conn, error) {
	ns := e.Server()
	if ns == nil {
		return nil, errServerDown
	}
	return ns.InProcessConn()
}

// ClientURL is the TCP URL agents use ("" when not listening).
func (e *Embedded) ClientURL() string {
	if e.sopts.DontListen {
		return ""
	}
	if ns := e.Server(); ns != nil {
		return ns.ClientURL()
	}
	return fmt.Sprintf("nats://%s", net.JoinHostPort(e.sopts.Host, fmt.Sprint(e.sopts.Port)))
}

// StoreDir is the directory given as the server's store.
func (e *Embedded) StoreDir() string { return e.opts.StoreDir }

// Restart shuts the server down (clients are disconnected; streams,
// consumers and KV buckets stay on disk) and starts a new one with the
// same options. If the new one cannot start, Server is nil until a later
// Restart succeeds.
func (e *Embedded) Restart() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return errors.New("embedded nats server is shut down")
	}
	old := e.ns
	e.ns = nil
	e.mu.Unlock()
	if old != nil {
		old.Shutdown()
		old.WaitForShutdown()
	}
	ns, err := e.start()
	if err != nil {
		return err
	}
	e.mu.Lock()
	closed := e.closed
	if !closed {
		e.ns = ns
	}
	e.mu.Unlock()
	if closed {
		ns.Shutdown()
		ns.WaitForShutdown()
		return errors.New("embedded nats server shut down during a restart")
	}
	return nil
}

// Shutdown stops the server and waits for it.
func (e *Embedded) Shutdown() {
	e.mu.Lock()
	ns := e.ns
	e.ns, e.closed = nil, true
	e.mu.Unlock()
	if ns != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
	}
}
