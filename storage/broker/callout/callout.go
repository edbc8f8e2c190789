// Package callout is the backend's side of NATS auth callout (nats-server
// 2.10 and later). A server configured with an auth_callout block sends
// every connecting client that is not one of its own service users to
// $SYS.REQ.USER.AUTH as an authorization request JWT signed by the server;
// a Service decodes it, asks an Authorizer who the client is and what it
// may do, and answers with a user JWT signed by the issuer account key the
// server trusts. The server then applies the permissions of that JWT to the
// connection, so each client gets exactly the subjects its credential
// allows, whatever it asks for later.
//
// The protocol is the server's (server/auth_callout.go): the answer's
// subject must be the user nkey the server generated for this connection,
// its audience the server's id, its issuer the configured issuer; the user
// JWT's audience names the account the client is placed in (server-config
// mode). With an XKey, requests and answers are sealed, so a client that
// may subscribe to $SYS.REQ.USER.AUTH in the callout account never reads
// another client's token.
//
// This package knows nothing about kanade's credentials: it is the
// protocol, the keys and a bounded pool of workers.
package callout

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Subject is where servers send authorization requests.
const Subject = "$SYS.REQ.USER.AUTH"

// xkeyHeader carries the server's public curve key on a sealed request.
const xkeyHeader = "Nats-Server-Xkey"

// PrivateSubjects are what no client of the callout account but the
// backend should subscribe to: the requests (sealed, but carrying other
// clients' tokens inside) and the server's answers inbox.
const PrivateSubjects = "$SYS.>"

// GlobalAccount is the account of a server without accounts ($G), where
// the backend's streams and buckets live.
const GlobalAccount = "$G"

// Keys are the callout's identity: the issuer account key the server
// trusts to sign users, and the curve key that seals requests and answers
// (optional: nil where the server and the callout share a process).
type Keys struct {
	Issuer nkeys.KeyPair
	XKey   nkeys.KeyPair
}

// NewKeys makes a fresh pair of keys (the embedded server gets new ones at
// every start; an external server keeps the ones written by nats-config).
func NewKeys() (Keys, error) {
	issuer, err := nkeys.CreateAccount()
	if err != nil {
		return Keys{}, fmt.Errorf("create callout issuer key: %w", err)
	}
	xkey, err := nkeys.CreateCurveKeys()
	if err != nil {
		return Keys{}, fmt.Errorf("create callout curve key: %w", err)
	}
	return Keys{Issuer: issuer, XKey: xkey}, nil
}

// ParseKeys reads keys from their seeds.
func ParseKeys(issuerSeed, xkeySeed string) (Keys, error) {
	issuer, err := nkeys.FromSeed([]byte(issuerSeed))
	if err != nil {
		return Keys{}, fmt.Errorf("callout issuer seed: %w", err)
	}
	if pub, _ := issuer.PublicKey(); !nkeys.IsValidPublicAccountKey(pub) {
		return Keys{}, errors.New("callout issuer seed: not an account key")
	}
	xkey, err := nkeys.FromCurveSeed([]byte(xkeySeed))
	if err != nil {
		return Keys{}, fmt.Errorf("callout curve seed: %w", err)
	}
	return Keys{Issuer: issuer, XKey: xkey}, nil
}

// IssuerPublic is the issuer's public key (auth_callout.issuer).
func (k Keys) IssuerPublic() string { return mustPublic(k.Issuer) }

// XKeyPublic is the curve key's public part (auth_callout.xkey); "" when
// the callout does not seal.
func (k Keys) XKeyPublic() string {
	if k.XKey == nil {
		return ""
	}
	return mustPublic(k.XKey)
}

// Seeds returns the private seeds, for the file nats-config writes.
func (k Keys) Seeds() (issuer, xkey string, err error) {
	is, err := k.Issuer.Seed()
	if err != nil {
		return "", "", fmt.Errorf("issuer seed: %w", err)
	}
	xs, err := k.XKey.Seed()
	if err != nil {
		return "", "", fmt.Errorf("curve seed: %w", err)
	}
	return string(is), string(xs), nil
}

func mustPublic(kp nkeys.KeyPair) string {
	pub, err := kp.PublicKey()
	if err != nil {
		// Only a wiped key pair fails here; Keys are never wiped.
		panic(fmt.Errorf("callout key: %w", err))
	}
	return pub
}

