// Schedules: every schedule with its state and next fire time, and the
// enable/disable, run now, edit and delete actions.
import { h, heading, table, statusBadge, errorCard, notice, link, button, busy } from '../dom.js';
import { get, post, del, seg } from '../api.js';
import { panel } from '../views.js';
import { confirmButton } from '../confirm.js';
import { definition, targetText, splitStatus, fireTime } from '../schedule-data.js';
import { guard } from '../access.js';

export default async function schedules(ctx) {
  ctx.title('Schedules');
  const msg = h('div', { 'aria-live': 'polite' });
  const act = actor(msg);
  const body = panel(ctx, null, ['schedule', 'audit'], async () => {
    const items = (await get('/api/schedules', { signal: ctx.signal })) || [];
    // The list has no status; each schedule's own document has the actor
    // state and next fire times. Schedules are few, so ask for each.
    const status = await Promise.all(items.map((s) => get('/api/schedules/' + seg(s.id)).then(splitStatus, () => null)));
    const rows = items.map((s, i) => ({ s, st: status[i] }));
    return table([
      { label: 'ID', cell: ({ s }) => link('/schedules/' + seg(s.id), s.id) },
      { label: 'Cron', cell: ({ s }) => h('span', {}, h('code', {}, s.cron), s.tz && s.tz !== 'UTC' ? h('span', { class: 'muted' }, ' ' + s.tz) : null) },
      { label: 'Job', cell: ({ s }) => link('/jobs/' + seg(s.job_id), s.job_id) },
      { label: 'Target', cell: ({ s }) => targetText(s) },
      { label: 'Mode', cell: ({ s }) => (s.mode || 'every_tick').replace(/_/g, ' ') },
      { label: 'State', cell: ({ s, st }) => statusBadge(st ? st.state : s.enabled === false ? 'disabled' : 'enabled') },
      { label: 'Next fire', cell: ({ s, st }) => (s.enabled !== false && st && st.next.length ? fireTime(st.next[0]) : '—') },
      { label: 'Actions', cell: ({ s }) => h('span', { class: 'actions' },
        toggle(s, act, () => body.load()),
        runNow(s, act, msg),
        guard(link('/schedules/' + seg(s.id) + '/edit', 'Edit'), 'POST /api/schedules'),
        guard(confirmButton('Delete', `Delete ${s.id}?`, () => act(null, del('/api/schedules/' + seg(s.id)), () => {
          msg.replaceChildren(notice(`Deleted schedule ${s.id}.`));
          body.load();
        })), 'DELETE /api/schedules/{id}')) },
    ], rows, { empty: 'No schedules yet.', caption: 'Schedules' });
  }, { wait: 1000 });
  ctx.root.append(heading('Schedules', guard(h('a', { class: 'btn primary', href: '/schedules/new' }, 'New schedule'), 'POST /api/schedules')), msg, body);
  await body.ready;
}

// actor returns the act function of the schedule actions: it runs the
// request p with el busy, hands the answer to done, and shows a failure in
// msg.
export function actor(msg) {
  return async (el, p, done) => {
    msg.replaceChildren();
    try {
      done(await busy(el, p));
    } catch (e) {
      msg.replaceChildren(errorCard(e));
    }
  };
}

// toggle flips enabled by posting the definition back: the upsert is the
// only write the API has for schedules.
export function toggle(s, act, reload) {
  const on = s.enabled !== false;
  const b = button(on ? 'Disable' : 'Enable', () => act(b, post('/api/schedules', { ...definition(s), enabled: !on }), reload),
    { class: 'btn small', 'aria-label': `${on ? 'Disable' : 'Enable'} schedule ${s.id}` });
  return guard(b, 'POST /api/schedules');
}

export function runNow(s, act, msg) {
  const b = button('Run now', () => act(b, post('/api/schedules/' + seg(s.id) + '/run'), (r) => {
    msg.replaceChildren(notice(r && r.exec_id
      ? h('span', {}, `Schedule ${s.id} fired: `, link('/executions/' + seg(r.exec_id), 'follow the execution'))
      : `Schedule ${s.id}: ${(r && (r.outcome || r.reason)) || 'fired'}`));
  }), { class: 'btn small', 'aria-label': `Run schedule ${s.id} now` });
  return guard(b, 'POST /api/schedules/{id}/run');
}
