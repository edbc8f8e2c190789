// One schedule: its definition, the actor's state (with the error of a
// schedule that fails to parse), the next fire times in UTC and its zone,
// for once_per_pc / once_per_target how far it has come over the known PCs
// of its target (done, remaining, offline, and which PCs remain), the last
// ticks, and the actions.
import { h, heading, table, dl, statusBadge, link, json } from '../dom.js';
import { get, seg } from '../api.js';
import { time, number } from '../fmt.js';
import { panel, execLink, agentLink } from '../views.js';
import { splitStatus, targetText, fireTime } from '../schedule-data.js';
import { actor, toggle, runNow } from './schedules.js';
import { guard } from '../access.js';

export default async function schedule(ctx) {
  const id = ctx.params.id;
  ctx.title(`Schedule ${id}`);
  const msg = h('div', { 'aria-live': 'polite' });
  const actions = h('span', { class: 'actions' });
  const act = actor(msg);
  const body = panel(ctx, null, ['schedule', 'exec'], async () => {
    const d = await get('/api/schedules/' + seg(id), { signal: ctx.signal });
    const { s, state, error, next, ticks, restarts, progress } = splitStatus(d);
    actions.replaceChildren(toggle(s, act, () => body.load()), runNow(s, act, msg),
      guard(link('/schedules/' + seg(id) + '/edit', 'Edit'), 'POST /api/schedules'), link('/schedules', 'All schedules'));
    return h('div', { class: 'stack' },
      h('div', { class: 'cols' },
        h('div', {}, h('h2', {}, 'Definition'), dl([
          ['State', h('span', { 'data-schedule-state': state }, statusBadge(state))],
          error ? ['Error', h('span', { class: 'badge bad' }, error)] : null,
          ['Cron', h('code', {}, s.cron)],
          ['Time zone', s.tz || 'UTC'],
          ['Job', link('/jobs/' + seg(s.job_id), s.job_id)],
          ['Target', targetText(s)],
          ['Mode', (s.mode || 'every_tick').replace(/_/g, ' ')],
          s.cooldown ? ['Cooldown', s.cooldown] : null,
          s.jitter ? ['Jitter', s.jitter] : null,
          s.starting_deadline ? ['Starting deadline', s.starting_deadline] : null,
          ['Auto-disable when done', s.auto_disable_when_done ? 'yes' : 'no'],
          ['Enabled', s.enabled === false ? 'no' : 'yes'],
          restarts !== undefined ? ['Restarts', String(restarts)] : null,
        ])),
        h('div', {}, h('h2', {}, 'Next fire times'), next.length
          ? h('ol', { class: 'next-fires' }, next.map((n) => h('li', {}, fireTime(n))))
          : h('p', { class: 'muted' }, s.enabled === false ? 'Disabled: it will not fire.' : 'None.'))),
      progressSection(s, progress),
      h('h2', {}, 'Last ticks'),
      table([
        { label: 'Instant', cell: (t) => time(t.instant || t.at) },
        { label: 'Outcome', cell: (t) => statusBadge(t.outcome || t.result) },
        { label: 'Reason', cell: (t) => t.reason || '—' },
        { label: 'PCs', cell: (t) => (t.pcs ?? '—') },
        { label: 'Exec', cell: (t) => (t.exec_id ? execLink(t.exec_id) : '—') },
      ], ticks, { empty: 'No ticks yet.' }),
      h('details', {}, h('summary', {}, 'raw status'), json(d)));
  }, { wait: 500 });
  ctx.root.append(heading(`Schedule ${id}`, actions), msg, body);
  await body.ready;
}

// progressSection shows done / remaining / offline over every known PC of
// the target (the status's progress), as a bar with the same counts in
// words, and the PCs that remain. Nothing for every_tick.
function progressSection(s, p) {
  const mode = s.mode || 'every_tick';
  if (mode === 'every_tick') return null;
  const title = h('h2', {}, 'Progress');
  if (!p) return h('div', {}, title, h('p', { class: 'muted' }, 'Counted at the first tick.'));
  const online = p.remaining - p.offline;
  const parts = [['done', p.done, 'ok'], ['remaining online', online, 'info'], ['remaining offline', p.offline, 'warn']]
    .filter(([, n]) => n > 0);
  const words = parts.map(([what, n]) => `${number(n)} ${what}`);
  const bar = h('div', { class: 'bar', role: 'img', 'aria-label': words.join(', ') || 'no known PC' },
    parts.map(([what, n, kind]) => {
      const el = h('span', { class: `seg ${kind}`, 'data-seg': what, title: `${number(n)} ${what}` });
      el.style.flexGrow = String(n);
      return el;
    }));
  const counts = h('div', { class: 'progress', 'data-progress': `${p.done}/${p.remaining}/${p.offline}` }, bar,
    h('span', { class: 'counts' }, `${number(p.done)}/${number(p.known)} known PCs done`,
      h('span', { class: 'count' }, `${number(p.remaining)} remaining`),
      h('span', { class: 'count' }, `${number(p.offline)} offline`)));
  const note = p.remaining > 0
    ? (s.auto_disable_when_done && !s.cooldown
      ? 'It disables itself once no known PC remains; offline PCs run it when they come back.'
      : 'Offline PCs run it when they come back.')
    : null;
  const listed = p.remaining_pcs || [];
  return h('div', {}, title, counts,
    h('p', { class: 'muted' }, 'As of ', time(p.at), note ? ' · ' + note : ''),
    p.remaining > 0 ? table([
      { label: 'Remaining PC', cell: (r) => agentLink(r.pc_id) },
      { label: 'State', cell: (r) => statusBadge(r.online ? 'online' : 'offline') },
    ], listed, { caption: listed.length < p.remaining ? `First ${number(listed.length)} of ${number(p.remaining)} remaining PCs` : 'Remaining PCs',
      rowAttrs: (r) => ({ 'data-remaining': r.pc_id }) }) : null);
}
