// Package fleetkv is how the API reads and writes the KV buckets that steer
// agents directly: agent_config (configuration scopes) and agent_groups
// (memberships). Agents watch these buckets, and several operators (or an
// operator and a rollout) may edit the same key at once, so every
// read-modify-write here is a compare-and-set on the key's revision,
// retried on conflict: no concurrent edit is ever lost. The package is
// internal to http/ because only API areas write these buckets (fleet for
// groups and scopes, releases for rollouts).
package fleetkv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/messages"
	"kanade-backend/storage/broker"
)

// KV is the part of a jetstream.KeyValue this package uses.
type KV interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Put(ctx context.Context, key string, value []byte) (uint64, error)
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
	Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
	WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error)
}

// Opener looks a bucket up; jetstream.JetStream implements it.
type Opener interface {
	KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error)
}

// Bucket opens a KV bucket on first use and keeps the handle. The lookup
// is lazy because NATS may be away when the backend starts (the API stays
// up and reports degraded health); a failed lookup is retried on the next
// request.
type Bucket struct {
	js   Opener
	name string

	handles *broker.KVHandles
}

// NewBucket returns a lazily opened bucket.
func NewBucket(js Opener, name string) *Bucket {
	return &Bucket{js: js, name: name, handles: broker.NewKVHandles(js)}
}

// Name is the bucket name.
func (b *Bucket) Name() string { return b.name }

// Open returns the bucket, or an Unavailable error (502) naming it.
func (b *Bucket) Open(ctx context.Context) (KV, error) {
	if b.js == nil {
		return nil, messages.Unavailablef("KV bucket %s unavailable: no JetStream connection", b.name)
	}
	kv, err := b.handles.Open(ctx, b.name)
	if err != nil {
		return nil, messages.Unavailablef("KV bucket %s unavailable: %v", b.name, err)
	}
	return kv, nil
}

// maxAttempts bounds the compare-and-set loop. Each round at least one
// concurrent writer wins, so this many rounds cover far more simultaneous
// editors of one key than an operator team produces; the request context
// bounds it in time as well.
const maxAttempts = 100

// Update applies mutate to the current value of key and writes the result
// with compare-and-set on the revision it read, retrying from a fresh read
// when another writer got there first. decode turns a stored value into T;
// exists is false when the key is missing or deleted. mutate returns the
// new value and whether to write it at all (false leaves the key untouched,
// so an idempotent request does not wake every agent watching the bucket).
// Update returns the resulting value and its revision (the unchanged
// revision when nothing was written; 0 for a missing key left missing).
func Update[T any](ctx context.Context, kv KV, key string,
	decode func([]byte) (T, error), encode func(T) ([]byte, error),
	mutate func(cur T, exists bool) (T, bool, error),
) (T, uint64, error) {
	var zero T
	for attempt := 1; ; attempt++ {
		var cur T
		var rev uint64
		exists := false
		e, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return zero, 0, unavailable("read "+key, err)
		default:
			rev = e.Revision()
			exists = true
			if cur, err = decode(e.Value()); err != nil {
				return zero, 0, fmt.Errorf("decode stored value of %s (revision %d): %w", key, rev, err)
			}
		}
		next, write, err := mutate(cur, exists)
		if err != nil {
			return zero, 0, err
		}
		if !write {
			return next, rev, nil
		}
		b, err := encode(next)
		if err != nil {
			return zero, 0, fmt.Errorf("encode %s: %w", key, err)
		}
		var newRev uint64
		if exists {
			newRev, err = kv.Update(ctx, key, b, rev)
		} else {
			// Create also succeeds over a delete marker, and fails with
			// ErrKeyExists when a concurrent writer created the key first.
			newRev, err = kv.Create(ctx, key, b)
		}
		if err == nil {
			return next, newRev, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
			return zero, 0, unavailable("write "+key, err)
		}
		if attempt >= maxAttempts {
			return zero, 0, messages.Conflictf("%s changed %d times while this request was updating it; try again", key, attempt)
		}
		// A little random backoff spreads the retries of writers that
		// collided, so they do not collide again in lockstep.
		d := time.Duration(1+rand.IntN(3*min(attempt, 10))) * time.Millisecond
		select {
		case <-ctx.Done():
			return zero, 0, fmt.Errorf("update %s: %w", key, ctx.Err())
		case <-time.After(d):
		}
	}
}

// All returns every live key of the bucket with its value, in one pass
// over the bucket (a watch that delivers the current values and then nil)
// rather than one Get per key.
func All(ctx context.Context, kv KV) (map[string][]byte, error) {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, unavailable("list keys", err)
	}
	defer func() { _ = w.Stop() }()
	out := map[string][]byte{}
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("list keys: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("list keys: watcher closed before the initial values were delivered")
			}
			if e == nil {
				return out, nil
			}
			out[e.Key()] = e.Value()
		}
	}
}

// unavailable reports a failed KV operation as a broker problem (502):
// the request was fine, NATS did not serve it. The text names the
// operation so the operator can tell which bucket is affected.
func unavailable(op string, err error) error {
	return messages.Unavailablef("%s: %v", op, err)
}

// ---- agent_config ----

