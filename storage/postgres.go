package storage

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
	"github.com/uptrace/bun/dialect/pgdialect"
)

// migrationLock is the key of the PostgreSQL advisory lock held while
// migrating, so that replicas starting together migrate one at a time
// (bun's migrator assumes it is alone). Any constant works; this one reads
// "kanade" in ASCII.
const migrationLock = 0x6b616e616465

// openPostgres opens the two pools on opts.URL. Bun formats every query's
// arguments into its text itself, so pgx runs them in the simple protocol:
// one round trip, and no per-connection statement cache filling up with
// one-off query texts (pgx's default prepares each new text first). A URL
// that sets default_query_exec_mode keeps its choice.
func openPostgres(ctx context.Context, opts Options) (*Store, error) {
	if !IsPostgresURL(opts.URL) {
		return nil, fmt.Errorf("storage: database URL %q: want postgres://user:password@host:port/database", RedactURL(opts.URL))
	}
	if opts.ReadConns <= 0 {
		opts.ReadConns = 10
	}
	if opts.WriteConns <= 0 {
		opts.WriteConns = 10
	}
	cfg, err := pgx.ParseConfig(opts.URL)
	if err != nil {
		// pgx's message already hides the password.
		return nil, fmt.Errorf("storage: database URL: %w", err)
	}
	if !strings.Contains(opts.URL, "default_query_exec_mode") {
		cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	}
	rcfg := cfg.Copy()
	rcfg.RuntimeParams["default_transaction_read_only"] = "on"

	wsql := stdlib.OpenDB(*cfg)
	wsql.SetMaxOpenConns(opts.WriteConns)
	wsql.SetMaxIdleConns(opts.WriteConns)
	rsql := stdlib.OpenDB(*rcfg)
	rsql.SetMaxOpenConns(opts.ReadConns)
	rsql.SetMaxIdleConns(opts.ReadConns)
	s := &Store{
		W: bun.NewDB(wsql, pgdialect.New()), R: bun.NewDB(rsql, pgdialect.New()),
		dialect: dialect.PG, location: RedactURL(opts.URL), logger: opts.Logger,
	}
	if err := verifyPostgres(ctx, s.W, s.location); err != nil {
		_ = s.Close()
		return nil, pgOpenError(s.location, err)
	}
	if err := s.migrateLocked(ctx, cfg); err != nil {
		_ = s.Close()
		return nil, pgOpenError(s.location, err)
	}
	return s, nil
}

// pgOpenError marks a failure of the server's environment (unreachable,
// read-only, full) as ErrUnavailable, naming the database, as openError
// does for SQLite; err already names it otherwise.
func pgOpenError(where string, err error) error {
	if Cause(err) == "" {
		return err
	}
	return fmt.Errorf("database %s: %w", where, Unavailable(err))
}

// collationProbe is text whose byte order (SQLite's BINARY collation)
// differs from every natural-language collation: case, punctuation,
// digits and a non-ASCII letter.
var collationProbe = []string{"pc-a", "PC-B", "pc_1", "pc-10", "pc-9", "Z", "_", "é", "z"}

// verifyPostgres refuses a database that would not behave like the SQLite
// one: lists are ordered and keyset-paged by text columns, so PostgreSQL
// must sort text by bytes (the C collation), which is also what lets
// LIKE 'x%' use a btree index. It asks the database to sort, so that the
// check holds whatever provider (libc, ICU) and version set the order.
func verifyPostgres(ctx context.Context, db *bun.DB, where string) error {
	// The encoding comes with the connection's startup parameters: a query
	// in another encoding fails before it could be asked for.
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connect to database %s: %w", where, err)
	}
	var encoding string
	err = conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("unexpected driver connection %T", dc)
		}
		encoding = c.Conn().PgConn().ParameterStatus("server_encoding")
		return nil
	})
	_ = conn.Close()
	if err != nil {
		return fmt.Errorf("connect to database %s: %w", where, err)
	}
	if !strings.EqualFold(encoding, "UTF8") {
		return fmt.Errorf("storage: database %s has encoding %s, want UTF8; refusing to start", where, encoding)
	}
	var got []string
	err = db.NewSelect().
		TableExpr("(VALUES ?) AS probe (v)", bun.Safe(valuesList(collationProbe))).
		Column("v").OrderExpr("v").Scan(ctx, &got)
	if err != nil {
		return fmt.Errorf("check collation of %s: %w", where, err)
	}
	want := slices.Clone(collationProbe)
	slices.Sort(want) // Go compares strings bytewise, as SQLite does
	if !slices.Equal(got, want) {
		var collation string
		_ = db.QueryRowContext(ctx, "SELECT datcollate FROM pg_database WHERE datname = current_database()").Scan(&collation)
		return fmt.Errorf("storage: database %s sorts text by a language collation (%s), not by bytes as SQLite does, "+
			"so lists would come out in another order; create it with the C collation: "+
			"CREATE DATABASE <name> OWNER <role> ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0 "+
			"(add LOCALE_PROVIDER libc if the cluster defaults to ICU); refusing to start", where, collation)
	}
	return nil
}

// valuesList renders ss as the rows of a VALUES list: ('a'), ('b'). The
// probe is a constant of this file; quotes are doubled all the same.
func valuesList(ss []string) string {
	rows := make([]string, len(ss))
	for i, s := range ss {
		rows[i] = "('" + strings.ReplaceAll(s, "'", "''") + "')"
	}
	return strings.Join(rows, ", ")
}

// migrateLocked runs the migrations under a session advisory lock held on a
// connection of its own (the pools may be a single connection, which the
// migrator needs).
func (s *Store) migrateLocked(ctx context.Context, cfg *pgx.ConnConfig) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to database %s for migrations: %w", s.location, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, fmt.Sprintf("SELECT pg_advisory_lock(%d)", migrationLock)); err != nil {
		return fmt.Errorf("lock migrations: %w", err)
	}
	// Closing the session releases the lock too; unlocking first only
	// lets a waiting replica go on without waiting for the disconnect.
	defer conn.Exec(context.WithoutCancel(ctx), fmt.Sprintf("SELECT pg_advisory_unlock(%d)", migrationLock)) //nolint:errcheck // see above
	return s.migrate(ctx)
}

// RedactURL returns u with its password replaced by "xxxxx", for logs
// and error messages.
func RedactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable database URL)"
	}
	q := p.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		p.RawQuery = q.Encode()
	}
	return p.Redacted()
}
