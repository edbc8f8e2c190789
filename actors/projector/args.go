package projector

import (
	"strconv"
	"strings"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
)

// driverSQL writes a statement whose arguments go to the driver as they
// are, bypassing bun's formatter (which renders every value into the SQL
// text: about 40 % slower for the hot multi-row statements of the results
// projection). Its placeholders are the dialect's own: "?" on SQLite,
// "$1, $2, …" on PostgreSQL, so the statement can be sent on the raw
// *sql.Tx of either.
type driverSQL struct {
	strings.Builder
	numbered bool
	args     []any
}

func newDriverSQL(db bun.IDB, capArgs int) *driverSQL {
	return &driverSQL{numbered: db.Dialect().Name() == dialect.PG, args: make([]any, 0, capArgs)}
}

// arg writes one placeholder for v.
func (q *driverSQL) arg(v any) {
	q.args = append(q.args, v)
	if q.numbered {
		q.WriteByte('$')
		q.WriteString(strconv.Itoa(len(q.args)))
		return
	}
	q.WriteByte('?')
}

// tuple writes "(p1,p2,…)" for vs.
func (q *driverSQL) tuple(vs ...any) {
	q.WriteByte('(')
	for i, v := range vs {
		if i > 0 {
			q.WriteByte(',')
		}
		q.arg(v)
	}
	q.WriteByte(')')
}

// list writes "p1,p2,…" for vs.
func (q *driverSQL) list(vs []string) {
	for i, v := range vs {
		if i > 0 {
			q.WriteByte(',')
		}
		q.arg(v)
	}
}
