package app

import (
	"context"
	"errors"
	"time"

	"kanade-backend/cmd/internal/lease"
	"kanade-backend/http/cluster"
	"kanade-backend/storage/broker/replicas"
)

// Every backend announces itself in the replica registry (its replica id
// is also the one in the leader lease), so that GET /api/cluster on any
// replica lists them all and names the leader. It starts once HTTP
// listens, so that the first announcement carries the real address, and
// stops first, removing the entry of a backend that stops gracefully.

func (a *App) startRegistry(context.Context) error {
	a.registry = replicas.Start(replicas.Options{
		JS:      a.JS,
		Self:    replicas.Entry{ID: a.ReplicaID, Started: a.started},
		Address: a.httpAddress,
		Logger:  a.Logger,
	})
	return nil
}

func (a *App) stopRegistry(ctx context.Context) error {
	if err := a.registry.Stop(ctx); err != nil {
		a.Logger.Warn("could not leave the replica registry; the entry expires by itself", "err", err)
	}
	return nil
}

// clusterDeps reads the registry and the lease for GET /api/cluster.
func (a *App) clusterDeps() cluster.Deps {
	return cluster.Deps{
		Self: a.ReplicaID,
		Replicas: func(ctx context.Context) ([]replicas.Entry, error) {
			return replicas.List(ctx, a.JS)
		},
		Leader: func(ctx context.Context) (string, uint64, bool, error) {
			h, rev, err := lease.Read(ctx, a.JS, "", "")
			if errors.Is(err, lease.ErrNoHolder) {
				return "", 0, false, nil
			}
			return h.ReplicaID, rev, err == nil, err
		},
	}
}

// processStart is when this process started (the registry's "started").
var processStart = time.Now().UTC().Truncate(time.Second)
