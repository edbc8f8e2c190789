package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/messages"
)

// groupWatch follows the agent_groups bucket for the whole fleet: one
// KV watch, whose updates the router fans out to the agents concerned,
// instead of one watch per agent.
type groupWatch struct {
	w      jetstream.KeyWatcher
	cancel context.CancelFunc
	done   chan struct{}
}

// watchGroups starts the watch and returns once the current values have
// been handed to send, so that agents know their groups before the fleet
// starts receiving Commands.
func watchGroups(ctx context.Context, kv jetstream.KeyValue, log *slog.Logger, send func(groupsUpdate)) (*groupWatch, error) {
	// The watch lives until stop, not until the caller's ctx ends: the
	// library unsubscribes when the context it was given is done.
	wctx, cancel := context.WithCancel(context.Background())
	w, err := kv.WatchAll(wctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch %s: %w", messages.BucketAgentGroups, err)
	}
	g := &groupWatch{w: w, cancel: cancel, done: make(chan struct{})}
	initial := make(chan struct{})
	go g.loop(wctx, log, send, initial)
	select {
	case <-initial:
		return g, nil
	case <-g.done:
		return nil, fmt.Errorf("watch %s ended before its initial values", messages.BucketAgentGroups)
	case <-ctx.Done():
		g.stop()
		return nil, fmt.Errorf("watch %s: initial values: %w", messages.BucketAgentGroups, ctx.Err())
	}
}

func (g *groupWatch) loop(ctx context.Context, log *slog.Logger, send func(groupsUpdate), initial chan struct{}) {
	defer close(g.done)
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case <-ctx.Done():
			return
		case e, ok = <-g.w.Updates():
		}
		switch {
		case !ok:
			if ctx.Err() == nil {
				// Only a deleted bucket ends a watch; agents keep the
				// groups they had.
				log.Warn("agent_groups watch ended; group membership is frozen")
			}
			return
		case e == nil:
			// The end of the current values; nats.go sends it once.
			if initial != nil {
				close(initial)
				initial = nil
			}
			continue
		}
		var groups []string
		if e.Operation() == jetstream.KeyValuePut {
			ag, err := messages.ParseAgentGroups(e.Value())
			if err != nil {
				// Keep the agent's groups as they were; an operator will
				// fix the value, and the next put is seen.
				log.Warn("ignoring undecodable agent_groups value", "pc_id", e.Key(), "err", err)
				continue
			}
			groups = ag.Groups
		}
		// A delete or purge means no groups, like a missing key.
		send(groupsUpdate{pcID: e.Key(), groups: groups})
	}
}

// stop cancels the loop's context before stopping the watch: the watch
// closing its channel must read as our own stop, not as a deleted bucket
// (which would log a false warning on every Ctrl-C).
func (g *groupWatch) stop() {
	g.cancel()
	_ = g.w.Stop()
	<-g.done
}

// GroupShare is one term of an --assign-groups spec: a group and how
// many PCs get it, as a percentage of the fleet or an absolute count.
type GroupShare struct {
	Group   string
	Percent float64 // when Count is 0
	Count   int
}

// ParseGroupSpec reads "canary=5%,wave1=45%" (percentages of the fleet)
// or absolute counts ("canary=2,wave1=10"), mixed as needed.
func ParseGroupSpec(s string) ([]GroupShare, error) {
	var spec []GroupShare
	seen := map[string]bool{}
	for _, term := range strings.Split(s, ",") {
		term = strings.TrimSpace(term)
		if term == "" {
			continue
		}
		name, amount, ok := strings.Cut(term, "=")
		name, amount = strings.TrimSpace(name), strings.TrimSpace(amount)
		if !ok {
			return nil, fmt.Errorf("group spec %q: want group=N%% or group=N", term)
		}
		if err := messages.ValidateToken("group", name); err != nil {
			return nil, fmt.Errorf("group spec %q: %w", term, err)
		}
		if seen[name] {
			return nil, fmt.Errorf("group spec: group %q given twice", name)
		}
		seen[name] = true
		share := GroupShare{Group: name}
		if pct, isPct := strings.CutSuffix(amount, "%"); isPct {
			v, err := strconv.ParseFloat(strings.TrimSpace(pct), 64)
			if err != nil || v <= 0 || v > 100 || math.IsNaN(v) {
				return nil, fmt.Errorf("group spec %q: percentage must be in (0, 100]", term)
			}
			share.Percent = v
		} else {
			n, err := strconv.Atoi(amount)
			if err != nil || n <= 0 {
				return nil, fmt.Errorf("group spec %q: count must be a positive integer (or a percentage such as 5%%)", term)
			}
			share.Count = n
		}
		spec = append(spec, share)
	}
	if len(spec) == 0 {
		return nil, errors.New("group spec is empty")
	}
	return spec, nil
}

