package agentauth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"kanade-backend/actors/clock"
	"kanade-backend/storage/broker/callout"
)

// EnrollingExpiry ends the connection of an unbound enrollment token after
// this long: it reconnects and is authorized again, which re-registers it
// for binding with a backend that restarted meanwhile.
const EnrollingExpiry = 5 * time.Minute

// OperatorToken is an operator as the callout needs it.
type OperatorToken struct {
	Name    string
	Role    string
	Revoked bool
}

// OperatorLookup finds the operator an operator token belongs to (the
// operators store); found is false for an unknown token.
type OperatorLookup func(ctx context.Context, token string) (op OperatorToken, found bool, err error)

// Operator roles that may use NATS; viewers may not (nothing they read
// needs the bus, and every subscription sees payloads).
const (
	roleAdmin    = "admin"
	roleOperator = "operator"
)

// Policy is what the deployment accepts besides agent credentials.
type Policy struct {
	// SharedToken, when set, is the legacy KANADE_NATS_TOKEN: every client
	// presenting it has every right, as before per-PC credentials.
	SharedToken string
	// AllowAnonymous accepts clients that present nothing, with every
	// right: the zero-configuration embedded server on a loopback address,
	// where only local processes can connect.
	AllowAnonymous bool
}

// Warnings are what fleet health reports about the policy.
func (p Policy) Warnings() []string {
	if p.SharedToken != "" {
		return []string{"shared agent token in use"}
	}
	return nil
}

// Enrollments is told about connections presenting an unbound enrollment
// token (Enroller).
type Enrollments interface {
	Pending(id, serverID string, cid uint64)
}

// AuthorizerOptions configure NewAuthorizer.
type AuthorizerOptions struct {
	Store     *Store
	Operators OperatorLookup
	Policy    Policy
	// Conns finds the live connections of an enrollment token (one agent
	// at a time may enroll with it).
	Conns       Conns
	Enrollments Enrollments
	Clock       clock.Clock
	Logger      *slog.Logger
	// Registerer receives kanade_nats_auth_total; nil registers nothing.
	Registerer prometheus.Registerer
}

// Authorizer maps what a client presents to a callout grant: an agent
// credential to its PC's rights, an operator token to its role's, the
// shared token and (where allowed) nothing at all to every right.
type Authorizer struct {
	o       AuthorizerOptions
	results *prometheus.CounterVec

	mu   sync.Mutex
	used map[string]time.Time
}

var _ callout.Authorizer = (*Authorizer)(nil)

// NewAuthorizer returns an Authorizer; Run records credential use.
func NewAuthorizer(o AuthorizerOptions) *Authorizer {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	a := &Authorizer{o: o, used: map[string]time.Time{},
		results: promauto.With(o.Registerer).NewCounterVec(prometheus.CounterOpts{
			Name: "kanade_nats_auth_total",
			Help: "NATS client authorizations by the auth callout, by kind of credential and result.",
		}, []string{"kind", "result"})}
	return a
}

// errDenied marks a refusal (as opposed to a failure to decide).
var errDenied = errors.New("denied")

func denied(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errDenied, fmt.Sprintf(format, args...))
}

// Authorize implements callout.Authorizer.
func (a *Authorizer) Authorize(ctx context.Context, r callout.Request) (callout.Grant, error) {
	kind, g, err := a.decide(ctx, r)
	result := "allowed"
	switch {
	case errors.Is(err, errDenied):
		result = "denied"
		a.o.Logger.Debug("NATS client refused", "kind", kind, "host", r.ClientHost, "reason", err)
	case err != nil:
		result = "error"
		a.o.Logger.Error("NATS client refused: cannot decide", "kind", kind, "host", r.ClientHost, "err", err)
	}
	a.results.WithLabelValues(kind, result).Inc()
	return g, err
}

func (a *Authorizer) decide(ctx context.Context, r callout.Request) (string, callout.Grant, error) {
	tok := r.Token
	switch {
	case r.User != "" || r.Password != "":
		return "user", callout.Grant{}, denied("user %q is not configured", r.User)
	case IsAgentToken(tok):
		return a.agent(ctx, r)
	case strings.HasPrefix(tok, "kanade_op_"):
		return a.operator(ctx, tok)
	case tok != "" && a.o.Policy.SharedToken != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(a.o.Policy.SharedToken)) == 1:
		return "shared", callout.Grant{Name: UserSharedToken, Permissions: FullPermissions()}, nil
	case tok == "" && a.o.Policy.AllowAnonymous:
		return "anonymous", callout.Grant{Name: UserAnonymous, Permissions: FullPermissions()}, nil
	case tok == "":
		return "anonymous", callout.Grant{}, denied("a token is required")
	default:
		return "unknown", callout.Grant{}, denied("unknown token")
	}
}

