package agentauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/actors/clock"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

// Token prefixes: the callout tells an agent credential from an operator
// token or the shared token by them, and secret scanners find leaked ones.
const (
	PCTokenPrefix     = "kanade_pc_"
	EnrollTokenPrefix = "kanade_enroll_"
)

// Credential kinds.
const (
	KindPC         = "pc"
	KindEnrollment = "enrollment"
)

// States of a credential, derived from its columns.
const (
	StateActive  = "active"  // may connect as its PC
	StatePending = "pending" // enrollment token not bound to a PC yet
	StateExpired = "expired" // enrollment token never bound in time
	StateRevoked = "revoked"
)

// Credential is one row of agent_credentials, as the API shows it. The
// token hash never leaves the server.
type Credential struct {
	bun.BaseModel `bun:"table:agent_credentials"`

	ID         string       `bun:"id,pk" json:"id"`
	Kind       string       `bun:"kind,notnull" json:"kind"`
	PcID       *string      `bun:"pc_id" json:"pc_id"`
	TokenHash  []byte       `bun:"token_hash,notnull" json:"-"`
	Groups     Groups       `bun:"groups,notnull" json:"groups"`
	CreatedAt  storage.Time `bun:"created_at,notnull" json:"created_at"`
	CreatedBy  string       `bun:"created_by,notnull" json:"created_by"`
	ExpiresAt  storage.Time `bun:"expires_at" json:"expires_at"`
	BoundAt    storage.Time `bun:"bound_at" json:"bound_at"`
	LastUsedAt storage.Time `bun:"last_used_at" json:"last_used_at"`
	RevokedAt  storage.Time `bun:"revoked_at" json:"revoked_at"`
	RevokedBy  *string      `bun:"revoked_by" json:"revoked_by"`
	// State is derived (StateAt); filled by the store for the API.
	State string `bun:"-" json:"state"`
}

// StateAt tells what the credential allows at now.
func (c *Credential) StateAt(now time.Time) string {
	switch {
	case !c.RevokedAt.IsZero():
		return StateRevoked
	case c.PcID != nil:
		return StateActive
	case !c.ExpiresAt.IsZero() && !now.Before(c.ExpiresAt.Time):
		return StateExpired
	default:
		return StatePending
	}
}

// Groups is a JSON array column of group names.
type Groups []string

// Value implements driver.Valuer.
func (g Groups) Value() (driver.Value, error) {
	if g == nil {
		g = Groups{}
	}
	b, err := json.Marshal([]string(g))
	return string(b), err
}

// Scan implements sql.Scanner.
func (g *Groups) Scan(src any) error {
	var b []byte
	switch v := src.(type) {
	case nil:
		*g = Groups{}
		return nil
	case string:
		b = []byte(v)
	case []byte:
		b = v
	default:
		return fmt.Errorf("groups: cannot scan %T", src)
	}
	var out []string
	if err := json.Unmarshal(b, &out); err != nil {
		return fmt.Errorf("groups: %w", err)
	}
	*g = Groups(out)
	return nil
}

// MarshalJSON emits [] for no groups.
func (g Groups) MarshalJSON() ([]byte, error) {
	if g == nil {
		return []byte("[]"), nil
	}
	return json.Marshal([]string(g))
}

// Issued is a credential with its token: the only time the token exists
// outside the agent it is installed on.
type Issued struct {
	Credential
	Token string `json:"token"`
}

// TokenHash is what the store keeps instead of a token: its SHA-256. A
// fast hash is enough because tokens are 256 random bits; a stolen
// database yields no usable token.
func TokenHash(tok string) []byte {
	h := sha256.Sum256([]byte(tok))
	return h[:]
}

// IsAgentToken reports whether tok looks like an agent credential.
func IsAgentToken(tok string) bool {
	return strings.HasPrefix(tok, PCTokenPrefix) || strings.HasPrefix(tok, EnrollTokenPrefix)
}

func newToken(prefix string) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random token: %w", err)
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b), nil
}

func newID() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Store keeps agent credentials in the SQL store: writes through the
// single writer, lookups on the read pool.
type Store struct {
	st    *storage.Store
	clock clock.Clock
}

// NewStore returns the credentials of st; c stamps changes (real when nil).
func NewStore(st *storage.Store, c clock.Clock) *Store {
	if c == nil {
		c = clock.Real{}
	}
	return &Store{st: st, clock: c}
}

// Now is the store's clock.
func (s *Store) Now() time.Time { return s.clock.Now() }

// MintPC makes one credential for each pc_id, in one transaction, and
// returns them with their tokens in the same order.
func (s *Store) MintPC(ctx context.Context, pcIDs []string, by string) ([]Issued, error) {
	now := storage.T(s.clock.Now())
	out := make([]Issued, len(pcIDs))
	for i, pc := range pcIDs {
		c, tok, err := newCredential(PCTokenPrefix)
		if err != nil {
			return nil, err
		}
		c.Kind, c.PcID, c.CreatedAt, c.CreatedBy = KindPC, &pc, now, by
		c.State = StateActive
		out[i] = Issued{Credential: c, Token: tok}
	}
	return out, s.insert(ctx, out)
}

