package app

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"kanade-backend/actors/audit"
	"kanade-backend/http/auth"
	"kanade-backend/http/credentials"
	"kanade-backend/http/operators"
	"kanade-backend/storage/agentauth"
	"kanade-backend/storage/broker"
	"kanade-backend/storage/broker/callout"
)

// natsAuth is how NATS clients are authorized: through the backend's auth
// callout (agent credentials enforced) on the embedded server always, and
// on an external server once `kanade-backend nats-config` set it up;
// otherwise, as before, by the server alone with the shared token.
type natsAuth struct {
	enforced bool
	keys     callout.Keys
	// password of broker.ServiceUser, the backend's own connection.
	password string
	// systemPassword of agentauth.SystemUser (external servers only).
	systemPassword string
	policy         agentauth.Policy
}

// prepareNATSAuth decides before anything connects.
func (a *App) prepareNATSAuth() (natsAuth, error) {
	cfg := a.Config
	if cfg.Embedded() {
		keys, err := callout.NewKeys()
		if err != nil {
			return natsAuth{}, err
		}
		// In-process: nothing to seal against (broker.CalloutOptions).
		keys.XKey = nil
		pw, err := agentauth.RandomPassword()
		if err != nil {
			return natsAuth{}, err
		}
		return natsAuth{enforced: true, keys: keys, password: pw, policy: agentauth.Policy{
			SharedToken: cfg.NATS.Token,
			// Without a token the embedded server has always let anyone
			// in; that stays true where only local processes can connect,
			// or where --insecure-nats says so. Listening on the network
			// otherwise takes a credential (per-PC or operator).
			AllowAnonymous: cfg.NATS.Token == "" && (loopbackOnly(cfg.NATS.Listen) || cfg.NATS.Insecure),
		}}, nil
	}
	ext, found, err := agentauth.LoadExternal(cfg.DataDir)
	if err != nil || !found {
		return natsAuth{}, err
	}
	keys, err := ext.Keys()
	if err != nil {
		return natsAuth{}, err
	}
	return natsAuth{enforced: true, keys: keys, password: ext.ServicePassword, systemPassword: ext.SystemPassword,
		policy: agentauth.Policy{SharedToken: cfg.NATS.Token}}, nil
}

// loopbackOnly reports whether the embedded server accepts connections
// from this machine only.
func loopbackOnly(listen string) bool {
	if listen == "" || listen == "off" {
		return true
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// calloutOptions configure the embedded server (nil when not enforced).
func (n natsAuth) calloutOptions() *broker.CalloutOptions {
	if !n.enforced {
		return nil
	}
	return &broker.CalloutOptions{Keys: n.keys, Password: n.password}
}

// connectOptions authenticate the backend's own connection.
func (n natsAuth) connectOptions(o broker.ConnectOptions, token string) broker.ConnectOptions {
	if n.enforced {
		o.User, o.Password = broker.ServiceUser, n.password
	} else {
		o.Token = token
	}
	return o
}

// warnings are what fleet health says about NATS authorization.
func (n natsAuth) warnings() []string {
	if !n.enforced {
		return []string{"agent credentials not enforced: the external NATS does not run the backend's auth callout (see kanade-backend nats-config)"}
	}
	return n.policy.Warnings()
}

// startAgentAuth runs the auth callout (when enforced) and keeps the
// credentials store for the API.
func (a *App) startAgentAuth(ctx context.Context) error {
	a.AgentCreds = agentauth.NewStore(a.Store, a.Clock)
	n := a.natsAuth
	if !n.enforced {
		a.Logger.Warn("agent credentials are not enforced: the external NATS does not run the backend's auth callout; " +
			"run kanade-backend nats-config to set it up")
		return nil
	}
	// The callout's subscription is confirmed with a round trip: give a
	// first connection that is slow to come (a loaded server) the time it
	// had before start stopped waiting for NATS. Agents cannot connect
	// without NATS anyway; HTTP waits for this only with the callout on.
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := broker.WaitConnected(wctx, a.Conn); err != nil {
		return fmt.Errorf("start the NATS auth callout: %w", err)
	}
	var conns agentauth.Conns = agentauth.EmbeddedConns{Server: a.NATSServer}
	if a.NATSServer == nil {
		sys, err := broker.Connect(broker.ConnectOptions{URL: a.Config.NATS.URL, User: agentauth.SystemUser,
			Password: n.systemPassword, Name: "kanade-backend-system", Logger: a.Logger})
		if err != nil {
			return fmt.Errorf("connect to the NATS system account: %w", err)
		}
		a.natsSystem = sys
		conns = agentauth.SystemConns{NC: sys}
	}
	ops := operators.NewStore(a.Store, a.Clock)
	svc, err := agentauth.Start(agentauth.Options{
		Conn: a.Conn, Keys: n.keys, Store: a.AgentCreds, Policy: n.policy, Conns: conns,
		Operators: func(ctx context.Context, tok string) (agentauth.OperatorToken, bool, error) {
			c, found, err := ops.OperatorByTokenHash(ctx, auth.TokenHash(tok))
			return agentauth.OperatorToken{Name: c.Name, Role: string(c.Role), Revoked: c.Revoked}, found, err
		},
		Groups: credentials.GroupAdder(a.JS),
		Audit:  audit.NewPublisher(a.JS, a.Clock).Publish,
		// Backends of one cluster share the requests.
		Queue: "kanade-backend",
		Clock: a.Clock, Logger: a.Logger, Registerer: a.Metrics,
	})
	if err != nil {
		return err
	}
	a.AgentAuth = svc
	return nil
}

func (a *App) stopAgentAuth(context.Context) error {
	if a.AgentAuth != nil {
		a.AgentAuth.Stop()
	}
	if a.natsSystem != nil {
		a.natsSystem.Close()
	}
	return nil
}

// agentKicker is what the credentials API ends connections with (nil when
// agent credentials are not enforced).
func (a *App) agentKicker() credentials.Kicker {
	if a.AgentAuth == nil {
		return nil
	}
	return a.AgentAuth
}

// natsConfigMain is `kanade-backend nats-config`: it makes (once) the keys
// and passwords of the auth callout on an external NATS cluster, keeps
// them in <data-dir>, and prints the block to paste into every server's
// configuration.
func natsConfigMain(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := Load(args, getenv, stderr)
	if err != nil {
		if err == flagHelp {
			return 0
		}
		fmt.Fprintln(stderr, "kanade-backend nats-config:", err)
		return 2
	}
	ext, created, err := agentauth.LoadOrCreateExternal(cfg.DataDir)
	if err != nil {
		fmt.Fprintln(stderr, "kanade-backend nats-config:", err)
		return 1
	}
	block, err := ext.ServerConfig()
	if err != nil {
		fmt.Fprintln(stderr, "kanade-backend nats-config:", err)
		return 1
	}
	fmt.Fprint(stdout, block)
	verb := "kept in"
	if created {
		verb = "written to"
	}
	fmt.Fprintf(stderr, "kanade-backend nats-config: secrets %s %s (keep it private; every backend of the cluster needs a copy in its data dir).\n"+
		"Paste the block above into every nats-server's configuration, restart them, then start the backend with --nats-url.\n",
		verb, cfg.DataDir+"/"+agentauth.ExternalFile)
	return 0
}
