package operators

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"

	"github.com/uptrace/bun"

	"kanade-backend/actors/clock"
	"kanade-backend/http/auth"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

// BootstrapName is the operator the generated admin token belongs to.
const BootstrapName = "admin"

// bootstrapCreator is the created_by of the bootstrap operator: nobody made
// it through the API.
const bootstrapCreator = "generated"

// Operator is one row of the operators table, as the API shows it. The
// token hash never leaves the server.
type Operator struct {
	bun.BaseModel `bun:"table:operators"`

	Name      string       `bun:"name,pk" json:"name"`
	Role      auth.Role    `bun:"role,notnull" json:"role"`
	TokenHash []byte       `bun:"token_hash,notnull" json:"-"`
	CreatedAt storage.Time `bun:"created_at,notnull" json:"created_at"`
	CreatedBy string       `bun:"created_by,notnull" json:"created_by"`
	UpdatedAt storage.Time `bun:"updated_at,notnull" json:"updated_at"`
	RevokedAt storage.Time `bun:"revoked_at" json:"revoked_at"`
	RevokedBy *string      `bun:"revoked_by" json:"revoked_by"`
}

// Revoked reports whether the operator's token was revoked.
func (o *Operator) Revoked() bool { return !o.RevokedAt.IsZero() }

// Store keeps operators in the SQL store: writes through the single writer,
// token lookups on the read pool. It implements auth.OperatorStore.
type Store struct {
	st    *storage.Store
	clock clock.Clock
}

var _ auth.OperatorStore = (*Store)(nil)

// NewStore returns the operators of st; c stamps the changes (clock.Real
// when nil).
func NewStore(st *storage.Store, c clock.Clock) *Store {
	if c == nil {
		c = clock.Real{}
	}
	return &Store{st: st, clock: c}
}

// OperatorByTokenHash is the middleware's lookup, run on every request that
// carries an operator token: one indexed read, no cache, so a revocation
// (or a role change) applies to the very next request.
// It is a plain query (BenchmarkAuthenticate measures it per request next
// to the bare SQL lookup).
func (s *Store) OperatorByTokenHash(ctx context.Context, hash []byte) (auth.OperatorCredential, bool, error) {
	var c auth.OperatorCredential
	err := s.st.R.QueryRowContext(ctx, tokenLookup, hash).Scan(&c.Name, &c.Role, &c.TokenHash, &c.Revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return auth.OperatorCredential{}, false, nil
	}
	if err != nil {
		return auth.OperatorCredential{}, false, fmt.Errorf("look up operator token: %w", err)
	}
	return c, true, nil
}

// tokenLookup finds an operator by token hash (index operators_token_hash).
const tokenLookup = "SELECT name, role, token_hash, revoked_at IS NOT NULL FROM operators WHERE token_hash = ?"

// List returns a page of operators by name, and how many there are.
func (s *Store) List(ctx context.Context, limit, offset int) ([]Operator, int, error) {
	var ops []Operator
	n, err := s.st.R.NewSelect().Model(&ops).OrderExpr("name").Limit(int64(limit)).Offset(int64(offset)).ScanAndCount(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("list operators: %w", err)
	}
	return ops, int(n), nil
}

// Create adds an operator with a fresh token and returns the row and the
// token, which exists nowhere else afterwards. A name already taken, by a
// current or a revoked operator, is a conflict: names are not reused, so
// that a `sub` in the audit trail always means one person.
func (s *Store) Create(ctx context.Context, name string, role auth.Role, by string) (Operator, string, error) {
	tok, err := auth.NewOperatorToken()
	if err != nil {
		return Operator{}, "", err
	}
	now := storage.T(s.clock.Now())
	o := Operator{Name: name, Role: role, TokenHash: auth.TokenHash(tok), CreatedAt: now, CreatedBy: by, UpdatedAt: now}
	err = s.st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewInsert().Model(&o).On("CONFLICT (name) DO NOTHING").Exec(ctx)
		if err != nil {
			return fmt.Errorf("insert operator: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			old, err := get(ctx, tx, name)
			if err != nil {
				return err
			}
			if old.Revoked() {
				return messages.Conflictf("operator '%s' exists and was revoked; names are not reused, so that the audit trail keeps meaning one person: pick another name", name)
			}
			return messages.Conflictf("operator '%s' already exists", name)
		}
		return nil
	})
	if err != nil {
		return Operator{}, "", err
	}
	return o, tok, nil
}

// Change is what Update does to one operator.
type Change struct {
	// Role, when set, becomes the operator's role.
	Role auth.Role
	// Revoke revokes the token; the operator keeps its row.
	Revoke bool
	// NewToken replaces the token; the new one is returned.
	NewToken bool
}

