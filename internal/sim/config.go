package sim

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"kanade-backend/actors/clock"
	"kanade-backend/messages"
	"kanade-backend/messages/humantime"
)

// Config describes a simulated fleet. Zero values take the defaults listed
// on each field.
type Config struct {
	// NATSURL and Token reach the server the backend uses. Ignored when
	// Conn is set.
	NATSURL string
	Token   string
	// Conn, when set, is used instead of dialling NATSURL (in-process tests
	// against brokertest). The fleet does not close it.
	Conn *nats.Conn

	// Credentials, when set, give each agent its own pc_id and NATS token
	// (credentials.go): the fleet is these agents, each on its own
	// connection, and Agents, Prefix and Conn are not used.
	Credentials []Credential

	// Agents is the number of simulated agents (at least 1).
	Agents int
	// Prefix starts every pc_id (default "SIM-"): SIM-0001, SIM-0002, …
	Prefix string
	// Heartbeat is each agent's heartbeat interval (default 30s); every
	// agent starts at a random phase within it.
	Heartbeat time.Duration
	// Ramp, when set, switches the agents on one after another over this
	// long, as PCs switched on through a morning: agent k (in pc_id
	// order, from 0) comes on at k·Ramp/Agents and announces itself with
	// a heartbeat at once, then keeps its heartbeat phase. Until then it
	// is off: no heartbeats, and Commands, kills and logs requests do
	// not reach it. 0 switches every agent on at start (first heartbeats
	// at random phases within Heartbeat).
	Ramp time.Duration
	// AgentVersion is reported in heartbeats (default DefaultAgentVersion).
	AgentVersion string
	// OSFamily is reported in heartbeats: windows (default), linux, macos.
	OSFamily string
	// FailRate is the probability (0 to 1) that a script without
	// directives exits 1.
	FailRate float64
	// RunTime is how long a script without directives runs, uniformly
	// within [Min, Max] (default 100ms..2s).
	RunTime Range
	// Seed makes the fleet's randomness (phases, jitter, run times,
	// failures) reproducible; 0 picks one and logs it.
	Seed uint64

	Logger *slog.Logger
	// Clock drives every timer (default the wall clock).
	Clock clock.Clock
}

// DefaultAgentVersion is what simulated agents report unless told
// otherwise: the upstream release whose wire contract they speak.
const DefaultAgentVersion = "0.21.2"

// Range is an inclusive interval of durations.
type Range struct{ Min, Max time.Duration }

// String writes r the way ParseRange reads it.
func (r Range) String() string {
	if r.Min == r.Max {
		return humantime.Format(r.Min)
	}
	return humantime.Format(r.Min) + ".." + humantime.Format(r.Max)
}

// ParseRange reads "100ms..2s" or a single duration ("1s" = exactly 1s),
// in the humantime grammar every other duration uses.
func ParseRange(s string) (Range, error) {
	lo, hi, found := strings.Cut(s, "..")
	if !found {
		hi = lo
	}
	min, err := humantime.Parse(strings.TrimSpace(lo))
	if err != nil {
		return Range{}, fmt.Errorf("run time %q: %w", s, err)
	}
	max, err := humantime.Parse(strings.TrimSpace(hi))
	if err != nil {
		return Range{}, fmt.Errorf("run time %q: %w", s, err)
	}
	if max < min {
		return Range{}, fmt.Errorf("run time %q: maximum is below minimum", s)
	}
	return Range{Min: min, Max: max}, nil
}

// withDefaults fills the zero values and rejects what cannot be
// simulated.
func (c Config) withDefaults() (Config, error) {
	if c.Prefix == "" {
		c.Prefix = "SIM-"
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 30 * time.Second
	}
	if c.AgentVersion == "" {
		c.AgentVersion = DefaultAgentVersion
	}
	if c.OSFamily == "" {
		c.OSFamily = messages.OSWindows
	}
	if c.RunTime == (Range{}) {
		c.RunTime = Range{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	var errs []error
	if len(c.Credentials) > 0 {
		c.Agents = len(c.Credentials)
	}
	if c.Agents < 1 {
		errs = append(errs, fmt.Errorf("agents %d: want at least 1", c.Agents))
	}
	if c.Ramp < 0 {
		errs = append(errs, fmt.Errorf("ramp %s: want 0 or a positive duration", c.Ramp))
	}
	// The prefix becomes part of a subject token and a KV key.
	if err := messages.ValidateToken("pc_id prefix", c.Prefix); err != nil {
		errs = append(errs, err)
	}
	if c.Heartbeat < 0 {
		errs = append(errs, fmt.Errorf("heartbeat %v: must be positive", c.Heartbeat))
	}
	switch c.OSFamily {
	case messages.OSWindows, messages.OSLinux, messages.OSMacOS:
	default:
		errs = append(errs, fmt.Errorf("os family %q: want windows, linux or macos", c.OSFamily))
	}
	if c.FailRate < 0 || c.FailRate > 1 {
		errs = append(errs, fmt.Errorf("fail rate %v: want 0 to 1", c.FailRate))
	}
	if c.RunTime.Min < 0 || c.RunTime.Max < c.RunTime.Min {
		errs = append(errs, fmt.Errorf("run time %v: want 0 ≤ min ≤ max", c.RunTime))
	}
	return c, errors.Join(errs...)
}

// pcIDs are the agents' pc_ids.
func (c Config) pcIDs() []string {
	if len(c.Credentials) == 0 {
		return PCIDs(c.Prefix, c.Agents)
	}
	ids := make([]string, len(c.Credentials))
	for i, cr := range c.Credentials {
		ids[i] = cr.PcID
	}
	return ids
}

// PCIDs returns the pc_ids of a fleet of n agents: prefix plus a 1-based
// index zero-padded to at least 4 digits (SIM-0001 … SIM-9999,
// SIM-00001 … for 10 000 and more, so ids keep sorting in index order).
func PCIDs(prefix string, n int) []string {
	width := max(4, len(strconv.Itoa(n)))
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%0*d", prefix, width, i+1)
	}
	return ids
}
