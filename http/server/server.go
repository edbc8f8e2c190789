// Package server assembles the HTTP side: one router on which each API
// feature registers its routes, the middleware every request passes through
// (panic recovery, access log, metrics, auth on /api), the public /health
// route, and the listener's start and graceful stop.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"kanade-backend/http/httpx"
)

// Router collects routes. Patterns use net/http's syntax with a method
// ("GET /api/jobs/{id}"); the mux answers 405 for a known path with another
// method, and Router turns that and unknown /api/ paths into JSON errors.
type Router struct {
	// api checks /api patterns as they are registered, so a conflicting
	// pattern panics at its Register call; Handler builds the mux it
	// serves from apiRoutes, wrapping each with Options.Guard.
	api       *http.ServeMux
	apiRoutes []route
	public    *http.ServeMux

	mu       sync.Mutex
	patterns []string
}

type route struct {
	pattern string
	h       http.Handler
}

// NewRouter returns an empty router.
func NewRouter() *Router {
	// No catch-all is registered on the API mux: a "/api/" pattern would
	// match every method and hide the mux's 405. Its plain 404 and 405 are
	// rewritten to JSON by jsonMuxErrors, and /api/ never falls through to
	// the dashboard.
	return &Router{api: http.NewServeMux(), public: http.NewServeMux()}
}

// API registers an authenticated /api route.
func (r *Router) API(pattern string, h httpx.HandlerFunc, opts ...RouteOption) {
	if !strings.Contains(pattern, " /api/") {
		panic(fmt.Sprintf("server: API pattern %q must be \"METHOD /api/...\"", pattern))
	}
	var handler http.Handler = httpx.Handle(h)
	for _, o := range opts {
		handler = o(handler)
	}
	r.APIHandler(pattern, handler)
}

// RouteOption adapts one route's handler.
type RouteOption func(http.Handler) http.Handler

// BodyTimeout gives the route d to read its request body instead of the
// server's ReadTimeout, for large uploads over slow links.
func BodyTimeout(d time.Duration) RouteOption {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(d))
			next.ServeHTTP(w, req)
		})
	}
}

// APIHandler registers an authenticated /api route with a plain handler (for
// streaming responses such as Server-Sent Events).
func (r *Router) APIHandler(pattern string, h http.Handler) {
	r.api.Handle(pattern, h)
	r.mu.Lock()
	r.apiRoutes = append(r.apiRoutes, route{pattern, h})
	r.mu.Unlock()
	r.record(pattern)
}

// Public registers a route outside /api that needs no token (/health,
// /metrics, the dashboard).
func (r *Router) Public(pattern string, h http.Handler) {
	r.public.Handle(pattern, h)
	r.record(pattern)
}

func (r *Router) record(pattern string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.patterns = append(r.patterns, pattern)
}

// Patterns lists every registered pattern, sorted (the OpenAPI coverage test
// compares it with the document).
func (r *Router) Patterns() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]string(nil), r.patterns...)
	sort.Strings(out)
	return out
}

// Options configure the handler chain.
type Options struct {
	Logger *slog.Logger
	// Auth wraps every /api request; nil means no authentication.
	Auth func(http.Handler) http.Handler
	// Guard, if set, wraps each /api route's handler given its pattern
	// (authorization: auth.Guard checks the route's role). It runs after
	// Auth and after the mux matched the route, so it sees the principal
	// and answers only for known routes.
	Guard func(pattern string, h http.Handler) http.Handler
	// Observe, if set, is told about every finished request (metrics).
	Observe func(method, pattern string, status int, d time.Duration)
	// WriteTimeout bounds writing a response, counted from its first byte
	// (default DefaultWriteTimeout). A handler may wait longer than that
	// before it answers (a run waiting for its agent); a stream (SSE) sets
	// a deadline for each of its writes instead.
	WriteTimeout time.Duration
}

// Input limits every request gets, whatever its route.
const (
	// MaxQueryBytes bounds the raw query string: no filter needs more, and
	// a database handed a 50 000-character LIKE pattern answers with an
	// error rather than rows.
	MaxQueryBytes = 4096
	// MaxBodyBytes bounds any request body; routes read less (1 MiB),
	// except an agent release upload (httpx.MaxPublishBodyBytes).
	MaxBodyBytes = httpx.MaxPublishBodyBytes
	// DefaultWriteTimeout is Options.WriteTimeout's default.
	DefaultWriteTimeout = time.Minute
)

