// JetStream status: every stream, KV bucket and object store the backend
// needs, and whether it exists.
import { h, heading, section, table, statusBadge, errorCard } from '../dom.js';
import { get } from '../api.js';

export default async function jetstream(ctx) {
  ctx.title('JetStream');
  const body = h('div', { class: 'cols' });
  ctx.root.append(heading('JetStream status'), body);
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
  await load();
  // Resources only change at start-up or when someone deletes one; a slow
  // refresh with the health-affecting events is enough.
  ctx.live(['agent'], load, 10000);
}
