//go:build unix

package testsupport

import (
	"os"
	"runtime/pprof"
	"syscall"
	"testing"
	"time"
)

// ProcessCPU is the CPU time (user + system) this process has used so
// far; benchmarks report it because, unlike wall time, it does not grow
// when other processes compete for the cores.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// CPUProfile starts a CPU profile of the process into the file at path
// and returns its stop, which writes and closes it; a benchmark brackets
// with it the part it measures.
func CPUProfile(tb testing.TB, path string) (stop func()) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatalf("CPU profile: %v", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		tb.Fatalf("CPU profile: %v", err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			tb.Errorf("CPU profile %s: %v", path, err)
		}
	}
}
