// Package health serves GET /api/health/fleet (behaviour.md §4): one
// verdict for monitors about the whole fleet, built from the agents table,
// a probe of every JetStream resource and the results of the last day.
//
// A single stale PC is normal (PCs get switched off), so it never degrades
// the fleet; a missing stream, bucket or object store does, and so does a
// fleet where every known agent went silent at once, which means something
// systemic (NATS partition, heartbeats not projected). The backend's own
// troubles degrade it too, listed in problems with their reason: a data
// filesystem low on space, a projection that cannot write (the read model
// has stopped moving), a JetStream stream that cannot store. The answer is
// 503 when degraded so that a plain HTTP check alerts, with the same body
// as the 200.
package health

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/actors/clock"
	"kanade-backend/http/httpx"
	"kanade-backend/http/server"
	"kanade-backend/storage"
	"kanade-backend/storage/broker"
)

// Statuses of the fleet.
const (
	StatusOK       = "ok"
	StatusUnknown  = "unknown"
	StatusDegraded = "degraded"
)

// RecentWindow is the look-back of recent_results.
const RecentWindow = 24 * time.Hour

// ProbeTimeout bounds the whole JetStream probe: a monitor must get an
// answer even when NATS hangs.
const ProbeTimeout = 3 * time.Second

// Prober reports which JetStream resources exist (broker.Probe).
type Prober func(ctx context.Context) broker.Status

// Deps is what the route needs.
type Deps struct {
	// DB is the read pool.
	DB bun.IDB
	// Probe checks the JetStream resources.
	Probe Prober
	// Connected reports whether the NATS connection is up; when it is
	// down the probe is skipped and every resource counts as missing,
	// instead of waiting for each lookup to time out.
	Connected func() bool
	Clock     clock.Clock
	// Warnings, if set, lists what monitors should know without the fleet
	// being degraded (e.g. "shared agent token in use").
	Warnings func() []string
	// Problems, if set, lists the backend's own troubles (disk space,
	// stalled projections, streams that cannot store).
	Problems func() []Problem
}

// Problem is one reason the backend itself is degraded.
type Problem struct {
	// Check is what found it: CheckDisk, CheckProjection or CheckJetStream.
	Check string `json:"check"`
	// Name is what it concerns: a directory, a projection, a stream.
	Name string `json:"name"`
	// Reason says what is wrong, for the operator.
	Reason string `json:"reason"`
	// Since is when it started, when known.
	Since *time.Time `json:"since,omitempty"`
}

// Problem checks.
const (
	CheckDisk       = "disk"
	CheckProjection = "projection"
	CheckJetStream  = "jetstream"
)

// Agents counts the agents by liveness.
type Agents struct {
	Known  int `json:"known"`
	Active int `json:"active"`
	Stale  int `json:"stale"`
}

// JetStream summarises the probe.
type JetStream struct {
	AllOK   bool     `json:"all_ok"`
	Healthy int      `json:"healthy"`
	Total   int      `json:"total"`
	Missing []string `json:"missing"`
}

// RecentResults counts results that finished within the window.
type RecentResults struct {
	WindowHours int `json:"window_hours"`
	Total       int `json:"total"`
	Failed      int `json:"failed"`
}

// Fleet is the body of GET /api/health/fleet.
type Fleet struct {
	Status        string        `json:"status"`
	Agents        Agents        `json:"agents"`
	JetStream     JetStream     `json:"jetstream"`
	RecentResults RecentResults `json:"recent_results"`
	// Warnings never change the status; [] when none.
	Warnings []string `json:"warnings"`
	// Problems lists the backend's own troubles ([] when none); any makes
	// the status degraded.
	Problems   []Problem `json:"problems"`
	ObservedAt time.Time `json:"observed_at"`
}

// Classify is the verdict of behaviour.md §4.
func Classify(jetstreamOK bool, known, active int) string {
	switch {
	case !jetstreamOK:
		return StatusDegraded
	case known == 0:
		return StatusUnknown
	case active == 0:
		return StatusDegraded
	}
	return StatusOK
}