// Update applies c to operator name on behalf of by, and returns the row
// before and after (and the new token, for NewToken). Revoking a revoked
// operator changes nothing; any other change to a revoked one is a
// conflict. With lastAdmin set, an update that would leave no active admin
// is refused: when operators are the only admins (generated-token mode)
// that would lock everyone out of administering the install.
func (s *Store) Update(ctx context.Context, name string, c Change, by string, lastAdmin bool) (before, after Operator, tok string, err error) {
	if c.NewToken {
		if tok, err = auth.NewOperatorToken(); err != nil {
			return before, after, "", err
		}
	}
	err = s.st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		o, err := get(ctx, tx, name)
		if err != nil {
			return err
		}
		before, after = o, o
		if o.Revoked() {
			if c.Revoke && c.Role == "" && !c.NewToken {
				return nil
			}
			return messages.Conflictf("operator '%s' was revoked; create a new operator instead", name)
		}
		now := storage.T(s.clock.Now())
		if c.Role != "" {
			after.Role = c.Role
		}
		if c.Revoke {
			after.RevokedAt = now
			after.RevokedBy = &by
		}
		if c.NewToken {
			after.TokenHash = auth.TokenHash(tok)
		}
		if lastAdmin && o.Role == auth.RoleAdmin && (after.Role != auth.RoleAdmin || after.Revoked()) {
			n, err := tx.NewSelect().Model((*Operator)(nil)).
				Where("role = ? AND revoked_at IS NULL AND name <> ?", auth.RoleAdmin, name).Count(ctx)
			if err != nil {
				return fmt.Errorf("count admins: %w", err)
			}
			if n == 0 {
				return messages.Conflictf("operator '%s' is the last admin; make another operator admin first", name)
			}
		}
		if after.Role == before.Role && after.Revoked() == before.Revoked() && !c.NewToken {
			return nil
		}
		after.UpdatedAt = now
		_, err = tx.NewUpdate().Model(&after).Column("role", "token_hash", "updated_at", "revoked_at", "revoked_by").
			WherePK().Exec(ctx)
		if err != nil {
			return fmt.Errorf("update operator %s: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return Operator{}, Operator{}, "", err
	}
	return before, after, tok, nil
}

// get reads one operator inside tx; a missing one is NotFound.
func get(ctx context.Context, tx bun.Tx, name string) (Operator, error) {
	var o Operator
	err := tx.NewSelect().Model(&o).Where("name = ?", name).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return o, messages.NotFoundf("operator '%s' not found", name)
	}
	if err != nil {
		return o, fmt.Errorf("read operator %s: %w", name, err)
	}
	return o, nil
}

// Bootstrap makes the generated admin token the operator named admin. On
// the first start it inserts admin with the token's hash. Later starts find
// the same hash and change nothing, so a revocation or a role change made
// through the API stays. A different hash means someone with access to the
// data directory replaced the token file (deleting it generates a new one):
// that is the recovery path of an install whose admins are all gone, so
// admin becomes an active admin again with the file's token.
func (s *Store) Bootstrap(ctx context.Context, token string, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.Default()
	}
	hash := auth.TokenHash(token)
	now := storage.T(s.clock.Now())
	return s.st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		o, err := get(ctx, tx, BootstrapName)
		switch {
		case errors.Is(err, messages.ErrNotFound):
			o = Operator{Name: BootstrapName, Role: auth.RoleAdmin, TokenHash: hash, CreatedAt: now,
				CreatedBy: bootstrapCreator, UpdatedAt: now}
			if _, err := tx.NewInsert().Model(&o).Exec(ctx); err != nil {
				return fmt.Errorf("insert the generated admin operator: %w", err)
			}
			logger.Info("the generated admin token is the operator admin", "operator", BootstrapName)
			return nil
		case err != nil:
			return err
		case subtle.ConstantTimeCompare(o.TokenHash, hash) == 1:
			if o.Revoked() || o.Role != auth.RoleAdmin {
				logger.Warn("the generated admin token belongs to an operator that is no longer an active admin; "+
					"delete the token file and restart to make it one again",
					"operator", BootstrapName, "role", string(o.Role), "revoked", o.Revoked())
			}
			return nil
		}
		o.Role, o.TokenHash, o.UpdatedAt, o.RevokedAt, o.RevokedBy = auth.RoleAdmin, hash, now, storage.Time{}, nil
		if _, err := tx.NewUpdate().Model(&o).Column("role", "token_hash", "updated_at", "revoked_at", "revoked_by").
			WherePK().Exec(ctx); err != nil {
			return fmt.Errorf("reset the admin operator to the generated token: %w", err)
		}
		logger.Warn("the generated admin token changed; the operator admin is an active admin with the new token",
			"operator", BootstrapName)
		return nil
	})
}