// CreateEnrollments makes n enrollment tokens that bind to a PC before
// expires and then put it in groups.
func (s *Store) CreateEnrollments(ctx context.Context, n int, groups []string, expires time.Time, by string) ([]Issued, error) {
	now := storage.T(s.clock.Now())
	out := make([]Issued, n)
	for i := range out {
		c, tok, err := newCredential(EnrollTokenPrefix)
		if err != nil {
			return nil, err
		}
		c.Kind, c.Groups, c.CreatedAt, c.CreatedBy, c.ExpiresAt = KindEnrollment, Groups(groups), now, by, storage.T(expires)
		c.State = StatePending
		out[i] = Issued{Credential: c, Token: tok}
	}
	return out, s.insert(ctx, out)
}

func newCredential(prefix string) (Credential, string, error) {
	tok, err := newToken(prefix)
	if err != nil {
		return Credential{}, "", err
	}
	id, err := newID()
	if err != nil {
		return Credential{}, "", err
	}
	return Credential{ID: id, TokenHash: TokenHash(tok), Groups: Groups{}}, tok, nil
}

// insertChunk bounds the rows of one INSERT (SQLite allows 32 766
// parameters; a row has 12).
const insertChunk = 500

func (s *Store) insert(ctx context.Context, rows []Issued) error {
	if len(rows) == 0 {
		return nil
	}
	return s.st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		for part := range slices.Chunk(rows, insertChunk) {
			cs := make([]Credential, len(part))
			for i := range part {
				cs[i] = part[i].Credential
			}
			if _, err := tx.NewInsert().Model(&cs).Exec(ctx); err != nil {
				return fmt.Errorf("insert %d agent credentials: %w", len(cs), err)
			}
		}
		return nil
	})
}

// ListPC returns a page of the credentials of pcID, newest first, and how
// many there are.
func (s *Store) ListPC(ctx context.Context, pcID string, limit, offset int) ([]Credential, int, error) {
	return s.list(ctx, limit, offset, func(q *bun.SelectQuery) *bun.SelectQuery {
		return q.Where("pc_id = ?", pcID).OrderExpr("created_at DESC, id")
	})
}

// ListEnrollments returns a page of the enrollment tokens (bound ones too),
// newest first.
func (s *Store) ListEnrollments(ctx context.Context, limit, offset int) ([]Credential, int, error) {
	return s.list(ctx, limit, offset, func(q *bun.SelectQuery) *bun.SelectQuery {
		return q.Where("kind = ?", KindEnrollment).OrderExpr("created_at DESC, id")
	})
}

func (s *Store) list(ctx context.Context, limit, offset int, where func(*bun.SelectQuery) *bun.SelectQuery) ([]Credential, int, error) {
	var cs []Credential
	n, err := where(s.st.R.NewSelect().Model(&cs)).Limit(int64(limit)).Offset(int64(offset)).ScanAndCount(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("list agent credentials: %w", err)
	}
	now := s.clock.Now()
	for i := range cs {
		cs[i].State = cs[i].StateAt(now)
	}
	return cs, int(n), nil
}

// ByTokenHash is the callout's lookup, run for every agent connection: one
// indexed read, no cache, so a revocation applies to the next connection.
// It reads only what the decision needs, with a plain query: at a fleet's
// reconnect it runs a thousand times a second.
func (s *Store) ByTokenHash(ctx context.Context, hash []byte) (Credential, bool, error) {
	var c Credential
	var pcID sql.NullString
	err := s.st.R.QueryRowContext(ctx, tokenLookup, hash).Scan(&c.ID, &c.Kind, &pcID, &c.ExpiresAt, &c.RevokedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return c, false, nil
	}
	if err != nil {
		return c, false, fmt.Errorf("look up agent credential: %w", err)
	}
	if pcID.Valid {
		c.PcID = &pcID.String
	}
	c.State = c.StateAt(s.clock.Now())
	return c, true, nil
}

// tokenLookup finds a credential by token hash (index agent_credentials_token_hash).
const tokenLookup = "SELECT id, kind, pc_id, expires_at, revoked_at FROM agent_credentials WHERE token_hash = ?"

// Get reads one credential.
func (s *Store) Get(ctx context.Context, id string) (Credential, error) {
	return get(ctx, s.st.R, id, s.clock.Now())
}

func get(ctx context.Context, db bun.IDB, id string, now time.Time) (Credential, error) {
	var c Credential
	err := db.NewSelect().Model(&c).Where("id = ?", id).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return c, messages.NotFoundf("agent credential '%s' not found", id)
	}
	if err != nil {
		return c, fmt.Errorf("read agent credential %s: %w", id, err)
	}
	c.State = c.StateAt(now)
	return c, nil
}