// Register adds the route.
func Register(r *server.Router, d Deps) {
	r.API("GET /api/health/fleet", func(w http.ResponseWriter, req *http.Request) error {
		f, err := Check(req.Context(), d)
		if err != nil {
			return err
		}
		status := http.StatusOK
		if f.Status == StatusDegraded {
			status = http.StatusServiceUnavailable
		}
		httpx.WriteJSON(w, status, f)
		return nil
	})
}

// Check computes the fleet's health now.
func Check(ctx context.Context, d Deps) (Fleet, error) {
	if d.Clock == nil {
		d.Clock = clock.Real{}
	}
	now := d.Clock.Now().UTC()
	f := Fleet{ObservedAt: now, Warnings: []string{}}
	if d.Warnings != nil {
		f.Warnings = append(f.Warnings, d.Warnings()...)
	}

	var err error
	if f.Agents, err = countAgents(ctx, d.DB, now.Add(-storage.AliveWindow)); err != nil {
		return f, err
	}
	if f.RecentResults, err = countResults(ctx, d.DB, now.Add(-RecentWindow)); err != nil {
		return f, err
	}

	var st broker.Status
	if d.Connected != nil && !d.Connected() {
		st = unreachable()
	} else {
		pctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
		st = d.Probe(pctx)
		cancel()
	}
	f.JetStream = summarise(st)
	f.Status = Classify(f.JetStream.AllOK, f.Agents.Known, f.Agents.Active)
	f.Problems = []Problem{}
	if d.Problems != nil {
		f.Problems = append(f.Problems, d.Problems()...)
	}
	if len(f.Problems) > 0 {
		f.Status = StatusDegraded
	}
	return f, nil
}

// unreachable is the probe's answer while NATS is away: every resource
// of wire.md §3, none usable.
func unreachable() broker.Status {
	st := broker.Status{}
	for _, c := range broker.Streams(1) {
		st.Streams = append(st.Streams, broker.ResourceStatus{Name: c.Name})
	}
	for _, c := range broker.Buckets(1) {
		st.KVBuckets = append(st.KVBuckets, broker.ResourceStatus{Name: c.Bucket})
	}
	for _, c := range broker.ObjectStores(1) {
		st.ObjectStores = append(st.ObjectStores, broker.ResourceStatus{Name: c.Bucket})
	}
	return st
}

// summarise turns the probe into counts; missing names are the bare
// resource names, as upstream reports them (they are unique across kinds).
func summarise(st broker.Status) JetStream {
	js := JetStream{Total: st.Total(), Missing: []string{}}
	for _, group := range [][]broker.ResourceStatus{st.Streams, st.KVBuckets, st.ObjectStores} {
		for _, r := range group {
			if !r.Exists {
				js.Missing = append(js.Missing, r.Name)
			}
		}
	}
	js.Healthy = js.Total - len(js.Missing)
	js.AllOK = len(js.Missing) == 0
	return js
}

func countAgents(ctx context.Context, db bun.IDB, since time.Time) (Agents, error) {
	var a Agents
	err := db.NewSelect().TableExpr("agents").
		ColumnExpr("COUNT(*)").
		ColumnExpr("COALESCE(SUM(CASE WHEN last_heartbeat >= ? THEN 1 ELSE 0 END), 0)", storage.T(since)).
		Scan(ctx, &a.Known, &a.Active)
	if err != nil {
		return a, fmt.Errorf("count agents: %w", err)
	}
	a.Stale = a.Known - a.Active
	return a, nil
}

func countResults(ctx context.Context, db bun.IDB, since time.Time) (RecentResults, error) {
	r := RecentResults{WindowHours: int(RecentWindow / time.Hour)}
	// finished_at (indexed) rather than recorded_at: "the last 24 h" is
	// about when runs ended, and a rebuild must not move results into it.
	err := db.NewSelect().TableExpr("execution_results").
		ColumnExpr("COUNT(*)").
		ColumnExpr("COALESCE(SUM(CASE WHEN exit_code <> 0 THEN 1 ELSE 0 END), 0)").
		Where("finished_at >= ?", storage.T(since)).
		Scan(ctx, &r.Total, &r.Failed)
	if err != nil {
		return r, fmt.Errorf("count recent results: %w", err)
	}
	return r, nil
}
