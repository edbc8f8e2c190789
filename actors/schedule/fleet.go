package schedule

import (
	"slices"
	"sync"
	"time"

	"kanade-backend/messages"
	"kanade-backend/storage"
)

// fleetView is the scheduler's in-memory view of what a tick reads: the job
// catalog (as the jobs mirror holds it) and the fleet (each agent's last
// heartbeat, each PC's groups). A tick resolves its job and its target
// here, without a query or a KV read: when thousands of schedules share an
// instant, per-tick I/O is what made the burst late.
//
// The view is loaded from the store once, when the scheduler starts
// (FleetSnapshot), and kept current by the projectors' events, applied in
// the supervisor's event subscription: AgentsSeen after each heartbeat
// flush and KVMirrored after each batch of the jobs and agent_groups
// mirrors. Every fact carries its order (a heartbeat time, a KV revision),
// and an older fact never replaces a newer one, so the load and the events
// may arrive in any order. Readers are the schedule actors' workers; the
// lock is held for map work only.
//
// Besides the PCs a fire reaches (resolve), the view answers which PCs
// count for once_per_pc and once_per_target being done (resolveKnown):
// every known PC of the target, alive or not, until it has been silent
// longer than the decommission horizon or was decommissioned. A
// decommissioned PC is kept as a tombstone (gone) holding its last
// heartbeat, so that a heartbeat flushed late cannot bring it back while a
// newer one (the PC really runs again) does.
//
// A pc_id that is not a valid subject token (an agent_groups key may hold
// a '.') is left out of every target and counted: published as part of a
// subject it would address the wrong agents, and failing every tick that
// reaches it would stop the schedule for the whole fleet.
type fleetView struct {
	mu sync.RWMutex
	// jobs by id; a deleted job stays as a tombstone with the revision of
	// its delete, so that an older value cannot bring it back.
	jobs map[string]fleetJob
	// seen is each valid PC's newest heartbeat; agents lists them sorted.
	seen   map[string]time.Time
	agents []string
	// groupRev is the agent_groups revision applied per PC, memberOf its
	// groups, members each group's PCs (sorted).
	groupRev map[string]uint64
	memberOf map[string][]string
	members  map[string][]string
	// invalid are the stored pc_ids skipped as subject tokens.
	invalid map[string]struct{}
	// gone are the decommissioned PCs, each with the last heartbeat it
	// had (zero: none); horizon is how long a PC may stay silent and
	// still count as known (0: forever).
	gone    map[string]time.Time
	horizon time.Duration
	// onInvalid is told about each invalid pc_id once (log and metric).
	onInvalid func(pcID string, err error)
}

type fleetJob struct {
	// m is shared by every fire of the job at this revision (the exec
	// engine encodes it once per batch); nobody changes it.
	m       *messages.Manifest
	err     error // the value does not decode
	rev     uint64
	deleted bool
}

func newFleetView(onInvalid func(string, error)) *fleetView {
	return &fleetView{
		jobs: map[string]fleetJob{}, seen: map[string]time.Time{}, groupRev: map[string]uint64{},
		memberOf: map[string][]string{}, members: map[string][]string{}, invalid: map[string]struct{}{},
		gone: map[string]time.Time{}, onInvalid: onInvalid,
	}
}

// FleetSnapshot is the fleet view's initial state, read from the store in
// bulk (Reader.LoadFleet).
type FleetSnapshot struct {
	Jobs   []SnapshotJob
	Agents map[string]time.Time
	// Groups is each PC's groups and the agent_groups revision they come
	// from.
	Groups map[string]SnapshotGroups
	// Decommissioned maps each decommissioned PC to its last heartbeat
	// when it was decommissioned (zero: it never sent one).
	Decommissioned map[string]time.Time
}

// SnapshotJob is one row of the jobs mirror.
type SnapshotJob struct {
	ID       string
	Manifest []byte
	Rev      uint64
}

// SnapshotGroups is one PC's mirrored groups.
type SnapshotGroups struct {
	Groups []string
	Rev    uint64
}

