package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"kanade-backend/storage"
)

// A second backend on a data directory in use exits at once, non-zero,
// naming the pid that holds it; the first keeps serving, and its stores
// are intact when it stops.
func TestBinarySecondOnTheSameDataDirExits(t *testing.T) {
	dataDir := t.TempDir()
	httpAddr, natsAddr := freePort(t), freePort(t)
	p := start(t, nil, "--bind", httpAddr, "--data-dir", dataDir, "--nats-listen", natsAddr)
	waitHealth(t, "http://"+httpAddr, 15*time.Second)

	t0 := time.Now()
	cmd := exec.Command(binary, "--bind", freePort(t), "--data-dir", dataDir, "--nats-listen", freePort(t))
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("second backend still running after 2s; output:\n%s", out)
	}
	took := time.Since(t0)
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() == 0 {
		t.Fatalf("second backend exit = %v, want non-zero; output:\n%s", err, out)
	}
	pid := strconv.Itoa(p.cmd.Process.Pid)
	if !strings.Contains(string(out), "in use by another kanade-backend (pid "+pid+")") {
		t.Fatalf("output does not name the holder's pid %s:\n%s", pid, out)
	}
	if strings.Contains(string(out), "database ready") {
		t.Fatalf("second backend opened the database:\n%s", out)
	}
	t.Logf("second backend refused in %v", took)

	// The first is unaffected.
	waitHealth(t, "http://"+httpAddr, time.Second)
	tok := readToken(t, dataDir)
	wantAllResources(t, httpAddr, tok)
	p.sigterm(t)
	s, err := storage.Open(context.Background(), storage.Options{Path: filepath.Join(dataDir, "backend.db")})
	if err != nil {
		t.Fatalf("reopen database: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Once the first has stopped the directory is free again.
	p2 := start(t, nil, "--bind", httpAddr, "--data-dir", dataDir, "--nats-listen", natsAddr)
	waitHealth(t, "http://"+httpAddr, 15*time.Second)
	wantAllResources(t, httpAddr, tok)
	p2.sigterm(t)
}

// readToken is the admin token the backend generated in dataDir.
func readToken(t *testing.T, dataDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatalf("generated token file: %v", err)
	}
	return strings.TrimSpace(string(b))
}
