package agentauth

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"kanade-backend/actors/clock"
	"kanade-backend/storage/broker/callout"
)

// Options configure Start.
type Options struct {
	// Conn is the backend's own connection, one of the server's auth_users.
	Conn      *nats.Conn
	Keys      callout.Keys
	Store     *Store
	Operators OperatorLookup
	Policy    Policy
	// Conns lists and kicks connections (EmbeddedConns or SystemConns).
	Conns  Conns
	Groups GroupAdder
	Audit  Auditor
	// Queue lets several backends share the callout (a cluster).
	Queue      string
	Clock      clock.Clock
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Service is the whole of agent authorization on a running backend: the
// callout answering the server, the authorizer behind it, the enroller and
// the kicker revocations use.
type Service struct {
	Authorizer *Authorizer
	Enroller   *Enroller
	Kicker     *Kicker
	Policy     Policy

	callout *callout.Service
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// Start runs the service until Stop.
func Start(o Options) (*Service, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	log := o.Logger.With("component", "agentauth")
	s := &Service{Policy: o.Policy}
	s.Kicker = &Kicker{Conns: o.Conns, Clock: o.Clock, Logger: log}
	s.Enroller = StartEnroller(EnrollerOptions{Store: o.Store, Conns: o.Conns, Kicker: s.Kicker,
		Groups: o.Groups, Audit: o.Audit, Clock: o.Clock, Logger: log})
	s.Authorizer = NewAuthorizer(AuthorizerOptions{Store: o.Store, Operators: o.Operators, Policy: o.Policy,
		Conns: o.Conns, Enrollments: s.Enroller, Clock: o.Clock, Logger: log, Registerer: o.Registerer})
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.Authorizer.Run(ctx)
	}()
	svc, err := callout.Start(callout.Options{Conn: o.Conn, Keys: o.Keys, Authorizer: s.Authorizer, Queue: o.Queue, Logger: log})
	if err != nil {
		s.Stop()
		return nil, fmt.Errorf("start NATS auth callout: %w", err)
	}
	s.callout = svc
	return s, nil
}

// Stop stops answering (clients then wait for another backend or time
// out), then the enroller and the pending sweeps, and records the last
// credential uses.
func (s *Service) Stop() {
	if s.callout != nil {
		s.callout.Stop()
	}
	s.Enroller.Stop()
	s.Kicker.Stop()
	s.cancel()
	s.wg.Wait()
}

// Revoked ends the live connections of pcID's agent after its credentials
// were revoked; those with another live credential reconnect with it.
func (s *Service) Revoked(ctx context.Context, pcID string) (int, error) {
	return s.Kicker.Kick(ctx, UserOfPC(pcID))
}

// EnrollmentRevoked ends the connections of an unbound enrollment token.
func (s *Service) EnrollmentRevoked(ctx context.Context, id string) (int, error) {
	return s.Kicker.Kick(ctx, UserOfEnrollment(id))
}