// load merges a snapshot into the view.
func (f *fleetView) load(s *FleetSnapshot) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for pc, last := range s.Decommissioned {
		f.decommission(pc, last)
	}
	for _, j := range s.Jobs {
		f.putJob(j.ID, j.Manifest, j.Rev)
	}
	for pc, at := range s.Agents {
		f.sawAgent(pc, at)
	}
	for pc, g := range s.Groups {
		f.setGroups(pc, g.Groups, g.Rev)
	}
}

// apply takes one projector event; other events are ignored.
func (f *fleetView) apply(evt any) {
	switch e := evt.(type) {
	case *messages.AgentsSeen:
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, a := range e.Agents {
			f.sawAgent(a.PcID, a.At)
		}
	case *messages.AgentDecommissioned:
		f.mu.Lock()
		defer f.mu.Unlock()
		f.decommission(e.PcID, e.LastHeartbeat)
	case *messages.KVMirrored:
		switch e.Bucket {
		case messages.BucketJobs:
			f.mu.Lock()
			defer f.mu.Unlock()
			for _, en := range e.Entries {
				if en.Deleted {
					f.deleteJob(en.Key, en.Rev)
				} else {
					f.putJob(en.Key, en.Value, en.Rev)
				}
			}
		case messages.BucketAgentGroups:
			f.mu.Lock()
			defer f.mu.Unlock()
			for _, en := range e.Entries {
				var groups []string
				if !en.Deleted {
					g, err := messages.ParseAgentGroups(en.Value)
					if err != nil {
						continue // the mirror records it as a projection error
					}
					groups = g.Groups
				}
				f.setGroups(en.Key, groups, en.Rev)
			}
		}
	}
}

// isFleetEvent says whether the view follows evt.
func isFleetEvent(evt any) bool {
	switch e := evt.(type) {
	case *messages.AgentsSeen, *messages.AgentDecommissioned:
		return true
	case *messages.KVMirrored:
		return e.Bucket == messages.BucketJobs || e.Bucket == messages.BucketAgentGroups
	}
	return false
}

func (f *fleetView) putJob(id string, value []byte, rev uint64) {
	if cur, ok := f.jobs[id]; ok && cur.rev >= rev {
		return
	}
	j := fleetJob{rev: rev, m: new(messages.Manifest)}
	if err := messages.DecodeJSON(value, j.m); err != nil {
		j.err = err
	}
	f.jobs[id] = j
}

func (f *fleetView) deleteJob(id string, rev uint64) {
	if cur, ok := f.jobs[id]; ok && cur.rev >= rev {
		return
	}
	f.jobs[id] = fleetJob{rev: rev, deleted: true}
}

// valid checks a pc_id as a subject token, reporting each bad one once.
func (f *fleetView) valid(pc string) bool {
	err := messages.ValidateToken("pc_id", pc)
	if err == nil {
		return true
	}
	if _, seen := f.invalid[pc]; !seen {
		f.invalid[pc] = struct{}{}
		if f.onInvalid != nil {
			f.onInvalid(pc, err)
		}
	}
	return false
}

func (f *fleetView) sawAgent(pc string, at time.Time) {
	if last, ok := f.gone[pc]; ok {
		if !at.After(last) {
			return // a heartbeat from before the decommission, flushed late
		}
		delete(f.gone, pc) // running again: known again
	}
	cur, known := f.seen[pc]
	if known {
		if at.After(cur) {
			f.seen[pc] = at
		}
		return
	}
	if !f.valid(pc) {
		return
	}
	f.seen[pc] = at
	i, _ := slices.BinarySearch(f.agents, pc)
	f.agents = slices.Insert(f.agents, i, pc)
}

