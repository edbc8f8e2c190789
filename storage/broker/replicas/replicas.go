// Package replicas is the registry of running backends sharing one NATS
// (spec scaleout.md: ≥ 2 replicas behind a load balancer): each replica
// announces itself in the kanade_replicas KV bucket under its replica id,
// refreshes its entry every few seconds, and deletes it on a graceful
// stop; the bucket's TTL (broker.ReplicasTTL) removes the entry of a
// replica that died. GET /api/cluster lists them.
//
// The registry only informs operators: who leads is the leader lease's
// business (cmd/internal/lease), never inferred from here.
package replicas

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/actors/clock"
	"kanade-backend/messages"
	"kanade-backend/storage/broker"
)

// Entry is one replica's announcement.
type Entry struct {
	ID string `json:"id"`
	// Address is its HTTP address (host:port).
	Address string `json:"address"`
	// Started is when the process started; LastSeen its latest
	// announcement (its own wall clock).
	Started  time.Time `json:"started"`
	LastSeen time.Time `json:"last_seen"`
}

// Options configure an Announcer.
type Options struct {
	JS   jetstream.JetStream
	Self Entry
	// Address, when set, gives the HTTP address at every announcement
	// (it is known once the listener is up).
	Address func() string
	// Every is the announcement period (default broker.ReplicasTTL / 4).
	Every  time.Duration
	Clock  clock.Clock
	Logger *slog.Logger
}

// Announcer keeps this replica's entry fresh until Stop.
type Announcer struct {
	o      Options
	cancel context.CancelFunc
	done   chan struct{}

	mu sync.Mutex
	kv jetstream.KeyValue
}

// Start announces at once (when NATS is there) and then every Every, on a
// goroutine of its own.
func Start(o Options) *Announcer {
	if o.Every <= 0 {
		o.Every = broker.ReplicasTTL / 4
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &Announcer{o: o, cancel: cancel, done: make(chan struct{})}
	go a.run(ctx)
	return a
}

func (a *Announcer) run(ctx context.Context) {
	defer close(a.done)
	failing := false
	for {
		err := a.announce(ctx)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			failing = true
			a.o.Logger.Warn("cannot announce this replica in the replica registry; retrying", "bucket", messages.BucketReplicas, "err", err)
		case err == nil && failing:
			failing = false
			a.o.Logger.Info("announced in the replica registry again", "bucket", messages.BucketReplicas)
		}
		wake := make(chan struct{})
		t := a.o.Clock.AfterFunc(a.o.Every, func() { close(wake) })
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-wake:
		}
	}
}

// bucket opens the registry bucket once it exists (JetStream bootstrap).
func (a *Announcer) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.kv != nil {
		return a.kv, nil
	}
	kv, err := a.o.JS.KeyValue(ctx, messages.BucketReplicas)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", messages.BucketReplicas, err)
	}
	a.kv = kv
	return kv, nil
}

func (a *Announcer) announce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	kv, err := a.bucket(ctx)
	if err != nil {
		return err
	}
	e := a.o.Self
	if a.o.Address != nil {
		e.Address = a.o.Address()
	}
	e.LastSeen = a.o.Clock.Now().UTC()
	b, _ := json.Marshal(e) // strings and times
	if _, err := kv.Put(ctx, e.ID, b); err != nil {
		return fmt.Errorf("announce replica %s: %w", e.ID, err)
	}
	return nil
}

// Stop stops announcing and removes the entry, so that the registry
// drops a replica that stopped at once rather than at the TTL.
func (a *Announcer) Stop(ctx context.Context) error {
	a.cancel()
	<-a.done
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	kv, err := a.bucket(dctx)
	if err != nil {
		return nil // never announced
	}
	if err := kv.Delete(dctx, a.o.Self.ID); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("leave the replica registry: %w", err)
	}
	return nil
}

// List returns the replicas announced now, by id. An entry that cannot be
// read (being removed meanwhile, or not ours) is left out.
func List(ctx context.Context, js jetstream.JetStream) ([]Entry, error) {
	kv, err := js.KeyValue(ctx, messages.BucketReplicas)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", messages.BucketReplicas, err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	out := []Entry{}
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var r Entry
		if json.Unmarshal(e.Value(), &r) != nil || r.ID == "" {
			continue
		}
		out = append(out, r)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
