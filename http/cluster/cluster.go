// Package cluster serves GET /api/cluster: the backends sharing this
// NATS (the replica registry, storage/broker/replicas) and which of them
// holds the leader lease, so that an operator sees the same answer from
// any replica behind the load balancer.
package cluster

import (
	"context"
	"errors"
	"net/http"
	"time"

	"kanade-backend/http/httpx"
	"kanade-backend/http/server"
	"kanade-backend/messages"
	"kanade-backend/storage/broker"
	"kanade-backend/storage/broker/replicas"
)

// Deps is what the route needs.
type Deps struct {
	// Self is the replica id of this backend.
	Self string
	// Replicas lists the registry.
	Replicas func(context.Context) ([]replicas.Entry, error)
	// Leader names the lease holder's replica id and the lease key's
	// revision; ok is false while nobody holds it.
	Leader func(context.Context) (id string, revision uint64, ok bool, err error)
}

// Replica is one entry of the answer.
type Replica struct {
	ID       string    `json:"id"`
	Address  string    `json:"address"`
	Leader   bool      `json:"leader"`
	Started  time.Time `json:"started"`
	LastSeen time.Time `json:"last_seen"`
}

// View is the body of GET /api/cluster.
type View struct {
	// Leader is the replica id holding the leader lease (null while
	// nobody does, e.g. during a takeover).
	Leader *string `json:"leader"`
	// LeaseRevision is the lease key's revision (it grows at every
	// renewal; 0 while nobody holds it).
	LeaseRevision uint64 `json:"lease_revision"`
	// Self is the replica that answered.
	Self     string    `json:"self"`
	Replicas []Replica `json:"replicas"`
}

// Register adds the route.
func Register(r *server.Router, d Deps) {
	r.API("GET /api/cluster", func(w http.ResponseWriter, req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), 5*time.Second)
		defer cancel()
		v, err := Read(ctx, d)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, v)
		return nil
	})
}

// Read assembles the view.
func Read(ctx context.Context, d Deps) (View, error) {
	v := View{Self: d.Self, Replicas: []Replica{}}
	id, rev, ok, err := d.Leader(ctx)
	if err != nil {
		return v, unavailable("leader lease", err)
	}
	if ok {
		v.Leader, v.LeaseRevision = &id, rev
	}
	list, err := d.Replicas(ctx)
	if err != nil {
		return v, unavailable("replica registry", err)
	}
	for _, e := range list {
		v.Replicas = append(v.Replicas, Replica{ID: e.ID, Address: e.Address, Leader: ok && e.ID == id,
			Started: e.Started, LastSeen: e.LastSeen})
	}
	return v, nil
}

// unavailable: the view lives in NATS, so without NATS (or before its
// buckets exist) there is none to give; try again later.
func unavailable(what string, err error) error {
	if broker.IsUnavailable(err) || errors.Is(err, context.DeadlineExceeded) {
		return messages.Unavailablef("cluster view: cannot read the %s: NATS unavailable", what)
	}
	return messages.Unavailablef("cluster view: cannot read the %s: %v", what, err)
}