// decommission forgets pc as an agent and keeps its tombstone; its groups
// go with the agent_groups delete that the fleet API makes, and until then
// the tombstone keeps it out of every group.
func (f *fleetView) decommission(pc string, last time.Time) {
	if cur, ok := f.gone[pc]; ok && cur.After(last) {
		return
	}
	if seen, ok := f.seen[pc]; ok && seen.After(last) {
		return // it sent a heartbeat since: an older decommission
	}
	f.gone[pc] = last
	if _, ok := f.seen[pc]; ok {
		delete(f.seen, pc)
		if i, found := slices.BinarySearch(f.agents, pc); found {
			f.agents = slices.Delete(f.agents, i, i+1)
		}
	}
}

// setGroups replaces pc's groups if rev is newer than the revision applied.
func (f *fleetView) setGroups(pc string, groups []string, rev uint64) {
	if cur, ok := f.groupRev[pc]; ok && cur >= rev {
		return
	}
	f.groupRev[pc] = rev
	if !f.valid(pc) {
		return
	}
	for _, g := range f.memberOf[pc] {
		ms := f.members[g]
		if i, ok := slices.BinarySearch(ms, pc); ok {
			ms = slices.Delete(ms, i, i+1)
		}
		if len(ms) == 0 {
			delete(f.members, g)
		} else {
			f.members[g] = ms
		}
	}
	groups = messages.NormalizeGroups(groups)
	if len(groups) == 0 {
		delete(f.memberOf, pc)
		return
	}
	f.memberOf[pc] = groups
	for _, g := range groups {
		ms := f.members[g]
		if i, ok := slices.BinarySearch(ms, pc); !ok {
			f.members[g] = slices.Insert(ms, i, pc)
		}
	}
}

// job returns the catalog entry of id as mirrored (shared: read only), or
// an error wrapping messages.ErrNotFound when the catalog has no such job.
func (f *fleetView) job(id string) (*messages.Manifest, error) {
	f.mu.RLock()
	j, ok := f.jobs[id]
	f.mu.RUnlock()
	switch {
	case !ok || j.deleted:
		return nil, messages.NotFoundf("job '%s' not found in catalog", id)
	case j.err != nil:
		return nil, messages.Invalidf("job '%s' in catalog is not a valid manifest: %v; post it again", id, j.err)
	}
	return j.m, nil
}

// resolve returns the PCs a target means at now, as
// storage.ResolveTargetPCs does from the store (behaviour.md §3): `all` →
// every alive agent, `groups` → alive members of any listed group (each
// part sorted by pc_id), `pcs` → the listed PCs verbatim; the union in
// first-occurrence order.
func (f *fleetView) resolve(t messages.Target, now time.Time) []string {
	since := now.Add(-storage.AliveWindow)
	alive := func(pc string) bool { return !f.seen[pc].Before(since) }
	var out []string
	var seen map[string]bool
	add := func(pc string) {
		if seen == nil {
			seen = map[string]bool{}
		}
		if !seen[pc] {
			seen[pc] = true
			out = append(out, pc)
		}
	}
	f.mu.RLock()
	if t.All {
		out = make([]string, 0, len(f.agents))
		seen = make(map[string]bool, len(f.agents))
		for _, pc := range f.agents {
			if alive(pc) {
				add(pc)
			}
		}
	}
	if len(t.Groups) > 0 {
		var part []string
		for _, g := range t.Groups {
			for _, pc := range f.members[g] {
				if alive(pc) {
					part = append(part, pc)
				}
			}
		}
		if len(t.Groups) > 1 {
			slices.Sort(part)
			part = slices.Compact(part)
		}
		for _, pc := range part {
			add(pc)
		}
	}
	f.mu.RUnlock()
	for _, pc := range t.Pcs {
		add(pc)
	}
	return out
}

// knownTarget is a target resolved for once_per_pc and once_per_target.
type knownTarget struct {
	// fire are the PCs a fire reaches now: resolve's answer less the
	// decommissioned PCs and listed PCs silent beyond the horizon.
	fire []string
	// known are the PCs that count for the schedule being done: every
	// known PC of the target, alive or not (decommissioned ones and
	// those silent beyond the horizon left out), each part sorted, the
	// union in first-occurrence order. fire ⊆ known.
	known []string
	// online says, for each PC of known, whether it sent a heartbeat
	// within the alive window (never seen: group members, listed PCs,
	// are offline).
	online []bool
}

