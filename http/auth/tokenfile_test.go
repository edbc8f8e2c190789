package auth

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testLogger returns a logger writing to a buffer the test can search, at
// debug level so a token leaking into any log line would be caught.
func testLogger() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), &buf
}

func TestNewModePrecedence(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want Mode
	}{
		{name: "disable wins over everything", cfg: Config{Disable: true, StaticToken: "st-9f2c1e", JWTSecret: "key"}, want: ModeDisabled},
		{name: "static wins over jwt", cfg: Config{StaticToken: "st-9f2c1e", JWTSecret: "key"}, want: ModeStatic},
		{name: "jwt", cfg: Config{JWTSecret: "key"}, want: ModeJWT},
		{name: "blank static falls through to jwt", cfg: Config{StaticToken: "  ", JWTSecret: "key"}, want: ModeJWT},
		{name: "nothing configured generates", cfg: Config{}, want: ModeGenerated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			logger, logs := testLogger()
			a, err := New(tt.cfg, dir, logger)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if a.Mode() != tt.want {
				t.Fatalf("Mode() = %q, want %q", a.Mode(), tt.want)
			}
			tokenFile := filepath.Join(dir, TokenFileName)
			_, statErr := os.Stat(tokenFile)
			switch tt.want {
			case ModeGenerated:
				if a.TokenFile() != tokenFile || statErr != nil {
					t.Fatalf("TokenFile() = %q (stat err %v), want existing %q", a.TokenFile(), statErr, tokenFile)
				}
			default:
				// Only the secure default may write into the data directory.
				if a.TokenFile() != "" || !os.IsNotExist(statErr) {
					t.Fatalf("mode %s: TokenFile() = %q, stat err %v; want no token file", tt.want, a.TokenFile(), statErr)
				}
			}
			switch tt.want {
			case ModeStatic:
				if a.Token() != "st-9f2c1e" {
					t.Fatalf("Token() = %q, want the static token", a.Token())
				}
			case ModeJWT, ModeDisabled:
				if a.Token() != "" {
					t.Fatalf("Token() = %q, want empty in %s mode", a.Token(), tt.want)
				}
			}
			if a.Token() != "" && strings.Contains(logs.String(), a.Token()) {
				t.Fatalf("log contains the token:\n%s", logs)
			}
		})
	}
}

func TestGeneratedTokenFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "data")
	logger, logs := testLogger()

	a, err := New(Config{}, dir, logger)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if len(a.Token()) < 43 { // 32 bytes in unpadded base64
		t.Fatalf("generated token %q is shorter than 32 random bytes", a.Token())
	}
	assertPerm(t, dir, 0o700)
	assertPerm(t, a.TokenFile(), 0o600)
	b, err := os.ReadFile(a.TokenFile())
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(b)) != a.Token() {
		t.Fatalf("token file holds %q, Token() = %q", b, a.Token())
	}

	// A second start reuses the token so dashboard links keep working.
	b2, err := New(Config{}, dir, logger)
	if err != nil {
		t.Fatalf("second New: %v", err)
	}
	if b2.Token() != a.Token() {
		t.Fatalf("second New generated a new token; want the stored one reused")
	}
	if strings.Contains(logs.String(), a.Token()) {
		t.Fatalf("log contains the token:\n%s", logs)
	}
}

func TestGeneratedTokenFileTightened(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, TokenFileName)
	if err := os.WriteFile(path, []byte("hand-written-token\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil { // past the umask
		t.Fatal(err)
	}
	logger, logs := testLogger()
	a, err := New(Config{}, dir, logger)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if a.Token() != "hand-written-token" {
		t.Fatalf("Token() = %q, want the file's token", a.Token())
	}
	assertPerm(t, path, 0o600)
	if !strings.Contains(logs.String(), "tightened") {
		t.Fatalf("tightening was not logged:\n%s", logs)
	}
	if strings.Contains(logs.String(), "hand-written-token") {
		t.Fatalf("log contains the token:\n%s", logs)
	}
}

func TestGeneratedTokenFileErrors(t *testing.T) {
	t.Run("empty file", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, TokenFileName), []byte("\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		logger, _ := testLogger()
		if _, err := New(Config{}, dir, logger); err == nil || !strings.Contains(err.Error(), "empty") {
			t.Fatalf("New error = %v, want one about the empty token file", err)
		}
	})
	t.Run("no data directory", func(t *testing.T) {
		logger, _ := testLogger()
		if _, err := New(Config{}, "", logger); err == nil {
			t.Fatal("New with no data directory succeeded; want an error")
		}
	})
}

func assertPerm(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Mode().Perm(); got != want {
		t.Fatalf("%s has mode %#o, want %#o", path, got, want)
	}
}
