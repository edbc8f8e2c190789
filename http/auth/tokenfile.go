package auth

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// TokenFileName is the generated token's file inside the data directory.
const TokenFileName = "admin.token"

// tokenBytes is the generated token's entropy: 256 bits, beyond brute force.
const tokenBytes = 32

// loadOrCreateToken returns the token kept in <dataDir>/admin.token and that
// path, generating the file on first start. Reusing the file keeps the token
// stable across restarts, so bookmarked dashboard URLs and scripts keep
// working.
//
// The file is the only credential of an unconfigured install, so it must be
// readable by the server's user alone: it is created 0600 (in a directory
// created 0700), and a file found with wider permissions — copied in by hand,
// restored from a backup — is tightened rather than trusted as is.
func loadOrCreateToken(dataDir string, logger *slog.Logger) (string, string, error) {
	path := filepath.Join(dataDir, TokenFileName)
	tok, err := readToken(path, logger)
	if err == nil {
		return tok, path, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", "", err
	}

	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", "", fmt.Errorf("create data directory: %w", err)
	}
	tok, err = newToken()
	if err != nil {
		return "", "", err
	}
	// O_EXCL so that two servers starting on the same data directory cannot
	// both write a token and have one overwrite the token the other serves;
	// the loser reads the winner's file instead.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		tok, err = readToken(path, logger)
		return tok, path, err
	}
	if err != nil {
		return "", "", fmt.Errorf("create token file: %w", err)
	}
	if err := writeAndClose(f, tok+"\n"); err != nil {
		// A half-written file would fail every later start as empty or
		// wrong; remove it so the next start generates a fresh one.
		_ = os.Remove(path)
		return "", "", fmt.Errorf("write token file %s: %w", path, err)
	}
	// Not logged here: the "dashboard ready" line names the token file
	// (one line about the token per start, issue 16).
	return tok, path, nil
}

// readToken reads an existing token file, tightening its permissions first.
// Errors wrap fs.ErrNotExist when the file is missing.
func readToken(path string, logger *slog.Logger) (string, error) {
	info, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	if !info.Mode().IsRegular() {
		return "", fmt.Errorf("token file %s is not a regular file", path)
	}
	// Windows has no Unix permission bits to tighten; its ACLs come from the
	// data directory.
	if perm := info.Mode().Perm(); runtime.GOOS != "windows" && perm&^0o600 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			return "", fmt.Errorf("tighten token file %s from %#o to 0600: %w", path, perm, err)
		}
		logger.Warn("token file was readable by other users; tightened its permissions to 0600",
			"token_file", path, "was", fmt.Sprintf("%#o", perm))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		// Refuse rather than regenerate: the file is the operator's to edit,
		// and overwriting it silently would invalidate a token they chose.
		return "", fmt.Errorf("token file %s is empty; write a token into it or delete it to generate a new one", path)
	}
	return tok, nil
}

// newToken returns a fresh admin token in the operator token form: the
// generated token is the first operator, named admin (http/operators'
// Bootstrap), so it is prefixed for secret scanners like every other.
func newToken() (string, error) { return NewOperatorToken() }

// writeAndClose writes s, syncs so a crash right after start-up cannot leave
// an empty token file behind, and closes f.
func writeAndClose(f *os.File, s string) error {
	_, werr := f.WriteString(s)
	if werr == nil {
		werr = f.Sync()
	}
	cerr := f.Close()
	return errors.Join(werr, cerr)
}
