// Executions: every exec newest first with its progress, filterable by job,
// status and initiator; progress moves live as results arrive.
import { h, heading, table, field, select, pager } from '../dom.js';
import { list } from '../api.js';
import { panel, execColumns } from '../views.js';
import { guard } from '../access.js';

const LIMIT = 50;
const STATUSES = ['', 'pending', 'running', 'completed', 'failed', 'held', 'expired', 'cancelled'];

export default async function executions(ctx) {
  ctx.title('Executions');
  const q = new URLSearchParams(ctx.query);
  const job = h('input', { name: 'job_id', value: q.get('job_id') || '', autocomplete: 'off' });
  const status = select(STATUSES.map((s) => [s, s || 'any']), { name: 'status' }, q.get('status') || '');
  const by = h('input', { name: 'initiated_by', value: q.get('initiated_by') || '', placeholder: 'operator:admin', autocomplete: 'off' });
  const body = panel(ctx, null, ['exec'], async () => {
    const { items, total } = await list('/api/executions', {
      job_id: q.get('job_id'), status: q.get('status'), initiated_by: q.get('initiated_by'), limit: LIMIT, offset: q.get('offset'),
    });
    return h('div', {}, table(execColumns(), items, { empty: 'No executions match.', caption: 'Executions' }),
      total > items.length ? pager(q, total, items.length, LIMIT) : null);
  });
  const apply = (e) => {
    e.preventDefault();
    for (const [k, el] of [['job_id', job], ['status', status], ['initiated_by', by]]) {
      if (el.value.trim()) q.set(k, el.value.trim());
      else q.delete(k);
    }
    q.delete('offset');
    ctx.navigate(location.pathname + (q.toString() ? '?' + q : ''), { replace: true });
  };
  ctx.root.append(heading('Executions', guard(h('a', { class: 'btn primary', href: '/exec' }, 'New exec'), 'POST /api/exec/{job_id}')),
    h('form', { class: 'filters', onsubmit: apply }, field('Job', job), field('Status', status), field('Initiated by', by),
      h('button', { class: 'btn', type: 'submit' }, 'Filter')),
    body);
  await body.ready;
}
