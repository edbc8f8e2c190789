// Package dirlock gives one process at a time a directory: an exclusive,
// non-blocking flock on a lock file inside it, which the kernel releases
// when the process ends however it ends (SIGKILL included), so a stale
// lock never needs cleaning up. The holder writes its pid into the file so
// that a second process can say who holds it.
//
// Two backends on one data directory corrupt the embedded JetStream store
// and fire every schedule twice; the lock turns that into a clear refusal
// at start.
package dirlock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// FileName is the lock file inside the locked directory.
const FileName = "kanade-backend.lock"

// ErrHeld says another process holds the lock.
var ErrHeld = errors.New("data directory is in use by another process")

// HeldError is ErrHeld with the holder's pid (0 when it could not be read).
type HeldError struct {
	Dir string
	PID int
}

func (e *HeldError) Error() string {
	who := "another kanade-backend"
	if e.PID > 0 {
		who += fmt.Sprintf(" (pid %d)", e.PID)
	}
	return fmt.Sprintf("data directory %s is in use by %s; stop it first or use another --data-dir", e.Dir, who)
}

func (e *HeldError) Unwrap() error { return ErrHeld }

// Lock is a held directory lock.
type Lock struct {
	f *os.File
}

// Acquire creates dir if needed and takes its lock without waiting. When
// another process holds it, the error is a *HeldError naming that
// process's pid.
func Acquire(dir string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, FileName)
	// O_RDWR without O_TRUNC: the holder's pid must survive our open.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &HeldError{Dir: dir, PID: readPID(f)}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := writePID(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("write pid to lock file %s: %w", path, err)
	}
	return &Lock{f: f}, nil
}

func readPID(f *os.File) int {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil {
		return 0
	}
	return pid
}

func writePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		return err
	}
	return f.Sync()
}

// Release gives the lock up. The file stays: removing it would let a
// process that opened it just before lock an unlinked file while a third
// one creates and locks a new one.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the last descriptor releases the flock
	l.f = nil
	return err
}