// Plan splits pcIDs among the groups of spec, in order and without
// overlap, like waves: with 100 PCs, "canary=5%,wave1=45%" gives canary
// the first 5 PCs and wave1 the next 45; the rest get nothing. Operators
// can then predict who is in which wave. A percentage rounds to the
// nearest whole PC but never to zero.
func Plan(pcIDs []string, spec []GroupShare) (map[string][]string, error) {
	out := make(map[string][]string, len(spec))
	next := 0
	for _, s := range spec {
		n := s.Count
		if n == 0 {
			n = int(math.Round(s.Percent * float64(len(pcIDs)) / 100))
			n = max(n, 1)
		}
		if next+n > len(pcIDs) {
			return nil, fmt.Errorf("groups need at least %d PCs up to %q; the fleet has %d", next+n, s.Group, len(pcIDs))
		}
		out[s.Group] = pcIDs[next : next+n]
		next += n
	}
	return out, nil
}

// AssignGroups adds the groups of spec to the agent_groups keys of
// pcIDs, as an operator would: each key keeps the groups it already has,
// and is written as {"groups":[...]} with a compare-and-set so that a
// concurrent edit is merged, not overwritten. It returns the plan it
// applied (group → PCs).
func AssignGroups(ctx context.Context, js jetstream.JetStream, pcIDs []string, spec []GroupShare) (map[string][]string, error) {
	plan, err := Plan(pcIDs, spec)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, messages.BucketAgentGroups)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", messages.BucketAgentGroups, err)
	}
	add := make(map[string][]string)
	for g, pcs := range plan {
		for _, pc := range pcs {
			add[pc] = append(add[pc], g)
		}
	}
	// A few writers in parallel: one round trip per key would make a
	// 10 000-PC assignment take many seconds.
	const workers = 16
	work := make(chan string)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for pc := range work {
				if err := mergeGroups(ctx, kv, pc, add[pc]); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	keys := make([]string, 0, len(add))
	for pc := range add {
		keys = append(keys, pc)
	}
	slices.Sort(keys)
feed:
	for _, pc := range keys {
		select {
		case work <- pc:
		case <-ctx.Done():
			errs = append(errs, ctx.Err())
			break feed
		}
	}
	close(work)
	wg.Wait()
	if len(errs) > 0 {
		return plan, fmt.Errorf("assign groups: %d of %d keys failed: %w", len(errs), len(keys), errors.Join(errs...))
	}
	return plan, nil
}

// mergeGroups adds groups to one agent_groups key with optimistic
// concurrency, retrying when another writer got there first.
func mergeGroups(ctx context.Context, kv jetstream.KeyValue, pcID string, groups []string) error {
	for range 10 {
		e, err := kv.Get(ctx, pcID)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			b, err := json.Marshal(messages.AgentGroups{Groups: groups})
			if err != nil {
				return err
			}
			if _, err = kv.Create(ctx, pcID, b); errors.Is(err, jetstream.ErrKeyExists) {
				continue
			} else if err != nil {
				return fmt.Errorf("create agent_groups[%s]: %w", pcID, err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("read agent_groups[%s]: %w", pcID, err)
		}
		cur, err := messages.ParseAgentGroups(e.Value())
		if err != nil {
			return fmt.Errorf("agent_groups[%s] holds an undecodable value; fix or delete it first: %w", pcID, err)
		}
		merged := messages.NormalizeGroups(append(slices.Clone(cur.Groups), groups...))
		wrapped := bytes.HasPrefix(bytes.TrimSpace(e.Value()), []byte("{"))
		if slices.Equal(merged, cur.Groups) && wrapped {
			return nil // already there, already in the wrapper form
		}
		b, err := json.Marshal(messages.AgentGroups{Groups: merged})
		if err != nil {
			return err
		}
		_, err = kv.Update(ctx, pcID, b, e.Revision())
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			continue
		}
		if err != nil {
			return fmt.Errorf("update agent_groups[%s]: %w", pcID, err)
		}
		return nil
	}
	return fmt.Errorf("update agent_groups[%s]: still conflicting after 10 attempts", pcID)
}
