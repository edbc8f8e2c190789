package projector

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/uptrace/bun"

	"kanade-backend/actors/projector/mirror"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker"
)

// mirrorSpec says how one KV bucket maps to its mirror table.
type mirrorSpec struct {
	bucket string
	put    func(ctx context.Context, db bun.IDB, key string, value []byte, rev uint64, now time.Time) error
	del    func(ctx context.Context, db bun.IDB, key string, rev uint64, now time.Time) error
	// revisions lists the mirrored keys and their revisions.
	revisions func(ctx context.Context, db bun.IDB) (map[string]uint64, error)
	// drop removes the rows of keys outright (reconciliation after a
	// snapshot: the keys are gone from the bucket without a marker).
	drop func(ctx context.Context, db bun.IDB, keys []string) error
}

const jobsBucket = messages.BucketJobs

var mirrorBuckets = []mirrorSpec{
	{
		bucket: messages.BucketJobs, put: mirror.Job, del: ignoreTime(mirror.DeleteJob),
		revisions: revisionsOf("jobs", "id"), drop: dropKeys("jobs", "id"),
	},
	{
		bucket: messages.BucketSchedules, put: mirror.Schedule, del: ignoreTime(mirror.DeleteSchedule),
		revisions: revisionsOf("schedules", "id"), drop: dropKeys("schedules", "id"),
	},
	{
		bucket: messages.BucketAgentGroups, put: mirror.GroupsJSON,
		del: func(ctx context.Context, db bun.IDB, pc string, rev uint64, now time.Time) error {
			return mirror.Groups(ctx, db, pc, nil, rev, now)
		},
		revisions: revisionsOf("agent_group_revisions", "pc_id"),
		drop: func(ctx context.Context, db bun.IDB, pcs []string) error {
			if err := dropKeys("agent_group_members", "pc_id")(ctx, db, pcs); err != nil {
				return err
			}
			return dropKeys("agent_group_revisions", "pc_id")(ctx, db, pcs)
		},
	},
}

func ignoreTime(del func(context.Context, bun.IDB, string, uint64) error) func(context.Context, bun.IDB, string, uint64, time.Time) error {
	return func(ctx context.Context, db bun.IDB, key string, rev uint64, _ time.Time) error {
		return del(ctx, db, key, rev)
	}
}

func revisionsOf(table, keyCol string) func(context.Context, bun.IDB) (map[string]uint64, error) {
	return func(ctx context.Context, db bun.IDB) (map[string]uint64, error) {
		rows, err := db.NewSelect().TableExpr(table).ColumnExpr(keyCol + ", kv_revision").Rows(ctx)
		if err != nil {
			return nil, fmt.Errorf("list %s revisions: %w", table, err)
		}
		defer rows.Close()
		out := map[string]uint64{}
		for rows.Next() {
			var k string
			var rev uint64
			if err := rows.Scan(&k, &rev); err != nil {
				return nil, fmt.Errorf("list %s revisions: %w", table, err)
			}
			out[k] = rev
		}
		return out, rows.Err()
	}
}

func dropKeys(table, keyCol string) func(context.Context, bun.IDB, []string) error {
	return func(ctx context.Context, db bun.IDB, keys []string) error {
		return chunks(keys, chunkRows, func(part []string) error {
			if _, err := db.NewDelete().TableExpr(table).Where("? IN (?)", bun.Ident(keyCol), bun.List(part)).Exec(ctx); err != nil {
				return fmt.Errorf("drop stale %s rows: %w", table, err)
			}
			return nil
		})
	}
}

// kvMirror keeps one mirror table in step with its KV bucket through a
// watch: first the snapshot (current values, then the nil marker), then
// live updates. When the snapshot is applied, mirror rows whose key did not
// appear in it are removed: their key was deleted, and its marker purged,
// while the backend was away. A database error restarts the actor, which
// starts a new watch and so applies a fresh snapshot; the revision guard
// makes replaying it harmless.
type kvMirror struct {
	env  *env
	spec mirrorSpec
	pump *watchPump
	// snapshotSeq is the bucket's last revision before the watch started:
	// a row not seen in the snapshot with a revision up to it is stale; a
	// newer row was written since (by the API) and is left alone.
	snapshotSeq uint64
	seen        map[string]bool
	synced      bool
	// dropped are the keys the last reconcile removed, announced with the
	// batch's KVMirrored event.
	dropped []string
}

