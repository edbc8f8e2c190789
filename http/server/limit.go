package server

import (
	"net"
	"sync"
)

// DefaultMaxConns is a quarter of the process's file descriptor limit
// (between 64 and 4096): HTTP clients may take that many, and the rest stays
// for the NATS listener, its stores and the database, so that a flood of
// HTTP connections cannot keep agents from connecting.
func DefaultMaxConns() int {
	fds := fdLimit()
	if fds == 0 {
		return 1024
	}
	return int(min(max(fds/4, 64), 4096))
}

// limitListener closes accepted connections beyond a total and a
// per-client-address limit. A refused connection is closed at once rather
// than left in the kernel's accept queue, where it would hold a slot that
// a well-behaved client (a monitor polling /health) needs.
type limitListener struct {
	net.Listener
	max, maxPerClient int
	rejected          func(limit string)

	mu       sync.Mutex
	total    int
	byClient map[string]int
}

func newLimitListener(ln net.Listener, max, maxPerClient int, rejected func(string)) *limitListener {
	return &limitListener{Listener: ln, max: max, maxPerClient: maxPerClient, rejected: rejected, byClient: map[string]int{}}
}

// Accept returns the next connection within the limits.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		client := clientOf(c.RemoteAddr())
		if limit := l.acquire(client); limit != "" {
			if tc, ok := c.(*net.TCPConn); ok {
				// Reset rather than a graceful close: the client learns at
				// once, and no TIME_WAIT state is left behind per refusal.
				_ = tc.SetLinger(0)
			}
			_ = c.Close()
			if l.rejected != nil {
				l.rejected(limit)
			}
			continue
		}
		return &limitConn{Conn: c, l: l, client: client}, nil
	}
}

// acquire takes a slot for client, or names the limit that refuses it.
func (l *limitListener) acquire(client string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.total >= l.max:
		return "total"
	case l.byClient[client] >= l.maxPerClient:
		return "per_client"
	}
	l.total++
	l.byClient[client]++
	return ""
}

func (l *limitListener) release(client string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if n := l.byClient[client] - 1; n > 0 {
		l.byClient[client] = n
	} else {
		delete(l.byClient, client)
	}
}

func (l *limitListener) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// clientOf is the address's IP (the port differs per connection).
func clientOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// limitConn gives its slot back when closed (once, however often net/http
// closes it).
type limitConn struct {
	net.Conn
	l      *limitListener
	client string
	once   sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.client) })
	return err
}
