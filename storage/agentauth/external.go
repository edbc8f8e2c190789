package agentauth

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"kanade-backend/storage/broker"
	"kanade-backend/storage/broker/callout"
)

// With an external NATS cluster, the servers' configuration must name the
// callout's issuer and curve keys and the two users the backend connects
// as: the service user (which runs the callout, in the global account with
// the streams) and a system-account user (which lists and kicks
// connections on every server). `kanade-backend nats-config` makes these
// once, keeps the secrets in <data-dir>/ExternalFile and prints the block
// to paste into every server's configuration; the backend finds the file
// at start and turns the callout on.

// ExternalFile holds the secrets of the external callout setup (mode 0600).
const ExternalFile = "nats-callout.json"

// SystemUser is the backend's system-account user on an external cluster.
const SystemUser = "kanade-system"

// systemAccount is the name the printed configuration gives the system
// account.
const systemAccount = "SYS"

// External is the content of ExternalFile.
type External struct {
	IssuerSeed      string `json:"issuer_seed"`
	XKeySeed        string `json:"xkey_seed"`
	ServicePassword string `json:"service_password"`
	SystemPassword  string `json:"system_password"`
}

// LoadExternal reads dir's ExternalFile; found is false when there is none
// (the external server then does not run kanade's callout).
func LoadExternal(dir string) (ext External, found bool, err error) {
	path := filepath.Join(dir, ExternalFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return External{}, false, nil
	}
	if err != nil {
		return External{}, false, fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &ext); err != nil {
		return External{}, false, fmt.Errorf("read %s: %w", path, err)
	}
	if _, err := ext.Keys(); err != nil {
		return External{}, false, fmt.Errorf("read %s: %w", path, err)
	}
	if ext.ServicePassword == "" || ext.SystemPassword == "" {
		return External{}, false, fmt.Errorf("read %s: passwords missing", path)
	}
	return ext, true, nil
}

// LoadOrCreateExternal returns dir's external setup, making it first if
// there is none (created reports that). Running nats-config again prints
// the same configuration, so that it can be pasted into a server added to
// the cluster later.
func LoadOrCreateExternal(dir string) (ext External, created bool, err error) {
	ext, found, err := LoadExternal(dir)
	if err != nil || found {
		return ext, false, err
	}
	keys, err := callout.NewKeys()
	if err != nil {
		return External{}, false, err
	}
	if ext.IssuerSeed, ext.XKeySeed, err = keys.Seeds(); err != nil {
		return External{}, false, err
	}
	if ext.ServicePassword, err = randomPassword(); err != nil {
		return External{}, false, err
	}
	if ext.SystemPassword, err = randomPassword(); err != nil {
		return External{}, false, err
	}
	b, err := json.MarshalIndent(ext, "", "  ")
	if err != nil {
		return External{}, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return External{}, false, fmt.Errorf("create %s: %w", dir, err)
	}
	path := filepath.Join(dir, ExternalFile)
	// O_EXCL: two nats-config runs racing must not leave the servers and
	// the backend with different secrets.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return External{}, false, fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return External{}, false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return External{}, false, fmt.Errorf("write %s: %w", path, err)
	}
	return ext, true, nil
}

// RandomPassword is a password for a service user: 256 random bits.
func RandomPassword() (string, error) { return randomPassword() }

func randomPassword() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Keys are the callout keys of the setup.
func (e External) Keys() (callout.Keys, error) { return callout.ParseKeys(e.IssuerSeed, e.XKeySeed) }

// ServerConfig is the block to paste into every nats-server's
// configuration. It holds no secret: the passwords are bcrypt hashes and
// the keys public ones.
func (e External) ServerConfig() (string, error) {
	keys, err := e.Keys()
	if err != nil {
		return "", err
	}
	// bcrypt's minimum cost: the passwords are 256 random bits, which no
	// work factor makes harder to guess, while every server checks the
	// hash on each connection of the backend, and at the default cost that
	// check took seconds on a busy machine (beyond the server's auth
	// timeout, so the backend could not connect at all).
	service, err := bcrypt.GenerateFromPassword([]byte(e.ServicePassword), bcrypt.MinCost)
	if err != nil {
		return "", fmt.Errorf("hash the service password: %w", err)
	}
	system, err := bcrypt.GenerateFromPassword([]byte(e.SystemPassword), bcrypt.MinCost)
	if err != nil {
		return "", fmt.Errorf("hash the system password: %w", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `# kanade-backend auth callout (kanade-backend nats-config).
# Paste into the configuration of every nats-server of the cluster, beside
# jetstream and cluster settings, and remove any other authorization block
# or token. Every client except the two users below is authorized by the
# backend: agents with their per-PC token, operators with their operator
# token, legacy agents with KANADE_NATS_TOKEN if the backend still accepts
# it. Streams and buckets stay in the global account ($G).
authorization {
  users: [
    # The backend's own connection; it answers the auth callout.
    { user: %q, password: %q }
  ]
  auth_callout {
    # The backend signs the users it authorizes with this account key...
    issuer: %q
    # ...and requests and answers are sealed with this curve key.
    xkey: %q
    account: "$G"
    auth_users: [ %q, %q ]
  }
}
# The backend lists and ends connections (a revoked PC is disconnected at
# once) through the system account.
accounts {
  %s: {
    users: [ { user: %q, password: %q } ]
  }
}
system_account: %s
`, broker.ServiceUser, string(service), keys.IssuerPublic(), keys.XKeyPublic(), broker.ServiceUser, SystemUser,
		systemAccount, SystemUser, string(system), systemAccount)
	return b.String(), nil
}
