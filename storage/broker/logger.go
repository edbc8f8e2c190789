package broker

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// serverLogger routes nats-server's printf-style logging into slog so the
// embedded server's messages share the application's format and level.
type serverLogger struct {
	l *slog.Logger
	// store, if set, is shown every warning and error: it is how store
	// failures are noticed.
	store *StoreHealth
}

var _ interface {
	Noticef(string, ...any)
	Warnf(string, ...any)
	Fatalf(string, ...any)
	Errorf(string, ...any)
	Debugf(string, ...any)
	Tracef(string, ...any)
} = (*serverLogger)(nil)

// Notices (the start banner, every listener) are Debug: the backend logs
// the one line an operator needs ("embedded NATS listening") itself.
func (s *serverLogger) Noticef(f string, v ...any) { s.l.Debug(fmt.Sprintf(f, v...)) }
func (s *serverLogger) Warnf(f string, v ...any) {
	msg := s.inspect(f, v)
	// A refused client is already logged as an authentication error; the
	// callout's reason repeats it every time a revoked agent retries.
	if strings.HasPrefix(msg, "Auth callout service returned an error") {
		s.l.Debug(msg)
		return
	}
	s.l.Warn(msg)
}
func (s *serverLogger) Fatalf(f string, v ...any) { s.l.Error(s.inspect(f, v), "fatal", true) }
func (s *serverLogger) Errorf(f string, v ...any) { s.l.Error(s.inspect(f, v)) }

// inspect formats a warning or error and shows it to the store watch.
func (s *serverLogger) inspect(f string, v []any) string {
	msg := fmt.Sprintf(f, v...)
	if s.store != nil {
		s.store.serverLog(msg)
	}
	return msg
}
func (s *serverLogger) Debugf(f string, v ...any) { s.l.Debug(fmt.Sprintf(f, v...)) }
func (s *serverLogger) Tracef(f string, v ...any) { s.l.Debug(fmt.Sprintf(f, v...)) }

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < -1 || port > 65535 { // -1 asks the server for a random free port (tests)
		return "", 0, fmt.Errorf("invalid port %q", p)
	}
	return host, port, nil
}

// redact hides credentials embedded in a NATS URL before it is logged.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	u.User = url.User("REDACTED")
	return u.String()
}

// RedactURL is a NATS URL with its credentials hidden, for logs and
// readiness reports.
func RedactURL(raw string) string { return redact(raw) }
