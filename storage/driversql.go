package storage

import (
	"strconv"
	"strings"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
)

// DriverSQL writes a statement whose arguments go to the driver as they
// are, bypassing bun's formatter (which renders every value into the SQL
// text: about 40 % slower for the hot multi-row statements of the results
// projection and of an exec's expected PCs). Its placeholders are the
// dialect's own: "?" on SQLite, "$1, $2, …" on PostgreSQL, so the
// statement can be sent on the raw *sql.Tx of either with Args.
type DriverSQL struct {
	strings.Builder
	numbered bool
	Args     []any
}

// NewDriverSQL starts a statement for db's dialect, with room for capArgs
// arguments.
func NewDriverSQL(db bun.IDB, capArgs int) *DriverSQL {
	return &DriverSQL{numbered: db.Dialect().Name() == dialect.PG, Args: make([]any, 0, capArgs)}
}

// Numbered reports whether placeholders are numbered ($n, PostgreSQL).
func (q *DriverSQL) Numbered() bool { return q.numbered }

// Arg writes one placeholder for v.
func (q *DriverSQL) Arg(v any) {
	q.Args = append(q.Args, v)
	if q.numbered {
		q.WriteByte('$')
		q.WriteString(strconv.Itoa(len(q.Args)))
		return
	}
	q.WriteByte('?')
}

// Tuple writes "(p1,p2,…)" for vs.
func (q *DriverSQL) Tuple(vs ...any) {
	q.WriteByte('(')
	for i, v := range vs {
		if i > 0 {
			q.WriteByte(',')
		}
		q.Arg(v)
	}
	q.WriteByte(')')
}

// List writes "p1,p2,…" for vs.
func (q *DriverSQL) List(vs []string) {
	for i, v := range vs {
		if i > 0 {
			q.WriteByte(',')
		}
		q.Arg(v)
	}
}
