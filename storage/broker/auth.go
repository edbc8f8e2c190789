package broker

import (
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/crypto/bcrypt"

	"kanade-backend/storage/broker/callout"
)

// ServiceUser is the embedded server's one configured user: the backend's
// own connection, which the server never sends to the auth callout (it
// runs the callout).
const ServiceUser = "kanade-backend"

// CalloutOptions turn on auth callout on the embedded server: every client
// except the backend is authorized by the callout service the backend runs
// (storage/broker/callout), so each credential gets only its own subjects.
type CalloutOptions struct {
	// Keys sign the users; with an XKey, requests and answers are sealed
	// too. The backend's own embedded server runs without one: the
	// callout's connection is in-process, so a request never crosses a
	// wire, and sealing was a third of the cost of every connection.
	Keys callout.Keys
	// Password of ServiceUser (random at every start).
	Password string
}

// calloutAuthTimeout is how long the server waits for the callout to
// answer. A thousand agents reconnecting at once queue at the callout's
// workers; two seconds (the default) would time some of them out for
// nothing.
const calloutAuthTimeout = 10 * time.Second

// applyCallout configures sopts for auth callout. The shared token, if
// any, is no longer the server's business: the callout accepts it, so
// that legacy agents keep working beside per-PC credentials.
func (c *CalloutOptions) apply(sopts *server.Options) error {
	// The server warns about plaintext passwords; the password is 256
	// random bits, so the cheapest bcrypt cost protects it as well as any.
	hash, err := bcrypt.GenerateFromPassword([]byte(c.Password), bcrypt.MinCost)
	if err != nil {
		return fmt.Errorf("hash the service password: %w", err)
	}
	sopts.Authorization = ""
	sopts.Users = []*server.User{{Username: ServiceUser, Password: string(hash)}}
	sopts.AuthCallout = &server.AuthCallout{
		Issuer:    c.Keys.IssuerPublic(),
		Account:   callout.GlobalAccount,
		AuthUsers: []string{ServiceUser},
	}
	if c.Keys.XKey != nil {
		sopts.AuthCallout.XKey = c.Keys.XKeyPublic()
	}
	sopts.AuthTimeout = calloutAuthTimeout.Seconds()
	return nil
}
