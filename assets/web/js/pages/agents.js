// Agents: search by pc_id or hostname, filter by online state, with links to
// each PC's inventory and results.
import { h, heading, table, field, select, link, pager, badge } from '../dom.js';
import { list, seg } from '../api.js';
import { time } from '../fmt.js';
import { panel, agentLink, groupsLoader } from '../views.js';

const LIMIT = 100;

export default async function agents(ctx) {
  ctx.title('Agents');
  const q = new URLSearchParams(ctx.query);
  const search = h('input', { type: 'search', name: 'q', value: q.get('q') || '', placeholder: 'pc_id or hostname', autocomplete: 'off' });
  const online = select([['', 'all'], ['true', 'online'], ['false', 'offline']], { name: 'online' }, q.get('online') || '');
  const filters = h('form', { class: 'filters', role: 'search', onsubmit: (e) => e.preventDefault() },
    field('Search', search), field('State', online));

  const summary = h('span', { class: 'muted' });
  const withGroups = groupsLoader();
  const results = panel(ctx, null, ['agent'], async () => {
    const page = await list('/api/agents', {
      q: q.get('q'), online: q.get('online'), limit: LIMIT, offset: q.get('offset'),
    });
    const { total } = page;
    const items = await withGroups(page.items);
    summary.textContent = `${total} agent${total === 1 ? '' : 's'}`;
    return h('div', {}, table(columns(), items, { empty: 'No agents match.', caption: 'Agents' }),
      total > items.length ? pager(q, total, items.length, LIMIT) : null);
  }, { wait: 1000 });

  // Filters live in the URL (shareable, survive reload) but changing them
  // redraws only the table, so the search box keeps focus while typing.
  let timer;
  const apply = () => {
    for (const [k, el] of [['q', search], ['online', online]]) {
      if (el.value) q.set(k, el.value);
      else q.delete(k);
    }
    q.delete('offset');
    history.replaceState(null, '', location.pathname + (q.toString() ? '?' + q : ''));
    results.load();
  };
  search.addEventListener('input', () => (clearTimeout(timer), (timer = setTimeout(apply, 250))));
  online.addEventListener('change', apply);
  ctx.root.append(heading('Agents', summary), filters, results);
  await results.ready;
}

function columns() {
  return [
    { label: 'PC', cell: (a) => agentLink(a.pc_id) },
    { label: 'Hostname', cell: (a) => a.hostname || '—' },
    { label: 'OS', cell: (a) => a.os_family || '—' },
    { label: 'Agent', cell: (a) => a.agent_version || '—' },
    { label: 'Last heartbeat', cell: (a) => time(a.last_heartbeat) },
    { label: 'State', cell: (a) => (a.online ? badge('online', 'ok') : badge('offline')) },
    { label: 'Groups', cell: groups },
    { label: 'Links', cell: (a) => h('span', { class: 'actions' },
      link('/inventory/pc/' + seg(a.pc_id), 'inventory'), link('/results?pc_id=' + encodeURIComponent(a.pc_id), 'results')) },
  ];
}

function groups(a) {
  if (!Array.isArray(a.groups)) return h('span', { class: 'muted' }, '—');
  if (a.groups.length === 0) return h('span', { class: 'muted' }, 'none');
  return h('ul', { class: 'chips' }, a.groups.map((g) => h('li', { class: 'chip' }, g)));
}
