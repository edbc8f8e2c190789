package sim

import (
	"fmt"
	"strings"
	"time"
)

// logLines is the tail of an agent's own log that logs.fetch.<pc_id>
// returns. Only a bounded number of lines is kept: 10 000 agents with
// unbounded logs would be the fleet's largest memory cost.
const logLines = 64

// agentLog is a ring of an agent's recent log lines, owned by the agent
// actor (no locking). The storage grows on demand so idle agents stay
// small.
type agentLog struct {
	lines []logLine
	next  int // where the next line goes once the ring is full
}

// logLine is one line, formatted only when a logs.fetch asks for it:
// every agent logs each Command it gets, and formatting 100 000 lines a
// broadcast that nobody reads was a twelfth of the fleet's CPU.
type logLine struct {
	at            time.Time
	level, format string
	args          []any // immutable values (strings, numbers, errors)
}

// String is the line in the format of the agent's log file: RFC 3339 UTC
// time, level, message.
func (l logLine) String() string {
	return l.at.UTC().Format(time.RFC3339Nano) + " " + l.level + " kanade_agent: " + fmt.Sprintf(l.format, l.args...)
}

// add appends one line.
func (l *agentLog) add(at time.Time, level, format string, args ...any) {
	line := logLine{at: at, level: level, format: format, args: args}
	if len(l.lines) < logLines {
		l.lines = append(l.lines, line)
		return
	}
	l.lines[l.next] = line
	l.next = (l.next + 1) % logLines
}

// tail returns the last n lines (all kept lines when n ≤ 0), oldest
// first, newline-terminated: the raw text a logs.fetch reply carries.
func (l *agentLog) tail(n int) string {
	ordered := make([]logLine, 0, len(l.lines))
	ordered = append(ordered, l.lines[l.next:]...)
	ordered = append(ordered, l.lines[:l.next]...)
	if n > 0 && n < len(ordered) {
		ordered = ordered[len(ordered)-n:]
	}
	var b strings.Builder
	for _, line := range ordered {
		b.WriteString(line.String())
		b.WriteByte('\n')
	}
	return b.String()
}