// Request is what the server says about a connecting client.
type Request struct {
	// Token, User and Password are what the client presented.
	Token    string
	User     string
	Password string
	// ClientName is the connection name the client chose (may be empty).
	ClientName string
	ClientHost string
	// ClientID is the connection's id on ServerID (its cid in connz), so
	// that the connection can be found and kicked later.
	ClientID   uint64
	ServerID   string
	ServerName string
}

// Grant is what an authorized client becomes.
type Grant struct {
	// Name is the connection's user name (connz authorized_user); the
	// server lists and kicks connections by it.
	Name string
	// Account places the client (server-config mode); default $G.
	Account string
	// Permissions are the client's subjects; empty means every right.
	Permissions jwt.Permissions
	// Expires, when set, ends the connection after this long; the client
	// reconnects and is authorized again.
	Expires time.Duration
}

// Authorizer decides. An error refuses the client; its text goes to the
// server's log (the client only learns "Authorization Violation").
type Authorizer interface {
	Authorize(ctx context.Context, r Request) (Grant, error)
}

// AuthorizerFunc adapts a function.
type AuthorizerFunc func(ctx context.Context, r Request) (Grant, error)

// Authorize implements Authorizer.
func (f AuthorizerFunc) Authorize(ctx context.Context, r Request) (Grant, error) { return f(ctx, r) }

// signer signs with the issuer key expanded once. nkeys keeps only the
// seed and expands it into an ed25519 key for every public key and every
// signature, three times per JWT; at a fleet's reconnect that was most of
// the callout's cost.
type signer struct {
	pub nkeys.KeyPair // the public half only: what the JWT encoder asks for
	key ed25519.PrivateKey
}

func newSigner(kp nkeys.KeyPair) (signer, error) {
	seed, err := kp.Seed()
	if err != nil {
		return signer{}, fmt.Errorf("issuer seed: %w", err)
	}
	_, raw, err := nkeys.DecodeSeed(seed)
	if err != nil {
		return signer{}, fmt.Errorf("issuer seed: %w", err)
	}
	pub, err := nkeys.FromPublicKey(mustPublic(kp))
	if err != nil {
		return signer{}, err
	}
	return signer{pub: pub, key: ed25519.NewKeyFromSeed(raw)}, nil
}

func (s signer) sign(_ string, data []byte) ([]byte, error) { return ed25519.Sign(s.key, data), nil }

// Options configure Start.
type Options struct {
	// Conn must be one of the server's auth_users (it is not itself sent
	// to the callout) in the callout account.
	Conn       *nats.Conn
	Keys       Keys
	Authorizer Authorizer
	// Workers bound how many requests are decided at once (default 4): a
	// burst of reconnecting agents must not wait behind one database read
	// each, nor start thousands of goroutines.
	Workers int
	// Timeout bounds one decision (default 2s: the server's auth timeout).
	Timeout time.Duration
	// Queue, when set, makes several backends share requests (each request
	// is answered by one of them).
	Queue string
	// Observe, when set, is told about every decision (metrics).
	Observe func(r Request, g Grant, err error)
	Logger  *slog.Logger
}

// Service answers authorization requests until Stop.
type Service struct {
	opts   Options
	signer signer
	sub    *nats.Subscription
	work   chan *nats.Msg
	done   chan struct{}
	wg     sync.WaitGroup
	stop   sync.Once
	// stopping makes the workers drop what is still queued.
	stopping atomic.Bool
}

