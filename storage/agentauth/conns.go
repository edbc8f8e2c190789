package agentauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"kanade-backend/actors/clock"
	"kanade-backend/storage/broker"
)

// User names the callout gives connections (connz authorized_user): the
// server lists and kicks connections by them.
const (
	userPCPrefix       = "pc:"
	userEnrollPrefix   = "enroll:"
	userOperatorPrefix = "operator:"
	UserSharedToken    = "shared-token"
	UserAnonymous      = "anonymous"
)

// UserOfPC is the connection user name of pcID's agent.
func UserOfPC(pcID string) string { return userPCPrefix + pcID }

// UserOfEnrollment is the user name of a connection presenting the
// unbound enrollment token id.
func UserOfEnrollment(id string) string { return userEnrollPrefix + id }

// Conn is one live client connection.
type Conn struct {
	ServerID string
	CID      uint64
	User     string
	// Subs are its subscriptions (when asked for).
	Subs []string
}

// Conns lists and kicks live connections. With the embedded server that is
// its own API; with an external cluster, the system account's CONNZ and
// KICK requests.
type Conns interface {
	// List returns the connections authorized as user, with their
	// subscriptions when subs is set.
	List(ctx context.Context, user string, subs bool) ([]Conn, error)
	// Kick closes one connection; the client may reconnect and is then
	// authorized again.
	Kick(ctx context.Context, c Conn) error
}

// EmbeddedConns are the connections of the in-process server (which may
// be restarted in place: the current one is asked each time).
type EmbeddedConns struct{ Server *broker.Embedded }

// errServerDown says the embedded server is being restarted.
var errServerDown = errors.New("the embedded NATS server is restarting")

var _ Conns = EmbeddedConns{}

// connzLimit is more connections than one user ever has.
const connzLimit = 10000

// List implements Conns.
func (e EmbeddedConns) List(_ context.Context, user string, subs bool) ([]Conn, error) {
	ns := e.Server.Server()
	if ns == nil {
		return nil, errServerDown
	}
	cz, err := ns.Connz(&server.ConnzOptions{User: user, Username: true, Subscriptions: subs, Limit: connzLimit})
	if err != nil {
		return nil, fmt.Errorf("list connections of %s: %w", user, err)
	}
	id := ns.ID()
	out := make([]Conn, 0, len(cz.Conns))
	for _, c := range cz.Conns {
		out = append(out, Conn{ServerID: id, CID: c.Cid, User: c.AuthorizedUser, Subs: c.Subs})
	}
	return out, nil
}

// Kick implements Conns.
func (e EmbeddedConns) Kick(_ context.Context, c Conn) error {
	ns := e.Server.Server()
	if ns == nil {
		return errServerDown // its connections are gone with it
	}
	if err := ns.DisconnectClientByID(c.CID); err != nil {
		return fmt.Errorf("kick connection %d: %w", c.CID, err)
	}
	return nil
}

// SystemConns reach every server of an external cluster through a
// connection in its system account: $SYS.REQ.SERVER.PING.CONNZ gathers
// the connections of all servers, $SYS.REQ.SERVER.<id>.KICK closes one.
type SystemConns struct {
	NC *nats.Conn
	// Gather is how long List waits for the servers to answer (default
	// 500ms; a cluster answers within milliseconds).
	Gather time.Duration
}

var _ Conns = SystemConns{}

