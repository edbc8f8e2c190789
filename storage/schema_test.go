package storage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

// column is one column of the schema as the database reports it.
type column struct {
	table, name, typ string
	notNull          bool
}

// schemaOf lists every application table's columns and every index name
// that a migration created (not the ones the database makes for a primary
// key or UNIQUE column). The agent search index differs by design (an FTS5
// table and its shadow tables on SQLite, pg_trgm indexes on PostgreSQL:
// 20261202100000_agents_search) and is left out; http/fleet's
// TestAgentSearchMatchesTheScan checks each.
func schemaOf(t *testing.T, s *storage.Store) (map[string]column, []string) {
	t.Helper()
	ctx := context.Background()
	var colQ, idxQ string
	if s.IsPostgres() {
		colQ = `SELECT table_name, column_name, data_type, is_nullable = 'NO'
			FROM information_schema.columns WHERE table_schema = current_schema()
			AND table_name NOT LIKE 'bun_%'`
		idxQ = `SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()
			AND tablename NOT LIKE 'bun_%' AND indexname NOT LIKE '%\_pkey' AND indexname NOT LIKE '%\_key'
			AND indexname NOT LIKE 'agents\_search\_%'`
	} else {
		colQ = `SELECT m.name, p.name, p.type, p."notnull" OR p.pk > 0
			FROM sqlite_master AS m JOIN pragma_table_info(m.name) AS p
			WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\_%' ESCAPE '\' AND m.name NOT LIKE 'bun\_%' ESCAPE '\'
			AND m.name NOT LIKE 'agents\_search%' ESCAPE '\'`
		idxQ = `SELECT name FROM sqlite_master WHERE type = 'index'
			AND name NOT LIKE 'sqlite\_autoindex%' ESCAPE '\' AND tbl_name NOT LIKE 'bun\_%' ESCAPE '\'`
	}
	rows, err := s.R.QueryContext(ctx, colQ)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols := map[string]column{}
	for rows.Next() {
		var c column
		if err := rows.Scan(&c.table, &c.name, &c.typ, &c.notNull); err != nil {
			t.Fatal(err)
		}
		cols[c.table+"."+c.name] = c
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var idx []string
	if err := s.R.NewRaw(idxQ).Scan(ctx, &idx); err != nil {
		t.Fatal(err)
	}
	slices.Sort(idx)
	return cols, idx
}

// The two dialects' migrations must build the same schema: the same tables,
// columns, nullability and indexes. An override that forgets a column, or a
// shared migration that only works on one side, fails here.
func TestSchemasOfBothDialectsAgree(t *testing.T) {
	lite := storagetest.Open(t)
	pg := storagetest.OpenPostgres(t)
	liteCols, liteIdx := schemaOf(t, lite)
	pgCols, pgIdx := schemaOf(t, pg)
	if len(liteCols) == 0 {
		t.Fatal("no columns read from SQLite")
	}
	for _, k := range slices.Sorted(maps.Keys(liteCols)) {
		p, ok := pgCols[k]
		if !ok {
			t.Errorf("column %s exists on SQLite only", k)
			continue
		}
		if p.notNull != liteCols[k].notNull {
			t.Errorf("column %s: NOT NULL is %v on SQLite, %v on PostgreSQL", k, liteCols[k].notNull, p.notNull)
		}
	}
	for k := range pgCols {
		if _, ok := liteCols[k]; !ok {
			t.Errorf("column %s exists on PostgreSQL only", k)
		}
	}
	if !slices.Equal(liteIdx, pgIdx) {
		t.Errorf("indexes differ:\nsqlite:   %v\npostgres: %v", liteIdx, pgIdx)
	}
}

// models are the row types of storage; every one must match its
// PostgreSQL columns' types.
var models = []any{
	(*storage.Agent)(nil), (*storage.ExecutionResult)(nil), (*storage.Execution)(nil),
	(*storage.PublishedRequest)(nil), (*storage.ExecExpected)(nil), (*storage.ExecWave)(nil),
	(*storage.InventoryFact)(nil), (*storage.AuditRow)(nil), (*storage.ProjectionError)(nil),
	(*storage.Checkpoint)(nil), (*storage.GroupMember)(nil), (*storage.GroupRevision)(nil),
	(*storage.Job)(nil), (*storage.ScheduleRow)(nil),
}

// pgTypes are the PostgreSQL column types a Go field type may be stored
// in. INTEGER is 32-bit on PostgreSQL (64-bit on SQLite), so 64-bit Go
// integers need BIGINT; a Go bool is sent as TRUE/FALSE, which only a
// BOOLEAN column takes.
func pgTypes(typ reflect.Type) []string {
	switch {
	case typ == reflect.TypeFor[storage.Time]():
		return []string{"text"}
	case typ == reflect.TypeFor[json.RawMessage]():
		return []string{"text"}
	case typ.Kind() == reflect.Slice && typ.Elem().Kind() == reflect.Uint8:
		return []string{"bytea"}
	}
	switch typ.Kind() {
	case reflect.String:
		return []string{"text"}
	case reflect.Bool:
		return []string{"boolean"}
	case reflect.Int, reflect.Int32, reflect.Int16, reflect.Int8, reflect.Uint32, reflect.Uint16, reflect.Uint8:
		return []string{"integer", "bigint"}
	case reflect.Int64, reflect.Uint64, reflect.Uint:
		return []string{"bigint"}
	}
	return []string{fmt.Sprintf("(no rule for %s)", typ)}
}

func TestPostgresColumnTypesFitTheModels(t *testing.T) {
	pg := storagetest.OpenPostgres(t)
	cols, _ := schemaOf(t, pg)
	for _, m := range models {
		table := pg.W.Table(reflect.TypeOf(m))
		for _, f := range table.Fields {
			key := table.Name + "." + f.Name
			c, ok := cols[key]
			if !ok {
				t.Errorf("%s (%s.%s): no such column", key, table.TypeName, f.GoName)
				continue
			}
			if want := pgTypes(f.IndirectType); !slices.Contains(want, c.typ) {
				t.Errorf("%s is %s on PostgreSQL; the model's Go type %s needs %s",
					key, c.typ, f.IndirectType, strings.Join(want, " or "))
			}
		}
	}
}