// Start subscribes to the callout subject and returns once the
// subscription exists at the server.
func Start(opts Options) (*Service, error) {
	if opts.Conn == nil || opts.Authorizer == nil || opts.Keys.Issuer == nil {
		return nil, errors.New("callout: Conn, Keys and Authorizer are required")
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	sg, err := newSigner(opts.Keys.Issuer)
	if err != nil {
		return nil, err
	}
	s := &Service{opts: opts, signer: sg, work: make(chan *nats.Msg, 4096), done: make(chan struct{})}
	for range opts.Workers {
		s.wg.Add(1)
		go s.worker()
	}
	handler := func(m *nats.Msg) {
		if s.stopping.Load() {
			return
		}
		select {
		case s.work <- m:
		default:
			// Full: the server times the client out and it retries, which
			// is better than blocking the connection's reader.
			s.opts.Logger.Warn("auth callout backlog full; dropping an authorization request")
		}
	}
	if opts.Queue != "" {
		s.sub, err = opts.Conn.QueueSubscribe(Subject, opts.Queue, handler)
	} else {
		s.sub, err = opts.Conn.Subscribe(Subject, handler)
	}
	if err == nil {
		_ = s.sub.SetPendingLimits(-1, -1)
		err = opts.Conn.Flush()
	}
	if err != nil {
		s.Stop()
		return nil, fmt.Errorf("subscribe %s: %w", Subject, err)
	}
	return s, nil
}

// Stop unsubscribes and waits for the requests in progress. Requests still
// queued are dropped: their clients time out and reconnect to whoever
// answers next.
func (s *Service) Stop() {
	s.stop.Do(func() {
		s.stopping.Store(true)
		if s.sub != nil {
			_ = s.sub.Unsubscribe()
		}
		close(s.done)
		s.wg.Wait()
	})
}

func (s *Service) worker() {
	defer s.wg.Done()
	for {
		select {
		case <-s.done:
			return
		case m := <-s.work:
			if s.stopping.Load() {
				return
			}
			s.answer(m)
		}
	}
}

// answer decodes one request, decides and responds. A request that cannot
// be decoded gets no answer at all: the server then refuses the client when
// its auth timeout ends, and nothing unauthenticated was signed.
func (s *Service) answer(m *nats.Msg) {
	log := s.opts.Logger
	data := m.Data
	serverXKey := m.Header.Get(xkeyHeader)
	if serverXKey != "" {
		if s.opts.Keys.XKey == nil {
			log.Error("auth callout request is sealed but no curve key is configured")
			return
		}
		opened, err := s.opts.Keys.XKey.Open(data, serverXKey)
		if err != nil {
			log.Error("auth callout request cannot be opened", "err", err)
			return
		}
		data = opened
	}
	rc, err := jwt.DecodeAuthorizationRequestClaims(string(data))
	if err != nil {
		log.Error("auth callout request cannot be decoded", "err", err)
		return
	}
	req := Request{
		Token: rc.ConnectOptions.Token, User: rc.ConnectOptions.Username, Password: rc.ConnectOptions.Password,
		ClientName: rc.ClientInformation.Name, ClientHost: rc.ClientInformation.Host, ClientID: rc.ClientInformation.ID,
		ServerID: rc.Server.ID, ServerName: rc.Server.Name,
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
	g, decideErr := s.opts.Authorizer.Authorize(ctx, req)
	cancel()
	if s.opts.Observe != nil {
		s.opts.Observe(req, g, decideErr)
	}
	resp := jwt.NewAuthorizationResponseClaims(rc.UserNkey)
	resp.Audience = rc.Server.ID
	if decideErr != nil {
		resp.Error = decideErr.Error()
	} else {
		user, err := s.userJWT(rc.UserNkey, g)
		if err != nil {
			log.Error("auth callout cannot sign a user", "user", g.Name, "err", err)
			resp.Error = "internal error signing the user"
		} else {
			resp.Jwt = user
		}
	}
	token, err := resp.EncodeWithSigner(s.signer.pub, s.signer.sign)
	if err != nil {
		log.Error("auth callout cannot sign its answer", "err", err)
		return
	}
	out := []byte(token)
	if serverXKey != "" {
		if out, err = s.opts.Keys.XKey.Seal(out, serverXKey); err != nil {
			log.Error("auth callout cannot seal its answer", "err", err)
			return
		}
	}
	if err := m.Respond(out); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		log.Warn("auth callout cannot answer", "err", err)
	}
}

// userJWT is the signed user the server applies to the connection.
func (s *Service) userJWT(userNkey string, g Grant) (string, error) {
	uc := jwt.NewUserClaims(userNkey)
	uc.Name = g.Name
	uc.Audience = g.Account
	if uc.Audience == "" {
		uc.Audience = GlobalAccount
	}
	uc.Permissions = g.Permissions
	if g.Expires > 0 {
		uc.Expires = time.Now().Add(g.Expires).Unix()
	}
	vr := jwt.CreateValidationResults()
	uc.Validate(vr)
	if errs := vr.Errors(); len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = e.Error()
		}
		return "", fmt.Errorf("invalid user claims: %s", strings.Join(msgs, "; "))
	}
	return uc.EncodeWithSigner(s.signer.pub, s.signer.sign)
}
