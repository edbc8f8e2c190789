//go:build linux

package storagetest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// The disk-fault tests need a real small filesystem: a full disk and a
// read-only mount are what SQLite and the JetStream file store see in
// production, and no fake would fail the same way (partial writes, a full
// WAL, an fsync error). Mounting needs root (CAP_SYS_ADMIN); CI runs as
// root and sets KANADE_REQUIRE_MOUNT=1 so that a failed mount fails the
// test there instead of skipping it.

// SmallDisk mounts a tmpfs of size bytes on a new directory under
// t.TempDir() and unmounts it at cleanup. Without the privilege to mount,
// the test is skipped (or fails under KANADE_REQUIRE_MOUNT).
func SmallDisk(t testing.TB, size int64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "smalldisk")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		cannotMount(t, fmt.Errorf("mount a %d-byte tmpfs on %s: %w", size, dir, err))
	}
	t.Cleanup(func() { unmount(t, dir) })
	return dir
}

// ReadOnly makes dir read-only for everyone, root included, with a
// read-only bind mount of dir onto itself; the returned function (also run
// at cleanup) makes it writable again.
func ReadOnly(t testing.TB, dir string) (undo func()) {
	t.Helper()
	if err := syscall.Mount(dir, dir, "", syscall.MS_BIND, ""); err != nil {
		cannotMount(t, fmt.Errorf("bind-mount %s: %w", dir, err))
	}
	if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
		unmount(t, dir)
		cannotMount(t, fmt.Errorf("remount %s read-only: %w", dir, err))
	}
	done := false
	undo = func() {
		if !done {
			done = true
			unmount(t, dir)
		}
	}
	t.Cleanup(undo)
	return undo
}

func cannotMount(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("KANADE_REQUIRE_MOUNT") != "" {
		t.Fatalf("%v (KANADE_REQUIRE_MOUNT is set: this test must run)", err)
	}
	t.Skipf("needs a real small filesystem and cannot mount one (run as root to include it): %v", err)
}

func unmount(t testing.TB, dir string) {
	// A file still open (a store the test did not close) keeps the mount
	// busy for a moment; detach lazily rather than leak the mount.
	for i := 0; ; i++ {
		err := syscall.Unmount(dir, 0)
		if err == nil || errors.Is(err, syscall.EINVAL) {
			return
		}
		if i == 20 {
			if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", dir, err)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Fill writes a file into dir until its filesystem has no free block left
// and returns the function that deletes it again (space "freed by the
// operator"); the file is also deleted at cleanup.
func Fill(t testing.TB, dir string) (free func()) {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("filler-%d", time.Now().UnixNano()))
	f, err := os.Create(path)
	if err != nil {
		t.Fatalf("fill %s: %v", dir, err)
	}
	buf := make([]byte, 1<<20)
	for chunk := len(buf); chunk >= 512; {
		if _, err := f.Write(buf[:chunk]); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", dir, err)
			}
			chunk /= 2
		}
	}
	if err := f.Close(); err != nil && !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("fill %s: %v", dir, err)
	}
	done := false
	free = func() {
		if !done {
			done = true
			if err := os.Remove(path); err != nil {
				t.Errorf("free %s: %v", dir, err)
			}
		}
	}
	t.Cleanup(free)
	return free
}
