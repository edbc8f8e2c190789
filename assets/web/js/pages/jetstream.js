// JetStream status: the backends sharing this NATS (replicas, and which
// one leads), then every stream, KV bucket and object store the backend
// needs, and whether it exists.
import { h, heading, section, table, statusBadge, badge, errorCard } from '../dom.js';
import { get } from '../api.js';
import { time, shortId } from '../fmt.js';

// Replicas announce themselves every few seconds; the list is read again
// at that pace.
const CLUSTER_MS = 5000;

export default async function jetstream(ctx) {
  ctx.title('JetStream');
  const cluster = h('div', { id: 'cluster' });
  const body = h('div', { class: 'cols' });
  ctx.root.append(heading('JetStream status'), cluster, body);
  const loadCluster = async () => {
    try {
      const c = await get('/api/cluster', { signal: ctx.signal });
      const cols = [
        { label: 'Replica', cell: (r) => h('span', {}, h('code', { title: r.id }, shortId(r.id)),
          r.id === c.self ? [' ', badge('this replica', 'info')] : null) },
        { label: 'Role', cell: (r) => (r.leader ? badge('leader', 'ok') : badge('standby', 'muted')) },
        { label: 'Address', cell: (r) => h('code', {}, r.address || '—') },
        { label: 'Started', cell: (r) => time(r.started) },
        { label: 'Last seen', cell: (r) => time(r.last_seen) },
      ];
      const leader = c.leader
        ? h('p', { class: 'cluster-leader' }, 'Leader: ', h('code', { title: c.leader }, shortId(c.leader)),
          ` (lease revision ${c.lease_revision}); the scheduler and the projectors run there.`)
        : h('p', { class: 'cluster-leader' }, badge('no leader', 'warn'), ' No replica holds the leader lease right now (a takeover takes a few seconds).');
      cluster.replaceChildren(section(`Cluster (${c.replicas.length} ${c.replicas.length === 1 ? 'replica' : 'replicas'})`,
        leader, table(cols, c.replicas, { empty: 'No replica announced yet.', caption: 'Replicas' })));
    } catch (e) {
      if (e.name === 'AbortError') return;
      cluster.replaceChildren(errorCard(e, 'Cluster unavailable'));
    }
  };
  const load = async () => {
    try {
      const s = await get('/api/jetstream/status', { signal: ctx.signal });
      const cols = [
        { label: 'Name', cell: (r) => h('code', {}, r.name) },
        { label: 'State', cell: (r) => statusBadge(r.exists ? 'ok' : 'missing') },
      ];
      body.replaceChildren(
        section('Streams', table(cols, s.streams || [], { empty: 'No streams.' })),
        section('KV buckets', table(cols, s.kv_buckets || [], { empty: 'No buckets.' })),
        section('Object stores', table(cols, s.object_stores || [], { empty: 'No object stores.' })));
    } catch (e) {
      body.replaceChildren(errorCard(e));
    }
  };
  await Promise.all([loadCluster(), load()]);
  const timer = setInterval(loadCluster, CLUSTER_MS);
  ctx.onCleanup(() => clearInterval(timer));
  // Resources only change at start-up or when someone deletes one; a slow
  // refresh with the health-affecting events is enough.
  ctx.live(['agent'], load, 10000);
}
