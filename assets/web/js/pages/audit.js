// Audit: who did what, filtered by actor, action and time.
import { h, heading, table, select, pager } from '../dom.js';
import { list } from '../api.js';
import { panel, auditColumns } from '../views.js';
import { filterForm, sinceInput, sinceToRFC3339 } from '../filters.js';

const LIMIT = 50;
// The actions of wire.md §4.
const ACTIONS = ['exec', 'job_upsert', 'job_delete', 'schedule_upsert', 'schedule_delete', 'schedule_completed',
  'config_put', 'config_delete', 'groups_put', 'script_revoke', 'script_unrevoke', 'exec_kill',
  'agent_publish', 'agent_rollout', 'release_delete', 'agent_decommission',
  'operator_create', 'operator_role', 'operator_revoke', 'operator_token'];

export default async function audit(ctx) {
  ctx.title('Audit');
  const q = ctx.query;
  const filters = filterForm(ctx, [
    { name: 'actor', label: 'Actor', control: select([['', 'any'], 'operator', 'scheduler'], { name: 'actor' }, q.get('actor') || '') },
    { name: 'action', label: 'Action', control: select([['', 'any'], ...ACTIONS], { name: 'action' }, q.get('action') || '') },
    { name: 'since', label: 'Since', control: sinceInput(q) },
  ], { toQuery: (n, v) => (n === 'since' ? sinceToRFC3339(v) : v) });
  const body = panel(ctx, null, ['audit'], async () => {
    const { items, total } = await list('/api/audit', {
      actor: q.get('actor'), action: q.get('action'), since: q.get('since'), offset: q.get('offset'), limit: LIMIT,
    });
    return h('div', {}, table(auditColumns(), items, { empty: 'No audit events match.', caption: 'Audit log' }),
      pager(q, total, items.length, LIMIT));
  });
  ctx.root.append(heading('Audit'), filters, body);
  await body.ready;
}