// Handler builds the full handler chain.
func (r *Router) Handler(opts Options) http.Handler {
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	mux := r.api
	if opts.Guard != nil {
		mux = http.NewServeMux()
		r.mu.Lock()
		routes := append([]route(nil), r.apiRoutes...)
		r.mu.Unlock()
		for _, rt := range routes {
			mux.Handle(rt.pattern, opts.Guard(rt.pattern, rt.h))
		}
	}
	var api http.Handler = jsonMuxErrors(mux)
	if opts.Auth != nil {
		api = opts.Auth(api)
	}
	root := http.NewServeMux()
	root.Handle("/api/", api)
	root.Handle("/", r.public)
	return recoverer(logger, accessLog(logger, opts.Observe, opts.WriteTimeout, r, limitInput(root)))
}

// limitInput refuses an over-long query string (400, before auth and
// routing) and caps every request body at MaxBodyBytes, so that no handler
// can be made to read more than that.
func limitInput(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if len(req.URL.RawQuery) > MaxQueryBytes {
			httpx.WriteJSON(w, http.StatusBadRequest, httpx.ErrorBody{
				Error: fmt.Sprintf("query string of %d bytes is longer than %d bytes", len(req.URL.RawQuery), MaxQueryBytes)})
			return
		}
		if req.Body != nil && req.Body != http.NoBody {
			req.Body = http.MaxBytesReader(w, req.Body, MaxBodyBytes)
		}
		next.ServeHTTP(w, req)
	})
}

// jsonMuxErrors rewrites the plain-text 404/405 that ServeMux produces for
// /api paths into the API's JSON error shape. Handlers themselves always
// write JSON, so only mux-generated errors carry text/plain.
func jsonMuxErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		mux.ServeHTTP(&muxErrorWriter{ResponseWriter: w, req: req}, req)
	})
}

type muxErrorWriter struct {
	http.ResponseWriter
	req       *http.Request
	rewritten bool
}

func (m *muxErrorWriter) WriteHeader(status int) {
	if (status == http.StatusMethodNotAllowed || status == http.StatusNotFound) &&
		strings.HasPrefix(m.Header().Get("Content-Type"), "text/plain") {
		m.rewritten = true
		msg := fmt.Sprintf("method %s not allowed on %s", m.req.Method, m.req.URL.Path)
		if allow := m.Header().Get("Allow"); allow != "" {
			msg += " (allowed: " + allow + ")"
		}
		if status == http.StatusNotFound {
			msg = fmt.Sprintf("no API route %s %s", m.req.Method, m.req.URL.Path)
		}
		m.Header().Del("X-Content-Type-Options")
		httpx.WriteJSON(m.ResponseWriter, status, httpx.ErrorBody{Error: msg})
		return
	}
	m.ResponseWriter.WriteHeader(status)
}

func (m *muxErrorWriter) Write(b []byte) (int, error) {
	if m.rewritten {
		return len(b), nil
	}
	return m.ResponseWriter.Write(b)
}

// Flush lets streaming handlers (SSE) flush through the wrapper.
func (m *muxErrorWriter) Flush() {
	if f, ok := m.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (m *muxErrorWriter) Unwrap() http.ResponseWriter { return m.ResponseWriter }

// recoverer turns a handler panic into a JSON 500 and a logged stack, so
// one bad request never takes the process down.
func recoverer(logger *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				logger.Error("handler panic", "method", req.Method, "path", req.URL.Path, "panic", v)
				httpx.WriteJSON(w, http.StatusInternalServerError, httpx.ErrorBody{Error: "internal error; see the server log"})
			}
		}()
		next.ServeHTTP(w, req)
	})
}

// statusWriter records the status and starts the write timeout at the
// response's first byte.
type statusWriter struct {
	http.ResponseWriter
	status       int
	writeTimeout time.Duration
}