var _ actor.Actor = (*kvMirror)(nil)

// kvBatch is a run of watch entries handed from the pump to the actor.
type kvBatch struct {
	owner       *watchPump
	entries     []jetstream.KeyValueEntry
	snapshotEnd bool
	done        chan struct{}
}

// watchEnded says the watch stopped delivering (connection closed).
type watchEnded struct{ owner *watchPump }

func newKVMirror(e *env, spec mirrorSpec) *kvMirror {
	return &kvMirror{env: e, spec: spec, seen: map[string]bool{}}
}

func (k *kvMirror) name() string { return projMirrorPrefix + k.spec.bucket }

func (k *kvMirror) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		if err := k.start(c); err != nil {
			panic(err)
		}
	case *kvBatch:
		if m.owner != k.pump {
			return
		}
		if err := k.apply(m); err != nil {
			panic(err)
		}
		close(m.done)
		if ev := k.mirrored(m.entries); len(ev.Entries) > 0 {
			c.ActorSystem().EventStream.Publish(ev)
		}
		if m.snapshotEnd && !k.synced {
			k.synced, k.seen = true, nil
			reportReady(c, k.name())
		}
	case *watchEnded:
		if m.owner == k.pump {
			panic(fmt.Errorf("watch of KV %s ended", k.spec.bucket))
		}
	case *actor.Restarting:
		k.pump.stop()
	case *actor.Stopping:
		k.pump.stop()
	}
}

func (k *kvMirror) start(c actor.Context) error {
	ctx, cancel := k.env.opContext()
	defer cancel()
	kv, err := k.env.buckets.Open(ctx, k.spec.bucket)
	if err != nil {
		return fmt.Errorf("mirror %s: open bucket: %w", k.spec.bucket, err)
	}
	status, err := kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("mirror %s: bucket status: %w", k.spec.bucket, err)
	}
	if bs, ok := status.(*jetstream.KeyValueBucketStatus); ok {
		k.snapshotSeq = bs.StreamInfo().State.LastSeq
	}
	self, root := c.Self(), c.ActorSystem().Root
	p, err := startWatchPump(kv, func(msg any) { root.Send(self, msg) })
	if err != nil {
		return fmt.Errorf("mirror %s: watch: %w", k.spec.bucket, err)
	}
	k.pump = p
	return nil
}

func (k *kvMirror) apply(b *kvBatch) error {
	now := k.env.clock.Now().UTC()
	ctx, cancel := k.env.opContext()
	defer cancel()
	var bad []storage.ProjectionError
	err := k.env.store.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		bad = bad[:0]
		for _, e := range b.entries {
			var err error
			switch e.Operation() {
			case jetstream.KeyValuePut:
				err = k.spec.put(ctx, tx, e.Key(), e.Value(), e.Revision(), now)
			default: // delete or purge marker
				err = k.spec.del(ctx, tx, e.Key(), e.Revision(), now)
			}
			if errors.Is(err, mirror.ErrUndecodable) {
				bad = append(bad, storage.ProjectionError{
					Projection: k.name(), Stream: "KV_" + k.spec.bucket, StreamSeq: e.Revision(),
					Subject: "$KV." + k.spec.bucket + "." + e.Key(), Error: err.Error(), Payload: e.Value(),
					RecordedAt: storage.T(now),
				})
				continue
			}
			if err != nil {
				return err
			}
		}
		if err := recordErrors(ctx, tx, bad); err != nil {
			return err
		}
		if b.snapshotEnd && !k.synced {
			return k.reconcile(ctx, tx, b.entries)
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("mirror %s: apply %d entries: %w", k.spec.bucket, len(b.entries), err)
		// The actor fails and its restart reads the bucket again, which is
		// the retry; the stall says why meanwhile.
		k.env.stalled(k.name(), err)
		return err
	}
	k.env.progressed(k.name())
	if !k.synced {
		for _, e := range b.entries {
			k.seen[e.Key()] = true
		}
	}
	k.env.metrics.projected.WithLabelValues(k.name()).Add(float64(len(b.entries) - len(bad)))
	if len(bad) > 0 {
		k.env.metrics.poison.WithLabelValues(k.name()).Add(float64(len(bad)))
		k.env.log.Warn("undecodable KV values recorded in projection_errors", "bucket", k.spec.bucket, "count", len(bad))
	}
	return nil
}