// RevokePC revokes every credential of pcID that is not revoked yet and
// returns them (none is not an error: revoking is idempotent).
func (s *Store) RevokePC(ctx context.Context, pcID, by string) ([]Credential, error) {
	var out []Credential
	now := s.clock.Now()
	err := s.st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		out = nil
		if err := tx.NewSelect().Model(&out).Where("pc_id = ? AND revoked_at IS NULL", pcID).Scan(ctx); err != nil {
			return fmt.Errorf("read credentials of %s: %w", pcID, err)
		}
		if len(out) == 0 {
			return nil
		}
		_, err := tx.NewUpdate().Model((*Credential)(nil)).
			Set("revoked_at = ?", storage.T(now)).Set("revoked_by = ?", by).
			Where("pc_id = ? AND revoked_at IS NULL", pcID).Exec(ctx)
		if err != nil {
			return fmt.Errorf("revoke credentials of %s: %w", pcID, err)
		}
		return nil
	})
	for i := range out {
		out[i].RevokedAt, out[i].RevokedBy = storage.T(now), &by
		out[i].State = StateRevoked
	}
	return out, err
}

// Match narrows which credential Revoke may revoke; empty fields match
// anything.
type Match struct {
	// PcID is the PC the credential must belong to.
	PcID string
	// Kind is the kind it must have.
	Kind string
}

// Revoke revokes one credential and returns it as it was before (a
// revoked one is returned unchanged: revoking is idempotent). A credential
// that does not match m is not found.
func (s *Store) Revoke(ctx context.Context, id string, m Match, by string) (before Credential, err error) {
	now := s.clock.Now()
	err = s.st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		c, err := get(ctx, tx, id, now)
		if err != nil {
			return err
		}
		if m.PcID != "" && (c.PcID == nil || *c.PcID != m.PcID) {
			return messages.NotFoundf("agent credential '%s' not found for pc '%s'", id, m.PcID)
		}
		if m.Kind != "" && c.Kind != m.Kind {
			return messages.NotFoundf("%s '%s' not found", m.Kind, id)
		}
		before = c
		if !c.RevokedAt.IsZero() {
			return nil
		}
		_, err = tx.NewUpdate().Model((*Credential)(nil)).
			Set("revoked_at = ?", storage.T(now)).Set("revoked_by = ?", by).
			Where("id = ?", id).Exec(ctx)
		if err != nil {
			return fmt.Errorf("revoke credential %s: %w", id, err)
		}
		return nil
	})
	return before, err
}

// Touch records when credentials were last used, many at once (the
// callout batches them: one transaction per connection would starve the
// single writer when a fleet reconnects).
func (s *Store) Touch(ctx context.Context, used map[string]time.Time) error {
	if len(used) == 0 {
		return nil
	}
	ids := make([]string, 0, len(used))
	for id := range used {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return s.st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		for _, id := range ids {
			_, err := tx.NewUpdate().Model((*Credential)(nil)).Set("last_used_at = ?", storage.T(used[id])).
				Where("id = ?", id).Where("last_used_at IS NULL OR last_used_at < ?", storage.T(used[id])).Exec(ctx)
			if err != nil {
				return fmt.Errorf("record use of credential %s: %w", id, err)
			}
		}
		return nil
	})
}

// ErrNotBindable says an enrollment token cannot (or can no longer) be
// bound to the PC asked for.
var ErrNotBindable = errors.New("enrollment token cannot be bound")

// Bind makes enrollment token id the credential of pcID: once, before it
// expires, and only for a PC that has no other live credential (an
// enrollment token is for a PC not known yet; it must not take over one
// that already has its own).
func (s *Store) Bind(ctx context.Context, id, pcID string) (Credential, error) {
	now := s.clock.Now()
	var out Credential
	err := s.st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		c, err := get(ctx, tx, id, now)
		if err != nil {
			return err
		}
		if c.Kind != KindEnrollment || c.State != StatePending {
			return fmt.Errorf("%w: %s is %s", ErrNotBindable, id, c.State)
		}
		n, err := tx.NewSelect().Model((*Credential)(nil)).Where("pc_id = ? AND revoked_at IS NULL", pcID).Count(ctx)
		if err != nil {
			return fmt.Errorf("count credentials of %s: %w", pcID, err)
		}
		if n > 0 {
			return fmt.Errorf("%w: pc %s already has a credential", ErrNotBindable, pcID)
		}
		c.PcID, c.BoundAt, c.State = &pcID, storage.T(now), StateActive
		if _, err := tx.NewUpdate().Model(&c).Column("pc_id", "bound_at").WherePK().Exec(ctx); err != nil {
			return fmt.Errorf("bind enrollment %s to %s: %w", id, pcID, err)
		}
		out = c
		return nil
	})
	return out, err
}

// HasLive reports whether pcID has a credential that is not revoked.
func (s *Store) HasLive(ctx context.Context, pcID string) (bool, error) {
	n, err := s.st.R.NewSelect().Model((*Credential)(nil)).Where("pc_id = ? AND revoked_at IS NULL", pcID).Limit(1).Count(ctx)
	if err != nil {
		return false, fmt.Errorf("count credentials of %s: %w", pcID, err)
	}
	return n > 0, nil
}
