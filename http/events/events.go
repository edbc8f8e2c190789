// Package events serves GET /api/events, the Server-Sent Events stream the
// dashboard keeps open to update live. Each request joins the live hub
// (actors/live), which owns the fan-out; this package only copies the
// hub's ready-encoded frames to the connection and ends the stream when the
// client goes away, the hub drops it, or the server shuts down.
//
// Browsers' EventSource cannot set headers, so the token may come as
// ?access_token= on this route (http/auth accepts it for event-stream
// GETs only).
package events

import (
	"errors"
	"net/http"
	"sync"
	"time"

	"kanade-backend/http/httpx"
	"kanade-backend/http/server"
)

// Hub is the live-event source (actors/live.Hub). Join returns the channel
// frames arrive on, closed when the hub drops the client, and the function
// that leaves the hub.
type Hub interface {
	Join(lastEventID string) (frames <-chan []byte, leave func())
}

// WriteTimeout bounds one write to a client: a reader that stopped reading
// without closing the connection would otherwise hold the handler (and its
// goroutine) until the kernel gives up on the socket.
const WriteTimeout = 10 * time.Second

// maxBatch bounds how many queued frames are written with one flush.
const maxBatch = 32

// Streams serves the stream and ends every open one on Close.
type Streams struct {
	hub     Hub
	closing chan struct{}
	once    sync.Once
}

// New returns the stream handler for hub.
func New(hub Hub) *Streams {
	return &Streams{hub: hub, closing: make(chan struct{})}
}

// Register adds GET /api/events.
func (s *Streams) Register(r *server.Router) {
	r.APIHandler("GET /api/events", s)
}

// Close ends every open stream and refuses new ones. Register it with the
// HTTP server's OnShutdown: http.Server.Shutdown waits for handlers to
// return and does not cancel their contexts, so without it an open stream
// would hold the shutdown until its deadline.
func (s *Streams) Close() { s.once.Do(func() { close(s.closing) }) }

// ServeHTTP streams events until the client disconnects, the hub drops the
// client, or Close.
func (s *Streams) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.closing:
		httpx.WriteJSON(w, http.StatusServiceUnavailable, httpx.ErrorBody{Error: "server is shutting down"})
		return
	default:
	}
	// net/http notices a client going away (and cancels the request
	// context) only once the request body has been read to its end; an
	// EventSource sends none, but a stream opened with a body would
	// otherwise stay joined until a keepalive write fails.
	if _, err := httpx.ReadBody(w, r, httpx.MaxBodyBytes); err != nil {
		httpx.WriteError(w, r, err)
		return
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	// nginx buffers proxied responses unless told not to.
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		// The GET pattern also serves HEAD, whose response ends with the
		// headers: the client reuses the connection at once, so a handler
		// that went on streaming would hold that connection's next request
		// (found by the robustness test).
		return
	}

	frames, leave := s.hub.Join(r.Header.Get("Last-Event-ID"))
	defer leave()

	// retry: how long EventSource waits before reconnecting.
	if !write(w, rc, []byte("retry: 3000\n: connected\n\n")) {
		return
	}
	buf := make([]byte, 0, 4096)
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				return
			}
			buf = append(buf[:0], f...)
			// Coalesce what is already queued into one write and flush.
		drain:
			for i := 1; i < maxBatch; i++ {
				select {
				case f, ok := <-frames:
					if !ok {
						_ = write(w, rc, buf)
						return
					}
					buf = append(buf, f...)
				default:
					break drain
				}
			}
			if !write(w, rc, buf) {
				return
			}
		case <-r.Context().Done():
			return
		case <-s.closing:
			return
		}
	}
}

// write sends b and flushes it; false means the connection is gone.
func write(w http.ResponseWriter, rc *http.ResponseController, b []byte) bool {
	if err := rc.SetWriteDeadline(time.Now().Add(WriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return false
	}
	if _, err := w.Write(b); err != nil {
		return false
	}
	return rc.Flush() == nil
}