// mirrored is the KVMirrored event of a committed batch: its entries, and
// the keys reconcile dropped as deletions newer than the snapshot.
func (k *kvMirror) mirrored(entries []jetstream.KeyValueEntry) *messages.KVMirrored {
	ev := &messages.KVMirrored{Bucket: k.spec.bucket, Entries: make([]messages.KVMirroredEntry, 0, len(entries)+len(k.dropped))}
	for _, e := range entries {
		me := messages.KVMirroredEntry{Key: e.Key(), Rev: e.Revision()}
		if e.Operation() == jetstream.KeyValuePut {
			me.Value = e.Value()
		} else {
			me.Deleted = true
		}
		ev.Entries = append(ev.Entries, me)
	}
	for _, key := range k.dropped {
		ev.Entries = append(ev.Entries, messages.KVMirroredEntry{Key: key, Rev: k.snapshotSeq + 1, Deleted: true})
	}
	k.dropped = nil
	return ev
}

// reconcile drops rows whose key is absent from the snapshot.
func (k *kvMirror) reconcile(ctx context.Context, tx bun.Tx, last []jetstream.KeyValueEntry) error {
	revs, err := k.spec.revisions(ctx, tx)
	if err != nil {
		return err
	}
	inLast := map[string]bool{}
	for _, e := range last {
		inLast[e.Key()] = true
	}
	var stale []string
	for key, rev := range revs {
		if !k.seen[key] && !inLast[key] && rev <= k.snapshotSeq {
			stale = append(stale, key)
		}
	}
	k.dropped = stale
	if len(stale) == 0 {
		return nil
	}
	k.env.log.Info("mirror rows without a key in the bucket removed", "bucket", k.spec.bucket, "rows", len(stale))
	return k.spec.drop(ctx, tx, stale)
}

// watchPump reads a KV watch for a kvMirror actor, which owns it: started
// in Started, stopped (waiting for the goroutine) in Stopping/Restarting.
// It hands entries over in runs of what is already buffered, up to
// chunkRows, so a snapshot of thousands of keys is written in a few
// transactions, and waits for each run to be applied before reading on.
type watchPump struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startWatchPump(kv jetstream.KeyValue, deliver func(any)) (*watchPump, error) {
	ctx, cancel := context.WithCancel(context.Background())
	w, err := kv.WatchAll(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	p := &watchPump{cancel: cancel}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		broker.FollowWatch(w, func(updates <-chan jetstream.KeyValueEntry) { p.run(ctx, updates, deliver) })
	}()
	return p, nil
}

func (p *watchPump) stop() {
	if p == nil {
		return
	}
	p.cancel()
	p.wg.Wait()
}

func (p *watchPump) run(ctx context.Context, updates <-chan jetstream.KeyValueEntry, deliver func(any)) {
	for {
		var first jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			return
		case e, ok := <-updates:
			if !ok {
				deliver(&watchEnded{owner: p})
				return
			}
			first = e
		}
		b := &kvBatch{owner: p, done: make(chan struct{})}
		if first == nil {
			b.snapshotEnd = true
		} else {
			b.entries = append(b.entries, first)
		}
		closed := false
	more:
		for !b.snapshotEnd && len(b.entries) < chunkRows {
			select {
			case e, ok := <-updates:
				if !ok {
					closed = true
					break more
				}
				if e == nil {
					b.snapshotEnd = true
				} else {
					b.entries = append(b.entries, e)
				}
			default:
				break more
			}
		}
		deliver(b)
		select {
		case <-b.done:
		case <-ctx.Done():
			return
		}
		if closed {
			deliver(&watchEnded{owner: p})
			return
		}
	}
}
