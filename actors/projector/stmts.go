package projector

import (
	"context"
	"database/sql"
	"fmt"
	"sync"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"

	"kanade-backend/storage"
)

// stmtCache keeps the hot multi-row statements prepared on SQLite's one
// writer connection. A full 500-row chunk always has the same text (the
// values go to the driver as arguments), and compiling it is a large part
// of its cost: the 500-row answers UPDATE spent about half its CPU in
// sqlite3_prepare before this cache. modernc.org/sqlite has no statement
// cache of its own; PostgreSQL gets none (its writers send the simple
// protocol, and several writer connections would each prepare again).
//
// A statement cannot be prepared on the writer pool while a transaction
// holds its only connection, so a text is learnt during a transaction
// (run unprepared, remembered) and prepared after it, by prepareWanted;
// the results statements are known in advance and prepared at start
// (warm).
type stmtCache struct {
	db    *sql.DB
	mu    sync.Mutex
	ready map[string]*sql.Stmt
	want  map[string]bool
}

// maxCachedStmts bounds the cache: only full chunks are offered, so a few
// texts per statement kind is all it ever sees.
const maxCachedStmts = 16

// newStmtCache returns the cache for db's writer, nil on PostgreSQL (a nil
// cache runs every statement unprepared).
func newStmtCache(db *bun.DB) *stmtCache {
	if db.Dialect().Name() == dialect.PG {
		return nil
	}
	return &stmtCache{db: db.DB, ready: map[string]*sql.Stmt{}, want: map[string]bool{}}
}

// stmt returns q's prepared statement bound to tx, or nil when it is not
// prepared yet; reuse says q is worth preparing (a full chunk).
func (c *stmtCache) stmt(ctx context.Context, tx bun.Tx, q *storage.DriverSQL, reuse bool) *sql.Stmt {
	if c == nil {
		return nil
	}
	text := q.String()
	c.mu.Lock()
	st := c.ready[text]
	if st == nil && reuse {
		c.learnLocked(text)
	}
	c.mu.Unlock()
	if st == nil {
		return nil
	}
	return tx.Tx.StmtContext(ctx, st)
}

// query runs q in tx, prepared when the cache holds it.
func (c *stmtCache) query(ctx context.Context, tx bun.Tx, q *storage.DriverSQL, reuse bool) (*sql.Rows, error) {
	if st := c.stmt(ctx, tx, q, reuse); st != nil {
		return st.QueryContext(ctx, q.Args...)
	}
	return tx.Tx.QueryContext(ctx, q.String(), q.Args...)
}

// exec runs q in tx, prepared when the cache holds it.
func (c *stmtCache) exec(ctx context.Context, tx bun.Tx, q *storage.DriverSQL, reuse bool) (sql.Result, error) {
	if st := c.stmt(ctx, tx, q, reuse); st != nil {
		return st.ExecContext(ctx, q.Args...)
	}
	return tx.Tx.ExecContext(ctx, q.String(), q.Args...)
}

// warm prepares texts at once. It must run outside any transaction of the
// writer; the projector prepares the results statements this way when it
// starts, so that the first broadcast after a start does not compile them
// for every chunk of its first full batch (1–4 ms each).
func (c *stmtCache) warm(ctx context.Context, texts ...string) error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	for _, t := range texts {
		if c.ready[t] == nil {
			c.learnLocked(t)
		}
	}
	c.mu.Unlock()
	return c.prepareWanted(ctx)
}

// learnLocked marks text to be prepared by the next prepareWanted, while
// the cache has room (c.mu held).
func (c *stmtCache) learnLocked(text string) {
	if len(c.ready)+len(c.want) < maxCachedStmts {
		c.want[text] = true
	}
}

// prepareWanted prepares the texts learnt since the last call. It must run
// outside any transaction of the writer (it needs the connection). A text
// that does not prepare stays unprepared: the statement ran already, so
// only its speed-up is lost.
func (c *stmtCache) prepareWanted(ctx context.Context) error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	var texts []string
	for t := range c.want {
		texts = append(texts, t)
	}
	clear(c.want)
	c.mu.Unlock()
	var firstErr error
	for _, t := range texts {
		st, err := c.db.PrepareContext(ctx, t)
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("prepare a hot statement: %w", err)
			}
			continue
		}
		c.mu.Lock()
		if c.ready[t] == nil {
			c.ready[t], st = st, nil
		}
		c.mu.Unlock()
		if st != nil {
			_ = st.Close()
		}
	}
	return firstErr
}

// close releases the prepared statements.
func (c *stmtCache) close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for t, st := range c.ready {
		_ = st.Close()
		delete(c.ready, t)
	}
	clear(c.want)
}
