package sim

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"kanade-backend/messages/humantime"
)

// A script is read as a list of directives, one per line, so that tests
// can say exactly what a simulated run does:
//
//	sleep 2s          wait (humantime; a bare number is seconds, as in a shell)
//	exit 3            end the run with this exit code
//	echo <text>       write a line to stdout
//	echo-json <json>  write a JSON document to stdout (inventory jobs)
//	fail-once         exit 1 the first time this agent runs this job id
//
// Lines run in order; reaching the end exits 0. Other lines (real
// PowerShell, comments) are ignored. A script with no directive at all
// is a real script the simulator cannot run: it is simulated with the
// fleet's run-time distribution and failure rate instead.

type stepKind uint8

const (
	stepSleep stepKind = iota
	stepStdout
	stepStderr
	stepExit
	stepFailOnce
)

type step struct {
	kind stepKind
	d    time.Duration // stepSleep
	text string        // stepStdout, stepStderr
	code int           // stepExit
}

// parseScript returns the directives of script, or ok=false when it has
// none. A directive with a malformed argument yields a plan that reports
// the mistake on stderr and exits 2, so a typo in a test fails loudly
// instead of being ignored.
func parseScript(script string) (steps []step, ok bool) {
	for n, raw := range strings.Split(script, "\n") {
		line := strings.TrimSpace(raw)
		word, arg := splitWord(line)
		bad := func(format string, a ...any) ([]step, bool) {
			msg := fmt.Sprintf("kanade-fleet: script line %d %q: ", n+1, line) + fmt.Sprintf(format, a...)
			return []step{{kind: stepStderr, text: msg}, {kind: stepExit, code: 2}}, true
		}
		switch word {
		case "sleep":
			d, err := parseSleep(arg)
			if err != nil {
				return bad("%v", err)
			}
			steps = append(steps, step{kind: stepSleep, d: d})
		case "exit":
			code := 0
			if arg != "" {
				c, err := strconv.Atoi(arg)
				if err != nil {
					return bad("exit code must be an integer")
				}
				code = c
			}
			steps = append(steps, step{kind: stepExit, code: code})
		case "echo", "echo-json":
			steps = append(steps, step{kind: stepStdout, text: arg})
		case "fail-once":
			steps = append(steps, step{kind: stepFailOnce})
		}
	}
	return steps, len(steps) > 0
}

// splitWord splits a line at its first blank into the directive and its
// argument.
func splitWord(line string) (word, arg string) {
	i := strings.IndexAny(line, " \t")
	if i < 0 {
		return line, ""
	}
	return line[:i], strings.TrimSpace(line[i+1:])
}

// parseSleep accepts humantime ("2s", "1m 30s") and, like sleep(1) and
// PowerShell's sleep alias, a bare number of seconds.
func parseSleep(arg string) (time.Duration, error) {
	if n, err := strconv.ParseUint(arg, 10, 32); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	return humantime.Parse(arg)
}

// randomPlan simulates a script the simulator cannot interpret: it runs
// for a random time within rt and fails with probability failRate.
func randomPlan(rng *rand.Rand, rt Range, failRate float64) []step {
	d := rt.Min
	if span := rt.Max - rt.Min; span > 0 {
		d += time.Duration(rng.Int64N(int64(span) + 1))
	}
	steps := []step{{kind: stepSleep, d: d}}
	if failRate > 0 && rng.Float64() < failRate {
		return append(steps,
			step{kind: stepStderr, text: "simulated failure"},
			step{kind: stepExit, code: 1})
	}
	return append(steps, step{kind: stepStdout, text: "simulated run finished"})
}