// resolveKnown resolves t at now for the done judgement (see knownTarget).
// A PC is known when it sent a heartbeat within the horizon, or when it
// never sent one but belongs to a listed group or is listed itself (groups
// are often given before PCs are switched on; a listed PC is wanted). It
// runs on every tick of a once-per schedule, so the common target (`all`
// alone) is one pass over the sorted agents without a dedup map.
func (f *fleetView) resolveKnown(t messages.Target, now time.Time) knownTarget {
	r := knownResolver{f: f, since: now.Add(-storage.AliveWindow)}
	if f.horizon > 0 {
		r.expiry = now.Add(-f.horizon)
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	r.size(t)
	if t.All {
		for _, pc := range f.agents {
			r.addCounted(pc, false)
		}
	}
	if len(t.Groups) > 0 {
		for _, pc := range f.unionOfMembers(t.Groups) {
			r.addCounted(pc, false)
		}
	}
	for _, pc := range t.Pcs {
		// Listed PCs are fired verbatim, alive or not (as resolve does).
		r.addCounted(pc, true)
	}
	return r.out
}

// knownResolver is one resolveKnown call in progress; it runs under the
// view's read lock.
type knownResolver struct {
	f             *fleetView
	since, expiry time.Time
	// inFire and inKnown are set only when the target can repeat a PC.
	inFire, inKnown map[string]bool
	out             knownTarget
}

// size makes the dedup maps when the target can repeat a PC (a union of
// parts, or a verbatim list) and sizes the output for `all`.
func (r *knownResolver) size(t messages.Target) {
	parts := 0
	for _, has := range []bool{t.All, len(t.Groups) > 0, len(t.Pcs) > 0} {
		if has {
			parts++
		}
	}
	if parts > 1 || len(t.Pcs) > 0 {
		n := len(t.Pcs)
		if t.All {
			n += len(r.f.agents)
		}
		r.inFire, r.inKnown = make(map[string]bool, n), make(map[string]bool, n)
	}
	if t.All {
		n := len(r.f.agents)
		r.out.known, r.out.online, r.out.fire = make([]string, 0, n), make([]bool, 0, n), make([]string, 0, n)
	}
}

// counts says whether pc counts as known and whether it is alive.
func (r *knownResolver) counts(pc string) (known, alive bool) {
	if _, gone := r.f.gone[pc]; gone {
		return false, false
	}
	at, ok := r.f.seen[pc]
	if !ok {
		return true, false
	}
	if !r.expiry.IsZero() && at.Before(r.expiry) {
		return false, false
	}
	return true, !at.Before(r.since)
}

// addCounted adds a known pc; a fire reaches it when it is alive or, for a
// listed PC, always.
func (r *knownResolver) addCounted(pc string, listed bool) {
	if known, alive := r.counts(pc); known {
		r.add(pc, listed || alive, alive)
	}
}

func (r *knownResolver) add(pc string, fire, alive bool) {
	if fire && (r.inFire == nil || !r.inFire[pc]) {
		if r.inFire != nil {
			r.inFire[pc] = true
		}
		r.out.fire = append(r.out.fire, pc)
	}
	if r.inKnown == nil || !r.inKnown[pc] {
		if r.inKnown != nil {
			r.inKnown[pc] = true
		}
		r.out.known = append(r.out.known, pc)
		r.out.online = append(r.out.online, alive)
	}
}

// unionOfMembers is the members of groups, sorted and without repeats
// when there is more than one group (one group's list is used as it is).
// The caller holds the view's lock and only reads the result.
func (f *fleetView) unionOfMembers(groups []string) []string {
	if len(groups) == 1 {
		return f.members[groups[0]]
	}
	var part []string
	for _, g := range groups {
		part = append(part, f.members[g]...)
	}
	slices.Sort(part)
	return slices.Compact(part)
}
