// Agent detail: identity and liveness, group membership (editable), the
// effective configuration, inventory, recent results, ping/logs/run, and
// for admins the PC's NATS credentials.
import { h, heading, dl, table, badge, errorCard, notice, link, button, busy, field } from '../dom.js';
import { get, post, del, list, seg } from '../api.js';
import { time } from '../fmt.js';
import { panel, resultColumns, keepOpen } from '../views.js';
import { factsView } from '../facts.js';
import { guard, denied } from '../access.js';
import { credentialsPanel } from './credentials.js';

export default async function agent(ctx) {
  const id = ctx.params.id;
  const base = '/api/agents/' + seg(id);
  ctx.title(id);
  const state = h('span', {});
  const pingOut = h('div', { 'aria-live': 'polite' });
  const pingBtn = button('Ping', async () => {
    pingOut.replaceChildren(notice('Waiting for a heartbeat (up to 30 s)…', 'warn'));
    try {
      const r = await busy(pingBtn, post(base + '/ping?wait_secs=30'));
      const hb = (r && r.heartbeat) || r;
      pingOut.replaceChildren(notice(h('span', {}, 'Heartbeat received ', time(hb.at), hb.agent_version ? ` · agent ${hb.agent_version}` : '')));
    } catch (e) {
      pingOut.replaceChildren(errorCard(e, 'Ping failed'));
    }
  }, { class: 'btn primary' });
  guard(pingBtn, 'POST /api/agents/{pc_id}/ping');
  ctx.root.append(
    heading(h('span', {}, id, ' ', state), pingBtn,
      guard(link('/run?pc=' + encodeURIComponent(id), 'Run'), 'POST /api/run'), link('/logs?pc=' + encodeURIComponent(id), 'Logs'),
      link('/results?pc_id=' + encodeURIComponent(id), 'Results'), link('/inventory/pc/' + seg(id), 'Inventory')),
    pingOut);

  const info = panel(ctx, 'Agent', ['agent'], async () => {
    const a = await get(base, { signal: ctx.signal });
    state.replaceChildren(a.online ? badge('online', 'ok') : badge('offline'));
    return dl([
      ['Hostname', a.hostname || '—'],
      ['OS', a.os_family || '—'],
      ['Agent version', a.agent_version || '—'],
      ['Last heartbeat', time(a.last_heartbeat)],
      ['Updated', time(a.updated_at)],
    ]);
  }, { wait: 2000 });
  const groups = groupsPanel(ctx, id);
  const config = panel(ctx, 'Effective config', [], async () => {
    const c = await get(base + '/effective_config', { signal: ctx.signal });
    const e = c.effective || {};
    return h('div', {},
      dl([
        ['Target version', e.target_version ?? h('span', { class: 'muted' }, 'none (keep current)')],
        ['Target version jitter', e.target_version_jitter ?? '—'],
        ['Heartbeat interval', e.heartbeat_interval ?? '—'],
      ]),
      (c.warnings || []).length ? h('ul', { class: 'warnings' }, c.warnings.map((w) => h('li', {}, badge('warning', 'warn'), ' ', w))) : null,
      h('p', {}, link('/config?pc=' + encodeURIComponent(id), 'Edit this PC\'s config scope')));
  });
  const inventory = panel(ctx, 'Inventory', ['result'], async () => {
    const rows = await get('/api/inventory/' + seg(id), { signal: ctx.signal });
    if (!rows || rows.length === 0) return h('p', { class: 'muted' }, 'No inventory collected from this PC yet.');
    return h('div', { class: 'stack' }, rows.map((r) => h('div', {},
      h('h3', {}, link('/inventory/job/' + seg(r.job_id), r.job_id), ' ', h('small', { class: 'muted' }, 'collected ', time(r.collected_at))),
      factsView(r.facts, r.display))));
  }, { wait: 2000 });
  const results = panel(ctx, 'Recent results', ['result'], async () => {
    const { items } = await list('/api/results', { pc_id: id, limit: 10 });
    return keepOpen(results, () => table(resultColumns({ pc: false }), items, { empty: 'No results from this PC yet.' }));
  });
  ctx.root.append(h('div', { class: 'cols' }, info, groups), config, inventory, results);
  // Credentials are for admins only (reading them included): others do not
  // see the panel at all.
  const creds = denied('GET /api/agents/{pc_id}/credentials') ? null : credentialsPanel(ctx, id);
  if (creds) ctx.root.append(creds);
  await Promise.all([info.ready, groups.ready, config.ready, inventory.ready, results.ready, creds && creds.ready]);
}

// groupsPanel lists the PC's groups with remove buttons and an add form;
// every change answers with the resulting list, which is drawn as is.
function groupsPanel(ctx, id) {
  const path = '/api/agents/' + seg(id) + '/groups';
  const msg = h('div', { 'aria-live': 'polite' });
  const chips = h('div', {});
  const draw = (groups) => {
    chips.replaceChildren(groups.length === 0 ? h('p', { class: 'muted' }, 'In no group.')
      : h('ul', { class: 'chips', 'aria-label': 'Groups' }, groups.map((g) => h('li', { class: 'chip' }, g,
        guard(h('button', { type: 'button', 'aria-label': `Remove group ${g}`, title: 'Remove', onclick: (e) => change(e.currentTarget, del(path + '/' + seg(g))) }, '×'),
          'DELETE /api/agents/{pc_id}/groups/{group}')))));
  };
  const change = async (el, p) => {
    msg.replaceChildren();
    try {
      const r = await busy(el, p);
      draw((r && r.groups) || []);
      return true;
    } catch (e) {
      msg.replaceChildren(errorCard(e));
      return false;
    }
  };
  const input = h('input', { name: 'group', autocomplete: 'off', placeholder: 'e.g. canary' });
  const add = guard(h('button', { class: 'btn', type: 'submit' }, 'Add'), 'POST /api/agents/{pc_id}/groups');
  const form = h('form', { class: 'row', onsubmit: async (e) => {
    e.preventDefault();
    if (await change(add, post(path, { group: input.value.trim() }))) input.value = '';
  } }, field('Add to group', input), h('div', {}, add));
  const card = h('section', { class: 'card' }, h('h2', {}, 'Groups'), chips, form, msg);
  card.ready = (async () => {
    try {
      const r = await get(path, { signal: ctx.signal });
      draw((r && r.groups) || []);
    } catch (e) {
      if (e.name !== 'AbortError') chips.replaceChildren(errorCard(e));
    }
  })();
  return card;
}
