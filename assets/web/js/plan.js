// The fan-out plan form (target, jitter, rollout waves) shared by Exec and
// the schedule editor; value() returns the FanoutPlan JSON of wire.md §4.
// As the target is typed it says how many PCs it reaches and how many are
// online (GET /api/targets/preview), and names groups and PCs nobody knows.
import { h, field, checkbox, csv, button } from './dom.js';
import { get, list } from './api.js';
import { groupsLoader } from './views.js';

let seq = 0;

export function planFields(plan = {}) {
  const t = plan.target || {};
  const n = ++seq;
  const all = checkbox('All PCs (every agent online now)', { name: 'all', checked: !!t.all });
  const groups = h('input', { name: 'groups', value: (t.groups || []).join(', '), autocomplete: 'off', list: `groups-${n}` });
  const pcs = h('input', { name: 'pcs', value: (t.pcs || []).join(', '), autocomplete: 'off', list: `pcs-${n}` });
  const jitter = h('input', { name: 'jitter', value: plan.jitter || '', placeholder: 'e.g. 30s', autocomplete: 'off' });
  const groupList = h('datalist', { id: `groups-${n}` });
  const pcList = h('datalist', { id: `pcs-${n}` });
  suggest(groupList, pcList);

  const waves = h('div', { class: 'waves' });
  const addWave = (w = {}) => {
    const g = h('input', { name: 'wave-group', value: w.group || '', autocomplete: 'off', list: `groups-${n}` });
    const d = h('input', { name: 'wave-delay', value: w.delay || '0s', autocomplete: 'off' });
    const row = h('div', { class: 'wave' }, field('Wave group', g), field('Delay', d, 'from exec time'),
      button('Remove', () => (row.remove(), preview()), { class: 'btn small', 'aria-label': 'Remove this wave' }));
    waves.append(row);
    g.focus();
  };
  for (const w of plan.rollout?.waves || []) addWave(w);
  // The optional gate: each wave after the first goes out only when the
  // earlier waves' PCs meet it (held otherwise, for an operator to resume).
  const g = plan.rollout?.gate || {};
  const maxFailed = h('input', { name: 'gate-max-failed', type: 'number', min: '0', step: '1', value: g.max_failed ?? '', autocomplete: 'off' });
  const minSuccess = h('input', { name: 'gate-min-success', type: 'number', min: '0', max: '100', step: 'any',
    value: g.min_success === undefined ? '' : String(Math.round(g.min_success * 10000) / 100), autocomplete: 'off' });
  const gateWait = h('input', { name: 'gate-wait', value: g.wait || '', placeholder: 'job timeout + jitter', autocomplete: 'off' });
  const reach = h('p', { class: 'hint reach', 'aria-live': 'polite', 'data-reach': '' });

  const el = h('div', { class: 'stack' },
    h('fieldset', {}, h('legend', {}, 'Target'), all,
      h('div', { class: 'row' },
        field('Groups', groups, 'comma-separated'),
        field('PCs', pcs, 'comma-separated pc_ids')),
      groupList, pcList, reach),
    h('div', { class: 'row' }, field('Jitter', jitter, 'each agent waits a random time below this before running')),
    h('fieldset', {}, h('legend', {}, 'Rollout waves (optional)'),
      h('p', { class: 'hint' }, 'Each wave targets one group after its delay; with waves, the target above may stay empty.'),
      waves, h('div', {}, button('Add wave', () => addWave(), { class: 'btn small' })),
      h('div', { class: 'row gate' },
        field('Gate: max failed', maxFailed, 'hold the next wave when more PCs of the earlier waves failed'),
        field('Gate: min success %', minSuccess, 'hold it when fewer succeeded'),
        field('Gate: wait', gateWait, 'how long to wait for answers before judging'))));

  const value = () => {
    const out = {
      target: { all: all.querySelector('input').checked, groups: csv(groups.value), pcs: csv(pcs.value) },
    };
    if (jitter.value.trim()) out.jitter = jitter.value.trim();
    const ws = [...waves.querySelectorAll('.wave')].map((row) => ({
      group: row.querySelector('[name="wave-group"]').value.trim(),
      delay: row.querySelector('[name="wave-delay"]').value.trim() || '0s',
    })).filter((w) => w.group);
    if (ws.length) out.rollout = { strategy: 'wave', waves: ws };
    const gate = {};
    if (maxFailed.value.trim() !== '') gate.max_failed = Number(maxFailed.value);
    if (minSuccess.value.trim() !== '') gate.min_success = Number(minSuccess.value) / 100;
    if (gateWait.value.trim()) gate.wait = gateWait.value.trim();
    if (out.rollout && Object.keys(gate).length) out.rollout.gate = gate;
    return out;
  };

  // With rollout waves the waves' groups are who is reached, as the exec
  // engine publishes them.
  let timer;
  let asked = 0;
  const preview = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const v = value();
      const t = v.rollout ? { all: false, groups: v.rollout.waves.map((w) => w.group), pcs: [] } : v.target;
      const n = ++asked;
      if (!t.all && t.groups.length === 0 && t.pcs.length === 0) return reach.replaceChildren();
      const q = new URLSearchParams({ all: String(t.all), groups: t.groups.join(','), pcs: t.pcs.join(',') });
      try {
        const p = await get('/api/targets/preview?' + q);
        if (n === asked) reach.replaceChildren(...reachText(p));
      } catch (e) {
        if (n === asked) reach.replaceChildren(h('span', { class: 'badge bad' }, e.message));
      }
    }, 250);
  };
  el.addEventListener('input', preview);
  el.addEventListener('change', preview);
  preview();
  return { el, value };
}

function reachText(p) {
  const pcs = (n) => `${n} PC${n === 1 ? '' : 's'}`;
  const unknown = [
    p.unknown_groups?.length ? `unknown group${p.unknown_groups.length === 1 ? '' : 's'}: ${p.unknown_groups.join(', ')}` : '',
    p.unknown_pcs?.length ? `unknown PC${p.unknown_pcs.length === 1 ? '' : 's'}: ${p.unknown_pcs.join(', ')}` : '',
  ].filter(Boolean).join('; ');
  return [
    h('span', { class: `badge ${p.pcs === 0 ? 'bad' : p.online === 0 ? 'warn' : 'ok'}`, 'data-reach-count': '' },
      `reaches ${pcs(p.pcs)} (${p.online} online)`),
    ...(unknown ? [' ', h('span', { class: 'badge warn' }, unknown)] : []),
  ];
}

// suggest fills the datalists from the agent list: pc_ids, and group names
// when the list rows carry them. Best effort: typing works without it.
async function suggest(groupList, pcList) {
  try {
    const items = await groupsLoader()((await list('/api/agents', { limit: 1000 })).items);
    const groups = new Set();
    for (const a of items) for (const g of a.groups || []) groups.add(g);
    pcList.replaceChildren(...items.map((a) => h('option', { value: a.pc_id })));
    groupList.replaceChildren(...[...groups].sort().map((g) => h('option', { value: g })));
  } catch {
    // Suggestions only.
  }
}
