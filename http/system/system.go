// Package system serves the routes about the backend itself: the public
// liveness probe /health and /api/jetstream/status.
package system

import (
	"context"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/http/httpx"
	"kanade-backend/http/server"
	"kanade-backend/storage/broker"
)

// Deps is what the routes need.
type Deps struct {
	JS jetstream.JetStream
}

// Register adds the routes.
func Register(r *server.Router, d Deps) {
	// Liveness only: it answers while the process serves HTTP, even when
	// NATS is away (fleet health reports that).
	r.Public("GET /health", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	}))
	r.API("GET /api/jetstream/status", func(w http.ResponseWriter, req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), 5*time.Second)
		defer cancel()
		httpx.WriteJSON(w, http.StatusOK, broker.Probe(ctx, d.JS))
		return nil
	})
}
