// Views shared by several pages: self-refreshing panels and the columns of
// results, executions and audit tables.
import { h, link, section, errorCard, badge, statusBadge, pre } from './dom.js';
import { time, between, shortId, number } from './fmt.js';
import { get, seg } from './api.js';

// panel is a card whose content render() produces, redrawn when live events
// of the given kinds arrive. A failing request shows its error inside the
// card only, so one unavailable route does not blank the whole page.
export function panel(ctx, title, kinds, render, { wait } = {}) {
  const body = h('div', {});
  const card = section(title, body);
  const load = async () => {
    try {
      const content = await render();
      if (ctx.alive) body.replaceChildren(content);
    } catch (e) {
      if (e.name !== 'AbortError' && ctx.alive) body.replaceChildren(errorCard(e));
    }
  };
  card.load = load;
  card.ready = load();
  if (kinds.length) ctx.live(kinds, load, wait);
  return card;
}

// groupsLoader fills in each agent's groups when the list rows lack them,
// a few requests at a time, from a cache that lives as long as the page
// (memberships change rarely; heartbeats must not refetch them). Past `max`
// unknown agents it gives up rather than flood the backend.
export function groupsLoader(max = 200) {
  const cache = new Map();
  return async (agents) => {
    let todo = agents.filter((a) => !Array.isArray(a.groups) && !cache.has(a.pc_id)).map((a) => a.pc_id);
    if (todo.length > max) todo = [];
    const worker = async () => {
      for (let pc = todo.shift(); pc; pc = todo.shift()) {
        try {
          cache.set(pc, (await get('/api/agents/' + seg(pc) + '/groups')).groups || []);
        } catch {
          cache.set(pc, null);
        }
      }
    };
    await Promise.all(Array.from({ length: 6 }, worker));
    return agents.map((a) => (Array.isArray(a.groups) ? a : { ...a, groups: cache.get(a.pc_id) ?? undefined }));
  };
}

export function resultStatus(r) {
  return r.exit_code === 0 ? badge('exit 0', 'ok') : badge(`exit ${r.exit_code}`, 'bad');
}

export const agentLink = (pc) => (pc ? link('/agents/' + seg(pc), pc) : '—');
export const execLink = (id) => (id ? link('/executions/' + seg(id), h('code', { title: id }, shortId(id))) : h('span', { class: 'muted' }, 'ad hoc'));

export function resultColumns({ pc = true, output = true } = {}) {
  return [
    { label: 'Finished', cell: (r) => time(r.finished_at) },
    pc ? { label: 'PC', cell: (r) => agentLink(r.pc_id) } : null,
    { label: 'Job', cell: (r) => (r.job_id ? link('/results?job_id=' + encodeURIComponent(r.job_id), r.job_id) : '—') },
    { label: 'Exec', cell: (r) => execLink(r.exec_id) },
    { label: 'Status', cell: resultStatus },
    { label: 'Took', cell: (r) => between(r.started_at, r.finished_at) },
    output ? { label: 'Output', cell: outputDetails } : null,
  ].filter(Boolean);
}

function outputDetails(r) {
  const out = r.stdout ?? '';
  const err = r.stderr ?? '';
  if (out === '' && err === '') return h('span', { class: 'muted' }, 'none');
  const first = (out || err).split('\n')[0].slice(0, 60);
  return h('details', { 'data-key': `${r.request_id}/${r.pc_id}` },
    h('summary', {}, first || 'output'),
    out !== '' ? [h('strong', {}, 'stdout'), pre(out)] : null,
    err !== '' ? [h('strong', {}, 'stderr'), pre(err, 'stderr')] : null,
    h('small', {}, link('/results/' + seg(r.request_id), 'all PCs of this request')));
}

// keepOpen re-opens the <details> that were open before a live redraw, so a
// refresh does not snap shut the output someone is reading.
export function keepOpen(container, render) {
  const open = new Set([...container.querySelectorAll('details[open][data-key]')].map((d) => d.dataset.key));
  const node = render();
  for (const d of node.querySelectorAll('details[data-key]')) if (open.has(d.dataset.key)) d.open = true;
  return node;
}

// progress draws an exec's PCs as one bar of distinct colours, with the
// same counts in words (colour alone says nothing to a colour-blind
// operator): succeeded, failed, expired (never answered by the deadline)
// and pending. An exec where every PC failed is a red bar, not a full
// green one. words: false leaves the words to a page that lists the
// counts itself.
export function progress(e, { words: say = true } = {}) {
  const ok = Number(e.success_count ?? 0);
  const bad = Number(e.failure_count ?? 0);
  const done = ok + bad;
  const expected = Math.max(Number(e.expected_pcs ?? 0), done);
  const rest = expected - done;
  // A held rollout's silent PCs may still answer: pending, not expired.
  const inFlight = e.status === 'pending' || e.status === 'running' || e.status === 'held';
  const parts = [['succeeded', ok, 'ok'], ['failed', bad, 'bad'],
    ['expired', inFlight ? 0 : rest, 'warn'], ['pending', inFlight ? rest : 0, 'info']].filter(([, n]) => n > 0);
  const words = parts.map(([what, n]) => `${number(n)} ${what}`);
  const bar = h('div', { class: 'bar', role: 'img', 'aria-label': words.join(', ') || 'no PC expected' },
    parts.map(([what, n, kind]) => {
      const seg = h('span', { class: `seg ${kind}`, 'data-seg': what, title: `${number(n)} ${what}` });
      seg.style.flexGrow = String(n); // CSSOM, which the page's CSP allows
      return seg;
    }));
  return h('div', { class: 'progress' }, bar,
    h('span', { class: 'counts' }, `${number(done)}/${number(expected)}`,
      say ? parts.map(([what, n, kind]) => h('span', { class: `count ${kind}` }, `${number(n)} ${what}`)) : null));
}

export function execColumns({ job = true } = {}) {
  return [
    { label: 'Exec', cell: (e) => execLink(e.exec_id) },
    job ? { label: 'Job', cell: (e) => e.job_id } : null,
    { label: 'Started', cell: (e) => time(e.created_at) },
    { label: 'By', cell: (e) => e.initiated_by || '—' },
    { label: 'Status', cell: (e) => statusBadge(e.status) },
    { label: 'Progress', cell: progress },
  ].filter(Boolean);
}

export function auditColumns() {
  return [
    { label: 'When', cell: (a) => time(a.occurred_at) },
    // An operator's change names them (sub); the actor alone would say
    // only "operator".
    { label: 'Actor', cell: (a) => h('span', {}, a.actor, a.payload && a.payload.sub ? [' ', h('strong', { class: 'sub' }, a.payload.sub)] : null) },
    { label: 'Action', cell: (a) => h('code', {}, a.action) },
    { label: 'Target', cell: (a) => a.target ?? '—' },
    { label: 'Details', cell: (a) => payloadSummary(a.payload) },
  ];
}

function payloadSummary(p) {
  if (!p || typeof p !== 'object' || Object.keys(p).length === 0) return h('span', { class: 'muted' }, '—');
  const text = Object.entries(p).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' ');
  return h('span', { class: 'mono' }, text.length > 140 ? text.slice(0, 140) + '…' : text);
}
