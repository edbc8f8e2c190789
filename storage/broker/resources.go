package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/messages"
)

const day = 24 * time.Hour

// Streams returns the stream configurations. commands.> is deliberately not
// captured: agents of this generation do not replay commands, so a stream
// would only grow storage.
func Streams(replicas int) []jetstream.StreamConfig {
	base := func(name, subject string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:      name,
			Subjects:  []string{subject},
			Storage:   jetstream.FileStorage,
			Retention: jetstream.LimitsPolicy,
			Discard:   jetstream.DiscardOld,
			Replicas:  replicas,
		}
	}
	inv := base(messages.StreamInventory, "inventory.>")
	inv.MaxAge = 90 * day
	res := base(messages.StreamResults, "results.>")
	res.MaxAge = 30 * day
	exec := base(messages.StreamExec, "commands.exec.>")
	exec.MaxMsgsPerSubject = 1
	exec.MaxAge = 7 * day
	ev := base(messages.StreamEvents, "events.>")
	ev.MaxAge = 7 * day
	audit := base(messages.StreamAudit, "audit.>")
	return []jetstream.StreamConfig{inv, res, exec, ev, audit, LiveStream(replicas)}
}

// LiveMaxAge is how long the live stream keeps an event: how far back a
// dashboard reconnecting with Last-Event-ID can resume (on any replica).
const LiveMaxAge = 10 * time.Minute

// LiveStream is the backend's live-events stream (messages.StreamLive):
// short-lived, since it only lets every replica's hub see every replica's
// events and lets a reconnecting dashboard catch up. Its size is bounded
// by its age and the hubs' coalescing (a few events per second per kind,
// each at most 256 KiB, about 10 KiB in practice), not by MaxBytes: a
// byte limit is reserved from the server's store up front, which a small
// JetStream volume may not have.
func LiveStream(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        messages.StreamLive,
		Description: "kanade-backend live events of every replica (/api/events)",
		Subjects:    []string{messages.SubjectLiveAll},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      LiveMaxAge,
		MaxMsgs:     100_000,
		MaxMsgSize:  1 << 20,
		Replicas:    replicas,
	}
}

// ReplicasTTL is how long a replica stays in the registry after its last
// announcement (it announces every ReplicasTTL/4).
const ReplicasTTL = 15 * time.Second

// ReplicasBucket is the replica registry (messages.BucketReplicas).
func ReplicasBucket(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: messages.BucketReplicas, Description: "kanade-backend replicas",
		History: 1, TTL: ReplicasTTL, Storage: jetstream.FileStorage, Replicas: replicas}
}

// Buckets returns the KV bucket configurations.
func Buckets(replicas int) []jetstream.KeyValueConfig {
	kv := func(name string, history uint8) jetstream.KeyValueConfig {
		return jetstream.KeyValueConfig{Bucket: name, History: history, Storage: jetstream.FileStorage, Replicas: replicas}
	}
	return []jetstream.KeyValueConfig{
		kv(messages.BucketScriptCurrent, 5),
		kv(messages.BucketScriptStatus, 5),
		kv(messages.BucketAgentsState, 1),
		kv(messages.BucketAgentConfig, 5),
		kv(messages.BucketAgentGroups, 5),
		kv(messages.BucketSchedules, 5),
		kv(messages.BucketJobs, 5),
		ReplicasBucket(replicas),
	}
}

// ObjectStores returns the object store configurations.
func ObjectStores(replicas int) []jetstream.ObjectStoreConfig {
	return []jetstream.ObjectStoreConfig{
		{Bucket: messages.ObjectStoreAgentReleases, Storage: jetstream.FileStorage, Replicas: replicas},
	}
}

// Ensure creates or updates every stream, bucket and object store. Create-
// or-update means a config that drifted after an upgrade is brought back in
// line instead of failing start (upstream's plain create did, defect 4).
// Every resource is attempted; the errors of those that failed are joined so
// the caller can log them and carry on with degraded health.
func Ensure(ctx context.Context, js jetstream.JetStream, replicas int, logger *slog.Logger) error {
	if replicas <= 0 {
		replicas = 1
	}
	if logger == nil {
		logger = slog.Default()
	}
	var errs []error
	for _, cfg := range Streams(replicas) {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			errs = append(errs, fmt.Errorf("stream %s: %w", cfg.Name, err))
		}
	}
	for _, cfg := range Buckets(replicas) {
		if _, err := js.CreateOrUpdateKeyValue(ctx, cfg); err != nil {
			errs = append(errs, fmt.Errorf("kv bucket %s: %w", cfg.Bucket, err))
		}
	}
	for _, cfg := range ObjectStores(replicas) {
		if _, err := js.CreateOrUpdateObjectStore(ctx, cfg); err != nil {
			errs = append(errs, fmt.Errorf("object store %s: %w", cfg.Bucket, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ensure JetStream resources: %w", err)
	}
	logger.Debug("JetStream resources ensured")
	return nil
}

// ResourceStatus is one probed resource.
type ResourceStatus struct {
	Name   string `json:"name"`
	Exists bool   `json:"exists"`
}

// Status is the body of GET /api/jetstream/status.
type Status struct {
	Streams      []ResourceStatus `json:"streams"`
	KVBuckets    []ResourceStatus `json:"kv_buckets"`
	ObjectStores []ResourceStatus `json:"object_stores"`
}

// Missing lists the resources that do not exist, as "stream X", "kv X",
// "object_store X".
func (s Status) Missing() []string {
	missing := []string{}
	add := func(kind string, rs []ResourceStatus) {
		for _, r := range rs {
			if !r.Exists {
				missing = append(missing, kind+" "+r.Name)
			}
		}
	}
	add("stream", s.Streams)
	add("kv", s.KVBuckets)
	add("object_store", s.ObjectStores)
	return missing
}

// Total is the number of probed resources.
func (s Status) Total() int { return len(s.Streams) + len(s.KVBuckets) + len(s.ObjectStores) }

// Probe checks that every resource of wire.md §3 exists. A resource whose
// lookup fails for another reason (NATS away) counts as missing: the point
// of the probe is whether the backend can use it now.
func Probe(ctx context.Context, js jetstream.JetStream) Status {
	st := Status{}
	for _, cfg := range Streams(1) {
		_, err := js.Stream(ctx, cfg.Name)
		st.Streams = append(st.Streams, ResourceStatus{Name: cfg.Name, Exists: err == nil})
	}
	for _, cfg := range Buckets(1) {
		_, err := js.KeyValue(ctx, cfg.Bucket)
		st.KVBuckets = append(st.KVBuckets, ResourceStatus{Name: cfg.Bucket, Exists: err == nil})
	}
	for _, cfg := range ObjectStores(1) {
		_, err := js.ObjectStore(ctx, cfg.Bucket)
		st.ObjectStores = append(st.ObjectStores, ResourceStatus{Name: cfg.Bucket, Exists: err == nil})
	}
	return st
}
