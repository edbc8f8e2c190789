package storage_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"

	"kanade-backend/storage"
	"kanade-backend/storage/pgtest"
	"kanade-backend/storage/storagetest"
)

func TestDialect(t *testing.T) {
	storagetest.RunDialects(t, func(t *testing.T, d storagetest.Dialect) {
		s := d.Open(t)
		want := map[string]dialect.Name{"sqlite": dialect.SQLite, "postgres": dialect.PG}[d.Name]
		if s.Dialect() != want || s.IsPostgres() != (want == dialect.PG) || s.R.Dialect().Name() != want {
			t.Fatalf("Dialect() = %v, IsPostgres() = %v, want %v", s.Dialect(), s.IsPostgres(), want)
		}
		if s.IsPostgres() && (s.Path() != "" || strings.Contains(s.Location(), "password")) {
			t.Fatalf("Path() = %q, Location() = %q", s.Path(), s.Location())
		}
	})
}

// A PostgreSQL database that sorts text by language rules would page
// lists in another order than SQLite: the store refuses it, and says how
// to create a suitable one.
func TestPostgresRefusesALanguageCollation(t *testing.T) {
	url := pgtest.EmptyURL(t, "LOCALE_PROVIDER icu ICU_LOCALE 'en'")
	_, err := storage.Open(context.Background(), storage.Options{URL: url})
	if err == nil || !strings.Contains(err.Error(), "LC_COLLATE 'C'") || !strings.Contains(err.Error(), "refusing to start") {
		t.Fatalf("err = %v, want a refusal that names the C collation", err)
	}
}

func TestPostgresRefusesANonUTF8Encoding(t *testing.T) {
	url := pgtest.EmptyURL(t, "ENCODING 'SQL_ASCII'")
	_, err := storage.Open(context.Background(), storage.Options{URL: url})
	if err == nil || !strings.Contains(err.Error(), "want UTF8") {
		t.Fatalf("err = %v, want a refusal of SQL_ASCII", err)
	}
}

func TestOpenRejectsOtherURLs(t *testing.T) {
	for _, u := range []string{"mysql://u:secret@h/db", "sqlite:///x.db"} {
		_, err := storage.Open(context.Background(), storage.Options{URL: u})
		if err == nil || !strings.Contains(err.Error(), "want postgres://") || strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: err = %v, want a postgres:// hint without the password", u, err)
		}
	}
}

// Replicas starting together against an empty database must not run the
// migrations twice: the advisory lock serializes them.
func TestPostgresConcurrentFirstStartsMigrateOnce(t *testing.T) {
	url := pgtest.EmptyURL(t, "")
	var wg sync.WaitGroup
	stores := make([]*storage.Store, 3)
	errs := make([]error, 3)
	for i := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = storage.Open(context.Background(), storage.Options{URL: url})
		}()
	}
	wg.Wait()
	for i, s := range stores {
		if errs[i] != nil {
			t.Fatalf("open %d: %v", i, errs[i])
		}
		defer s.Close()
	}
	var applied, files int
	if err := stores[0].R.NewRaw("SELECT count(*) FROM bun_migrations").Scan(context.Background(), &applied); err != nil {
		t.Fatal(err)
	}
	lite := storagetest.Open(t)
	if err := lite.R.NewRaw("SELECT count(*) FROM bun_migrations").Scan(context.Background(), &files); err != nil {
		t.Fatal(err)
	}
	if applied != files || applied == 0 {
		t.Fatalf("bun_migrations has %d rows on PostgreSQL, %d on SQLite; want equal and non-zero", applied, files)
	}
}

// PostgreSQL has no single-writer rule: a second write transaction commits
// while the first is still open.
func TestPostgresWritersRunConcurrently(t *testing.T) {
	s := storagetest.OpenPostgres(t)
	ctx := context.Background()
	inFirst := make(chan struct{})
	secondDone := make(chan error, 1)
	err := s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewInsert().Model(agent("first")).Exec(ctx); err != nil {
			return err
		}
		close(inFirst)
		go func() {
			secondDone <- s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
				_, err := tx.NewInsert().Model(agent("second")).Exec(ctx)
				return err
			})
		}()
		select {
		case err := <-secondDone:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("the second writer waited for the first transaction")
		}
	})
	<-inFirst
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.R.NewSelect().Model((*storage.Agent)(nil)).Count(ctx)
	if err != nil || n != 2 {
		t.Fatalf("n=%d err=%v, want both rows", n, err)
	}
}

// Two writers locking the same rows in opposite orders deadlock on
// PostgreSQL; the server aborts one, and InTx reruns it, so both commit.
func TestPostgresInTxRetriesADeadlock(t *testing.T) {
	s := storagetest.OpenPostgres(t)
	ctx := context.Background()
	for _, pc := range []string{"a", "b"} {
		if _, err := s.W.NewInsert().Model(agent(pc)).Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var (
		wg       sync.WaitGroup
		attempts [2]int
		errs     [2]error
		locked   sync.WaitGroup
	)
	locked.Add(2)
	order := [2][2]string{{"a", "b"}, {"b", "a"}}
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
				attempts[i]++
				for k, pc := range order[i] {
					if _, err := tx.NewUpdate().Model((*storage.Agent)(nil)).Set("agent_version = ?", "v"+pc).
						Where("pc_id = ?", pc).Exec(ctx); err != nil {
						t.Logf("tx %d attempt %d: %v", i, attempts[i], err)
						return err
					}
					if k == 0 && attempts[i] == 1 {
						// Both hold their first row before either asks for
						// its second: a certain deadlock.
						locked.Done()
						locked.Wait()
					}
				}
				return nil
			})
		}()
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("errors: %v, %v", errs[0], errs[1])
	}
	// Usually one rerun; under load the rerun can meet the other writer
	// before it took its second row and deadlock again, which InTx reruns
	// too.
	if attempts[0]+attempts[1] < 3 {
		t.Fatalf("attempts = %v, want a deadlock and a rerun", attempts)
	}
}

func TestIsBusy(t *testing.T) {
	if storage.IsBusy(errors.New("boom")) || storage.IsBusy(nil) {
		t.Fatal("an ordinary error is busy")
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://kanade:s3cret@db:5432/kanade?sslmode=require": "postgres://kanade:xxxxx@db:5432/kanade?sslmode=require",
		"postgres://kanade@db/kanade?password=s3cret":             "postgres://kanade@db/kanade?password=xxxxx",
		"postgresql://db/kanade":                                  "postgresql://db/kanade",
	} {
		if got := storage.RedactURL(in); got != want {
			t.Errorf("RedactURL(%s) = %s, want %s", in, got, want)
		}
	}
	if !storage.IsPostgresURL("postgresql://x/y") || storage.IsPostgresURL("/var/lib/kanade/backend.db") {
		t.Fatal("IsPostgresURL")
	}
}

func agent(pc string) *storage.Agent {
	now := storage.T(time.Now())
	return &storage.Agent{PcID: pc, AgentVersion: "1", LastHeartbeat: now, UpdatedAt: now}
}
