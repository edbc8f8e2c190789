// One schedule: its definition, the actor's state (with the error of a
// schedule that fails to parse), the next fire times in UTC and its zone,
// the last ticks, and the actions.
import { h, heading, table, dl, statusBadge, link, json } from '../dom.js';
import { get, seg } from '../api.js';
import { time } from '../fmt.js';
import { panel, execLink } from '../views.js';
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
    const { s, state, error, next, ticks, restarts } = splitStatus(d);
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
