// Config & groups: the agent_config scopes (global, per group, per PC) that
// decide each agent's target version and heartbeat interval, and the group
// memberships that target commands.
import { h, heading, section, errorCard, notice, field, busy, button, table, link } from '../dom.js';
import { get, put, del, list, seg, ApiError } from '../api.js';
import { agentLink, groupsLoader } from '../views.js';
import { guard } from '../access.js';

const FIELDS = [
  ['target_version', 'Target version', 'agent version to run; empty keeps the current one'],
  ['target_version_jitter', 'Target version jitter', 'spread upgrades, e.g. 30m'],
  ['heartbeat_interval', 'Heartbeat interval', 'e.g. 30s'],
];

export default async function config(ctx) {
  ctx.title('Config & groups');
  const global = scopeEditor('Global', () => '/api/config', { fixed: true, route: '/api/config' });
  const group = scopeEditor('Group', (v) => '/api/groups/' + seg(v) + '/config', { label: 'Group name', value: ctx.query.get('group'), route: '/api/groups/{name}/config' });
  const pc = scopeEditor('PC', (v) => '/api/pcs/' + seg(v) + '/config', { label: 'PC id', value: ctx.query.get('pc'), route: '/api/pcs/{pc_id}/config' });
  ctx.root.append(heading('Config & groups'),
    h('p', { class: 'muted' }, 'Resolution: built-ins → global → each of the PC\'s groups alphabetically → the PC. An agent\'s page shows the result.'),
    h('div', { class: 'cols' }, global.el, group.el, pc.el), membership(ctx));
  await Promise.all([global.ready, group.ready, pc.ready]);
}

// scopeEditor edits one ConfigScope; every field is optional and an empty
// field is left out, which means "inherit".
function scopeEditor(title, pathOf, { fixed = false, label, value, route } = {}) {
  const msg = h('div', { 'aria-live': 'polite' });
  const inputs = Object.fromEntries(FIELDS.map(([k]) => [k, h('input', { name: k, autocomplete: 'off' })]));
  const key = fixed ? null : h('input', { name: 'scope', value: value || '', autocomplete: 'off', required: true });
  const path = () => pathOf(key ? key.value.trim() : '');
  const fill = (scope) => {
    for (const [k] of FIELDS) inputs[k].value = (scope && scope[k]) ?? '';
  };
  const load = async () => {
    msg.replaceChildren();
    if (key && !key.value.trim()) return;
    try {
      fill(await get(path()));
    } catch (e) {
      // An unset group or PC scope may answer 404: that is an empty scope.
      if (e instanceof ApiError && e.status === 404) fill({});
      else msg.replaceChildren(errorCard(e));
    }
  };
  const save = guard(h('button', { class: 'btn primary', type: 'submit' }, 'Save'), 'PUT ' + route);
  const onsubmit = async (e) => {
    e.preventDefault();
    const body = {};
    for (const [k] of FIELDS) if (inputs[k].value.trim()) body[k] = inputs[k].value.trim();
    msg.replaceChildren();
    try {
      const r = await busy(save, put(path(), body));
      if (r && typeof r === 'object') fill(r);
      msg.replaceChildren(notice(`${title} scope saved.`));
    } catch (err) {
      msg.replaceChildren(errorCard(err, 'Not saved'));
    }
  };
  const remove = fixed ? null : button('Delete scope', async () => {
    msg.replaceChildren();
    try {
      await busy(remove, del(path()));
      fill({});
      msg.replaceChildren(notice(`${title} scope deleted.`));
    } catch (err) {
      msg.replaceChildren(errorCard(err));
    }
  }, { class: 'btn danger' });
  if (remove) guard(remove, 'DELETE ' + route);
  const form = h('form', { class: 'form', onsubmit },
    key ? h('div', { class: 'row' }, field(label, key), h('div', {}, button('Load', load))) : null,
    FIELDS.map(([k, l, hint]) => field(l, inputs[k], hint)),
    msg, h('div', { class: 'actions' }, save, remove));
  const el = section(`${title} scope`, form);
  return { el, ready: fixed || (key && key.value) ? load() : Promise.resolve() };
}

// membership lists groups and their PCs from the agent list. Memberships
// are edited on each agent's page (one PC at a time is how agent_groups is
// keyed).
function membership(ctx) {
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  (async () => {
    try {
      const items = await groupsLoader()((await list('/api/agents', { limit: 1000 })).items);
      const groups = new Map();
      let known = false;
      for (const a of items) {
        if (!Array.isArray(a.groups)) continue;
        known = true;
        for (const g of a.groups) groups.set(g, [...(groups.get(g) || []), a.pc_id]);
      }
      if (!ctx.alive) return;
      body.replaceChildren(
        known ? table([
          { label: 'Group', cell: ([g]) => h('span', {}, g, ' ', link('/config?group=' + encodeURIComponent(g), 'config')) },
          { label: 'PCs', cell: ([, pcs]) => h('span', {}, pcs.map((p, i) => [i ? ', ' : '', agentLink(p)])) },
        ], [...groups].sort(([a], [b]) => a.localeCompare(b)), { empty: 'No PC is in a group yet.' }) : null,
        h('p', { class: 'muted' }, 'Add or remove a PC\'s groups on its ', link('/agents', 'agent page'), '.'));
    } catch (e) {
      body.replaceChildren(errorCard(e));
    }
  })();
  return section('Groups', body);
}