// started sets the write deadline when the response starts: a client that
// stops reading cannot hold the connection longer than writeTimeout.
func (s *statusWriter) started() {
	if s.writeTimeout > 0 {
		_ = http.NewResponseController(s.ResponseWriter).SetWriteDeadline(time.Now().Add(s.writeTimeout))
	}
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
		s.started()
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
		s.started()
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func accessLog(logger *slog.Logger, observe func(string, string, int, time.Duration), writeTimeout time.Duration, r *Router, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		t0 := time.Now()
		sw := &statusWriter{ResponseWriter: w, writeTimeout: writeTimeout}
		next.ServeHTTP(sw, req)
		d := time.Since(t0)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		pattern := r.patternOf(req)
		if observe != nil {
			observe(req.Method, pattern, sw.status, d)
		}
		level := slog.LevelDebug
		if sw.status >= 500 {
			level = slog.LevelWarn
		}
		logger.Log(req.Context(), level, "http request", "method", req.Method, "path", req.URL.Path,
			"status", sw.status, "took", d)
	})
}

// patternOf is the route pattern req matched, for metrics. The /api
// routes are matched by a mux behind the auth middleware, which serves a
// copy of the request, so the pattern is looked up again here (also for
// a request refused before routing, e.g. 401); a path no route serves is
// "unmatched", so that scanners cannot grow the label set.
func (r *Router) patternOf(req *http.Request) string {
	pattern := req.Pattern
	if strings.HasPrefix(req.URL.Path, "/api/") {
		_, pattern = r.api.Handler(req)
	}
	if pattern == "" || pattern == "/api/" {
		return "unmatched"
	}
	return pattern
}

// Server is the HTTP listener with a graceful stop.
type Server struct {
	srv *http.Server
	ln  *limitListener
}

// Limits keep slow and greedy clients from holding the listener: every
// request must arrive within the read timeouts, idle connections are
// closed, and a client address (or all of them together) may hold only so
// many connections. Whatever a client does, /health stays reachable from
// another address and the process keeps file descriptors for the NATS
// listener and its stores. The zero value takes the defaults.
type Limits struct {
	// ReadHeaderTimeout bounds reading a request's headers (default 10 s).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included (default
	// 30 s); a route may allow its body longer (BodyTimeout).
	ReadTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long (default
	// 60 s).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and headers (default 64 KiB).
	MaxHeaderBytes int
	// MaxConns bounds the open connections (default DefaultMaxConns());
	// MaxConnsPerClient the open connections of one client IP address
	// (default 128). A connection beyond either is closed as soon as it is
	// accepted.
	MaxConns          int
	MaxConnsPerClient int
	// Rejected, if set, is told about each connection closed for a limit
	// ("total" or "per_client"), for metrics.
	Rejected func(limit string)
}

func (l Limits) withDefaults() Limits {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&l.ReadHeaderTimeout, 10*time.Second)
	def(&l.ReadTimeout, 30*time.Second)
	def(&l.IdleTimeout, time.Minute)
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = 64 << 10
	}
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultMaxConns()
	}
	if l.MaxConnsPerClient <= 0 {
		l.MaxConnsPerClient = 128
	}
	return l
}

// Listen binds addr; Serve must be called next.
func Listen(addr string, h http.Handler, lim Limits) (*Server, error) {
	lim = lim.withDefaults()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return &Server{
		ln: newLimitListener(ln, lim.MaxConns, lim.MaxConnsPerClient, lim.Rejected),
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: lim.ReadHeaderTimeout,
			ReadTimeout:       lim.ReadTimeout,
			IdleTimeout:       lim.IdleTimeout,
			MaxHeaderBytes:    lim.MaxHeaderBytes,
			// The write timeout starts at each response's first byte
			// (Options.WriteTimeout), not at the request: a run may wait
			// minutes for its agent before answering.
		},
	}, nil
}

// OpenConns is the number of HTTP connections open now.
func (s *Server) OpenConns() int { return s.ln.open() }

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve blocks until Shutdown; it returns nil after a graceful stop.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops accepting connections and waits for in-flight requests
// until ctx ends, then closes what is left. It does not cancel the
// contexts of running requests: a long-lived stream (SSE) ends only
// through a function registered with OnShutdown, which Shutdown calls as
// it starts.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return errors.Join(err, s.srv.Close())
	}
	return err
}

// OnShutdown registers f to run, on its own goroutine, when Shutdown
// starts (http.Server.RegisterOnShutdown): the way to end SSE streams.
func (s *Server) OnShutdown(f func()) { s.srv.RegisterOnShutdown(f) }
