// Command kanade-fleet simulates a fleet of kanade agents against a
// backend's NATS, for tests, benchmarks and demos:
//
//	kanade-fleet --agents 20                       # run 20 agents until Ctrl-C
//	kanade-fleet --agents 100 --assign-groups canary=5%,wave1=45%
//
// Behaviour lives in package sim; this only wires the process.
package main

import (
	"os"

	"kanade-backend/internal/sim"
)

func main() {
	os.Exit(sim.Main(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}