// List implements Conns.
func (s SystemConns) List(ctx context.Context, user string, subs bool) ([]Conn, error) {
	gather := s.Gather
	if gather <= 0 {
		gather = 500 * time.Millisecond
	}
	req, err := json.Marshal(server.ConnzEventOptions{ConnzOptions: server.ConnzOptions{
		User: user, Username: true, Subscriptions: subs, Limit: connzLimit,
	}})
	if err != nil {
		return nil, err
	}
	inbox := s.NC.NewRespInbox()
	sub, err := s.NC.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("list connections of %s: %w", user, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := s.NC.PublishRequest("$SYS.REQ.SERVER.PING.CONNZ", inbox, req); err != nil {
		return nil, fmt.Errorf("list connections of %s: %w", user, err)
	}
	ctx, cancel := context.WithTimeout(ctx, gather)
	defer cancel()
	var out []Conn
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			// The servers that will answer have answered by now.
			if errors.Is(err, context.DeadlineExceeded) {
				return out, nil
			}
			return out, fmt.Errorf("list connections of %s: %w", user, err)
		}
		var resp struct {
			Server server.ServerInfo `json:"server"`
			Data   *server.Connz     `json:"data"`
			Error  *server.ApiError  `json:"error"`
		}
		if err := json.Unmarshal(m.Data, &resp); err != nil {
			return out, fmt.Errorf("list connections of %s: decode CONNZ answer: %w", user, err)
		}
		if resp.Error != nil {
			return out, fmt.Errorf("list connections of %s: server %s: %s", user, resp.Server.Name, resp.Error.Description)
		}
		if resp.Data == nil {
			continue
		}
		for _, c := range resp.Data.Conns {
			out = append(out, Conn{ServerID: resp.Server.ID, CID: c.Cid, User: c.AuthorizedUser, Subs: c.Subs})
		}
	}
}

// Kick implements Conns.
func (s SystemConns) Kick(ctx context.Context, c Conn) error {
	req, err := json.Marshal(server.KickClientReq{CID: c.CID})
	if err != nil {
		return err
	}
	m, err := s.NC.RequestWithContext(ctx, "$SYS.REQ.SERVER."+c.ServerID+".KICK", req)
	if err != nil {
		return fmt.Errorf("kick connection %d on %s: %w", c.CID, c.ServerID, err)
	}
	var resp struct {
		Error *server.ApiError `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err == nil && resp.Error != nil {
		return fmt.Errorf("kick connection %d on %s: %s", c.CID, c.ServerID, resp.Error.Description)
	}
	return nil
}

// Kicker ends the connections of a user now and once more shortly after:
// a client whose authorization was being answered while its credential was
// revoked is registered by the server only after the first sweep.
type Kicker struct {
	Conns  Conns
	Clock  clock.Clock
	Logger *slog.Logger
	// Again is the delay of the second sweep (default 3s, past the time a
	// callout answer takes to reach the server).
	Again time.Duration

	mu      sync.Mutex
	timers  map[clock.Timer]struct{}
	stopped bool
	wg      sync.WaitGroup
}

// Kick closes every connection of user and schedules the second sweep. It
// returns how many connections it closed now.
func (k *Kicker) Kick(ctx context.Context, user string) (int, error) {
	n, err := kickUser(ctx, k.Conns, user)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stopped {
		return n, err
	}
	if k.timers == nil {
		k.timers = map[clock.Timer]struct{}{}
	}
	again := k.Again
	if again <= 0 {
		again = 3 * time.Second
	}
	c := k.Clock
	if c == nil {
		c = clock.Real{}
	}
	var t clock.Timer
	k.wg.Add(1)
	t = c.AfterFunc(again, func() {
		defer k.wg.Done()
		k.mu.Lock()
		delete(k.timers, t)
		k.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := kickUser(ctx, k.Conns, user); err != nil && k.Logger != nil {
			k.Logger.Warn("second sweep of revoked connections failed", "user", user, "err", err)
		}
	})
	k.timers[t] = struct{}{}
	return n, err
}

// Stop cancels the sweeps still due and waits for one in progress.
func (k *Kicker) Stop() {
	k.mu.Lock()
	k.stopped = true
	for t := range k.timers {
		if t.Stop() {
			k.wg.Done()
		}
	}
	k.timers = nil
	k.mu.Unlock()
	k.wg.Wait()
}

func kickUser(ctx context.Context, conns Conns, user string) (int, error) {
	cs, err := conns.List(ctx, user, false)
	if err != nil {
		return 0, err
	}
	var errs []error
	n := 0
	for _, c := range cs {
		if err := conns.Kick(ctx, c); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}
