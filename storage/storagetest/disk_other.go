//go:build !linux

package storagetest

import "testing"

// The disk-fault helpers mount a tmpfs and bind mounts, which only Linux
// offers; elsewhere the tests that need them are skipped.

// SmallDisk skips the test: see disk_linux.go.
func SmallDisk(t testing.TB, size int64) string {
	t.Helper()
	t.Skip("needs a real small filesystem: tmpfs mounts are Linux only")
	return ""
}

// ReadOnly skips the test: see disk_linux.go.
func ReadOnly(t testing.TB, dir string) (undo func()) {
	t.Helper()
	t.Skip("needs a read-only bind mount: Linux only")
	return func() {}
}

// Fill skips the test: see disk_linux.go.
func Fill(t testing.TB, dir string) (free func()) {
	t.Helper()
	t.Skip("needs a real small filesystem: Linux only")
	return func() {}
}
