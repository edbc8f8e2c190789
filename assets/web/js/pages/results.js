// Results: every projected result newest first, filtered by PC, job, exec,
// status and time; new results appear as agents report them.
import { h, heading, table, select, pager, errorCard, link } from '../dom.js';
import { list, get, seg } from '../api.js';
import { panel, resultColumns, keepOpen } from '../views.js';
import { filterForm, sinceInput, sinceToRFC3339 } from '../filters.js';

const LIMIT = 50;

export default async function results(ctx) {
  ctx.title('Results');
  const q = ctx.query;
  const input = (name, placeholder = '') => h('input', { name, value: q.get(name) || '', placeholder, autocomplete: 'off' });
  const filters = filterForm(ctx, [
    { name: 'pc_id', label: 'PC', control: input('pc_id') },
    { name: 'job_id', label: 'Job', control: input('job_id') },
    { name: 'exec_id', label: 'Exec', control: input('exec_id') },
    { name: 'status', label: 'Status', control: select([['', 'any'], ['success', 'success'], ['failure', 'failure']], { name: 'status' }, q.get('status') || '') },
    { name: 'since', label: 'Since', control: sinceInput(q) },
  ], { toQuery: (n, v) => (n === 'since' ? sinceToRFC3339(v) : v) });
  const body = panel(ctx, null, ['result'], async () => {
    const params = Object.fromEntries(['request_id', 'pc_id', 'job_id', 'exec_id', 'status', 'since', 'offset'].map((k) => [k, q.get(k)]));
    const { items, total } = await list('/api/results', { ...params, limit: LIMIT });
    return keepOpen(body, () => h('div', {}, table(resultColumns(), items, { empty: 'No results match.', caption: 'Results' }),
      pager(q, total, items.length, LIMIT)));
  });
  ctx.root.append(heading('Results'), filters, body);
  await body.ready;
}

// byRequest shows one PC's answer to a request_id (?pc_id=, the "output"
// link of an execution's PC row), or every PC's answer (a broadcast
// command is answered by many PCs with the same request_id).
export async function byRequest(ctx) {
  const rid = ctx.params.rid;
  const pc = ctx.query.get('pc_id');
  ctx.title(pc ? `${pc} · request ${rid.slice(0, 8)}` : `Request ${rid.slice(0, 8)}`);
  ctx.root.append(heading(h('span', {}, 'Request ', h('code', {}, rid), pc ? [' from ', h('code', {}, pc)] : null),
    pc ? link('/results/' + seg(rid), 'All PCs of this request') : null, link('/results', 'All results')));
  try {
    let rows;
    let more = 0;
    if (pc) {
      rows = [await get('/api/results/' + seg(rid) + '?pc_id=' + encodeURIComponent(pc), { signal: ctx.signal })];
    } else {
      const { items, total } = await list('/api/results', { request_id: rid, limit: 1000 });
      rows = items;
      more = total - items.length;
    }
    ctx.root.append(h('section', { class: 'card' }, table(resultColumns(), rows, { empty: 'No PC has answered this request.' }),
      more > 0 ? h('p', { class: 'muted' }, `and ${more} more: `, link('/results?request_id=' + encodeURIComponent(rid), 'page through them')) : null));
    for (const d of ctx.root.querySelectorAll('details')) d.open = true;
  } catch (e) {
    ctx.root.append(errorCard(e));
  }
}
