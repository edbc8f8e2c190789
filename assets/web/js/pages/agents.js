// Agents: search by pc_id or hostname, filter by online state, with links to
// each PC's inventory and results.
import { h, heading, table, field, select, link, badge } from '../dom.js';
import { list, seg } from '../api.js';
import { time } from '../fmt.js';
import { panel, agentLink, groupsLoader } from '../views.js';

// LIMIT is the page size; ?limit= in the URL overrides it (up to the API's
// 1000), which also lets the browser test page through a small fleet.
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
  const limit = pageSize(q.get('limit'));
  const results = panel(ctx, null, ['agent'], async () => {
    // Keyset pages (?after=, the last pc_id of the previous page): a page
    // costs the API the same at any depth, where an offset walks every
    // agent it skips (100 000 agents: up to 100 ms a page). One more row
    // than shown tells whether a next page exists.
    const page = await list('/api/agents', {
      q: q.get('q'), online: q.get('online'), limit: Math.min(limit + 1, 1000), after: q.get('after'),
    });
    const { total } = page;
    const more = page.items.length > limit;
    const items = await withGroups(page.items.slice(0, limit));
    summary.textContent = `${total} agent${total === 1 ? '' : 's'}`;
    return h('div', {}, table(columns(), items, { empty: 'No agents match.', caption: 'Agents' }),
      more || q.get('after') ? pager(q, items, more) : null);
  }, { wait: 1000 });

  // Filters live in the URL (shareable, survive reload) but changing them
  // redraws only the table, so the search box keeps focus while typing.
  let timer;
  const apply = () => {
    for (const [k, el] of [['q', search], ['online', online]]) {
      if (el.value) q.set(k, el.value);
      else q.delete(k);
    }
    q.delete('after');
    history.replaceState(null, '', location.pathname + (q.toString() ? '?' + q : ''));
    results.load();
  };
  search.addEventListener('input', () => (clearTimeout(timer), (timer = setTimeout(apply, 250))));
  online.addEventListener('change', apply);
  ctx.root.append(heading('Agents', summary), filters, results);
  await results.ready;
}

function pageSize(v) {
  const n = Number(v);
  return Number.isInteger(n) && n >= 1 && n < 1000 ? n : LIMIT;
}

// pager links to the first page and to the page after the last agent
// shown; the browser's back button returns to the previous page.
function pager(query, items, more) {
  const to = (after) => {
    const q = new URLSearchParams(query);
    q.delete('offset');
    if (after) q.set('after', after);
    else q.delete('after');
    const s = q.toString();
    return location.pathname + (s ? '?' + s : '');
  };
  const last = items.length ? items[items.length - 1].pc_id : '';
  return h('nav', { class: 'pager', 'aria-label': 'Pages' },
    h('span', { class: 'muted' }, items.length ? `${items[0].pc_id} – ${last}` : 'no agents after ' + query.get('after')),
    query.get('after') ? link(to(''), '← First') : null,
    more ? link(to(last), 'Next →') : null);
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