func (a *Authorizer) agent(ctx context.Context, r callout.Request) (string, callout.Grant, error) {
	c, found, err := a.o.Store.ByTokenHash(ctx, TokenHash(r.Token))
	if err != nil {
		return KindPC, callout.Grant{}, err
	}
	if !found {
		return KindPC, callout.Grant{}, denied("unknown agent credential")
	}
	kind := c.Kind
	switch c.State {
	case StateRevoked:
		return kind, callout.Grant{}, denied("agent credential %s was revoked", c.ID)
	case StateExpired:
		return kind, callout.Grant{}, denied("enrollment token %s expired unused", c.ID)
	case StatePending:
		user := UserOfEnrollment(c.ID)
		if a.o.Conns != nil {
			live, err := a.o.Conns.List(ctx, user, false)
			if err != nil {
				return kind, callout.Grant{}, err
			}
			if len(live) > 0 {
				return kind, callout.Grant{}, denied("enrollment token %s is being used by another connection", c.ID)
			}
		}
		if a.o.Enrollments != nil {
			a.o.Enrollments.Pending(c.ID, r.ServerID, r.ClientID)
		}
		a.touch(c.ID)
		return kind, callout.Grant{Name: user, Permissions: EnrollingPermissions(), Expires: EnrollingExpiry}, nil
	}
	a.touch(c.ID)
	return kind, callout.Grant{Name: UserOfPC(*c.PcID), Permissions: AgentPermissions(*c.PcID)}, nil
}

func (a *Authorizer) operator(ctx context.Context, tok string) (string, callout.Grant, error) {
	if a.o.Operators == nil {
		return "operator", callout.Grant{}, denied("operator tokens are not accepted here")
	}
	op, found, err := a.o.Operators(ctx, tok)
	switch {
	case err != nil:
		return "operator", callout.Grant{}, err
	case !found:
		return "operator", callout.Grant{}, denied("unknown operator token")
	case op.Revoked:
		return "operator", callout.Grant{}, denied("operator %s was revoked", op.Name)
	}
	g := callout.Grant{Name: userOperatorPrefix + op.Name}
	switch op.Role {
	case roleAdmin:
		g.Permissions = FullPermissions()
	case roleOperator:
		g.Permissions = OperatorPermissions()
	default:
		return "operator", callout.Grant{}, denied("operator %s has role %s, which cannot use NATS", op.Name, op.Role)
	}
	return "operator", g, nil
}

func (a *Authorizer) touch(id string) {
	a.mu.Lock()
	a.used[id] = a.o.Clock.Now()
	a.mu.Unlock()
}

// Flush writes the credential uses recorded since the last flush.
func (a *Authorizer) Flush(ctx context.Context) error {
	a.mu.Lock()
	used := a.used
	a.used = map[string]time.Time{}
	a.mu.Unlock()
	if err := a.o.Store.Touch(ctx, used); err != nil {
		// Put them back (newer uses win) for the next flush.
		a.mu.Lock()
		for id, t := range used {
			if cur, ok := a.used[id]; !ok || cur.Before(t) {
				a.used[id] = t
			}
		}
		a.mu.Unlock()
		return err
	}
	return nil
}

// TouchInterval is how often Run writes credential uses.
const TouchInterval = 2 * time.Second

// Run writes credential uses every TouchInterval until ctx ends, then
// once more.
func (a *Authorizer) Run(ctx context.Context) {
	t := time.NewTicker(TouchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := a.Flush(fctx); err != nil {
				a.o.Logger.Warn("recording agent credential use at stop failed", "err", err)
			}
			cancel()
			return
		case <-t.C:
			if err := a.Flush(ctx); err != nil && ctx.Err() == nil {
				a.o.Logger.Warn("recording agent credential use failed; will retry", "err", err)
			}
		}
	}
}