// ReadScope returns the scope stored at key; found is false when unset.
func ReadScope(ctx context.Context, kv KV, key string) (scope messages.ConfigScope, found bool, err error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return messages.ConfigScope{}, false, nil
	}
	if err != nil {
		return scope, false, unavailable("read agent_config "+key, err)
	}
	scope, err = DecodeScope(e.Value())
	if err != nil {
		return scope, false, fmt.Errorf("decode agent_config %s: %w", key, err)
	}
	return scope, true, nil
}

// DecodeScope reads a stored scope; an empty value (purged key) is an
// empty scope. Stored values are not re-validated: a scope written by an
// older tool must still be readable so that it can be fixed.
func DecodeScope(b []byte) (messages.ConfigScope, error) {
	var s messages.ConfigScope
	if len(strings.TrimSpace(string(b))) == 0 {
		return s, nil
	}
	err := messages.DecodeJSON(b, &s)
	return s, err
}

// EncodeScope is the stored form of a scope.
func EncodeScope(s messages.ConfigScope) ([]byte, error) { return json.Marshal(s) }

// UpdateScope changes the scope at key with compare-and-set; mutate edits
// the current scope in place (an empty scope when unset) and reports
// whether anything changed.
func UpdateScope(ctx context.Context, kv KV, key string, mutate func(s *messages.ConfigScope) (bool, error)) (messages.ConfigScope, uint64, error) {
	return Update(ctx, kv, key, DecodeScope, EncodeScope,
		func(cur messages.ConfigScope, _ bool) (messages.ConfigScope, bool, error) {
			changed, err := mutate(&cur)
			return cur, changed, err
		})
}

// ScopeLabel names an agent_config key for operators: "global",
// "group:<g>", "pc:<pc_id>" (the labels the upstream CLI prints).
func ScopeLabel(key string) string {
	switch {
	case key == messages.ConfigKeyGlobal:
		return "global"
	case strings.HasPrefix(key, "groups."):
		return "group:" + strings.TrimPrefix(key, "groups.")
	case strings.HasPrefix(key, "pcs."):
		return "pc:" + strings.TrimPrefix(key, "pcs.")
	}
	return key
}

// Effective resolves a PC's configuration (wire.md §4) from the bucket:
// global, then the scopes of its groups (alphabetical, later wins), then
// its own scope.
func Effective(ctx context.Context, kv KV, pcID string, groups []string) (messages.EffectiveConfig, []string, error) {
	global, found, err := ReadScope(ctx, kv, messages.ConfigKeyGlobal)
	if err != nil {
		return messages.EffectiveConfig{}, nil, err
	}
	var globalP *messages.ConfigScope
	if found {
		globalP = &global
	}
	groupScopes := map[string]messages.ConfigScope{}
	for _, g := range groups {
		s, found, err := ReadScope(ctx, kv, messages.ConfigKeyGroup(g))
		if err != nil {
			return messages.EffectiveConfig{}, nil, err
		}
		if found {
			groupScopes[g] = s
		}
	}
	pc, found, err := ReadScope(ctx, kv, messages.ConfigKeyPC(pcID))
	if err != nil {
		return messages.EffectiveConfig{}, nil, err
	}
	var pcP *messages.ConfigScope
	if found {
		pcP = &pc
	}
	eff, warnings := messages.ResolveEffectiveConfig(globalP, groupScopes, pcP)
	return eff, warnings, nil
}

// ---- agent_groups ----

// ReadGroups returns the PC's groups (empty when unset) and the revision
// they were read at (0 when unset).
func ReadGroups(ctx context.Context, kv KV, pcID string) ([]string, uint64, error) {
	e, err := kv.Get(ctx, pcID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return []string{}, 0, nil
	}
	if err != nil {
		return nil, 0, unavailable("read agent_groups "+pcID, err)
	}
	g, err := DecodeGroups(e.Value())
	if err != nil {
		return nil, 0, fmt.Errorf("decode agent_groups %s: %w", pcID, err)
	}
	return g, e.Revision(), nil
}

// DecodeGroups reads a stored AgentGroups value (wrapper or bare array).
func DecodeGroups(b []byte) ([]string, error) {
	g, err := messages.ParseAgentGroups(b)
	if err != nil {
		return nil, err
	}
	return messages.NormalizeGroups(g.Groups), nil
}

// EncodeGroups is the stored form: {"groups": [...]}, sorted and
// de-duplicated.
func EncodeGroups(groups []string) ([]byte, error) {
	return json.Marshal(messages.AgentGroups{Groups: groups})
}

// UpdateGroups changes the PC's groups with compare-and-set. mutate gets
// the current (normalised) list and returns the new one; the write is
// skipped when the normalised result equals the current list.
func UpdateGroups(ctx context.Context, kv KV, pcID string, mutate func(cur []string) []string) ([]string, uint64, error) {
	return Update(ctx, kv, pcID, DecodeGroups, EncodeGroups,
		func(cur []string, exists bool) ([]string, bool, error) {
			if cur == nil {
				cur = []string{}
			}
			next := messages.NormalizeGroups(mutate(append([]string(nil), cur...)))
			// Writing an unchanged list would only wake the agent's watch;
			// a missing key with no groups is already the empty list.
			return next, !slices.Equal(cur, next), nil
		})
}
