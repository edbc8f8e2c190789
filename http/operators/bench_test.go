package operators_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"kanade-backend/http/auth"
	"kanade-backend/http/operators"
	"kanade-backend/storage/storagetest"
)

// BenchmarkAuthenticate is the price of looking every operator token up in
// SQLite (no cache, so that a revocation applies to the next request):
// one authenticated request through the middleware with an operator token,
// among 1 000 operators, next to the same request with the static token,
// compared in memory, and the bare SQL lookup of the same row, as the
// ceilings.
//
//	go test -run '^$' -bench Authenticate -benchtime 20000x ./http/operators/
func BenchmarkAuthenticate(b *testing.B) {
	ctx := context.Background()
	st := storagetest.Open(b)
	store := operators.NewStore(st, nil)
	var tok string
	for i := range 1000 {
		_, t, err := store.Create(ctx, fmt.Sprintf("op-%04d", i), auth.RoleOperator, "admin")
		if err != nil {
			b.Fatal(err)
		}
		tok = t
	}
	const static = "static-token-for-the-benchmark"
	a, err := auth.New(auth.Config{StaticToken: static, Operators: store}, filepath.Join(b.TempDir(), "data"),
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	h := a.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p, _ := auth.PrincipalFrom(r.Context()); p.Role == "" {
			b.Fatal("no principal")
		}
	}))
	run := func(tok string, n int) time.Duration {
		req := httptest.NewRequest("GET", "/api/jobs", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		t0 := time.Now()
		for range n {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
		}
		return time.Since(t0)
	}
	run(tok, 100) // warm the read pool's connections and statement cache
	b.ResetTimer()
	op := run(tok, b.N)
	b.StopTimer()
	ceiling := run(static, b.N)
	hash := auth.TokenHash(tok)
	t0 := time.Now()
	for range b.N {
		var name string
		if err := st.R.QueryRowContext(ctx, "SELECT name FROM operators WHERE token_hash = ?", hash).Scan(&name); err != nil {
			b.Fatal(err)
		}
	}
	raw := time.Since(t0)
	n := float64(b.N)
	b.ReportMetric(float64(op.Microseconds())/n, "operator_us/req")
	b.ReportMetric(float64(raw.Microseconds())/n, "raw_sql_us/lookup")
	b.ReportMetric(float64(ceiling.Microseconds())/n, "static_us/req")
}
