package dirlock

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestSecondAcquireNamesTheHolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	l, err := Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("lock file holds %q (%v), want our pid %d", b, err, os.Getpid())
	}
	// flock locks belong to the open file description: a second open in
	// the same process is refused like another process would be.
	_, err = Acquire(dir)
	var held *HeldError
	if !errors.As(err, &held) || !errors.Is(err, ErrHeld) || held.PID != os.Getpid() {
		t.Fatalf("second acquire: %v, want HeldError with pid %d", err, os.Getpid())
	}
	if !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("message does not name the holder and the dir: %s", err)
	}
	// The refused attempt left the holder's pid in place.
	if b2, _ := os.ReadFile(filepath.Join(dir, FileName)); string(b2) != string(b) {
		t.Fatalf("refused acquire changed the file: %q → %q", b, b2)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	l2, err := Acquire(dir)
	if err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
	_ = l2.Release()
}

// A lock held by a process that was killed is free: the kernel drops
// flocks with the last descriptor, so no stale lock needs cleaning up.
func TestLockOfAKilledProcessIsFree(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	if err := os.WriteFile(path, []byte("4242\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("flock"); err != nil {
		t.Fatalf("flock(1) not installed: %v", err)
	}
	// flock(1) waits for the lock, then holds it itself (-o: not its
	// child) until killed.
	cmd := exec.Command("flock", "-o", path, "sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
	var held *HeldError
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var l *Lock
		l, err = Acquire(dir)
		if errors.As(err, &held) {
			break
		}
		_ = l.Release() // we were first: let the child take it
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("child's lock never seen: %v", err)
		}
	}
	if b, _ := os.ReadFile(path); strings.TrimSpace(string(b)) != strconv.Itoa(held.PID) {
		t.Fatalf("holder pid %d, file says %q", held.PID, b)
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Wait()
	// The kernel drops the lock once the killed process is gone, which
	// may be a moment after Wait on a loaded machine.
	var l *Lock
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if l, err = Acquire(dir); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("acquire after the holder was killed: %v", err)
		}
	}
	defer l.Release()
	if b, _ := os.ReadFile(path); strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("lock file %q, want our pid", b)
	}
}
