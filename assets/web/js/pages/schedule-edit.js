// Create or edit a schedule. The cron field is checked as you type against
// the backend's own parser (GET /api/schedules/preview), which lists the
// next instants in the chosen zone.
import { h, heading, errorCard, notice, field, select, checkbox, busy, link } from '../dom.js';
import { get, post, seg } from '../api.js';
import { planFields } from '../plan.js';
import { definition, splitStatus, fireTime } from '../schedule-data.js';
import { guard, deniedNote } from '../access.js';

const MODES = [['every_tick', 'every tick'], ['once_per_pc', 'once per PC'], ['once_per_target', 'once per target']];

export default async function scheduleEdit(ctx) {
  const id = ctx.params.id;
  ctx.title(id ? `Edit ${id}` : 'New schedule');
  ctx.root.append(heading(id ? `Edit schedule ${id}` : 'New schedule', link('/schedules', 'All schedules')));
  let s = { cron: '0 */5 * * * *', mode: 'every_tick', enabled: true, target: { all: true, groups: [], pcs: [] } };
  let jobs;
  try {
    jobs = (await get('/api/jobs', { signal: ctx.signal })) || [];
    if (id) s = splitStatus(await get('/api/schedules/' + seg(id), { signal: ctx.signal })).s;
  } catch (e) {
    ctx.root.append(errorCard(e));
    return;
  }
  const idIn = h('input', { name: 'id', value: s.id || '', required: true, readonly: !!id, autocomplete: 'off', pattern: '[^\\s.*>]+' });
  const cron = h('input', { name: 'cron', value: s.cron || '', required: true, autocomplete: 'off', spellcheck: 'false' });
  const tz = h('input', { name: 'tz', value: s.tz || '', placeholder: 'UTC', autocomplete: 'off', list: 'tz-list' });
  const zones = h('datalist', { id: 'tz-list' }, (Intl.supportedValuesOf ? Intl.supportedValuesOf('timeZone') : []).map((z) => h('option', { value: z })));
  const job = select(jobs.map((j) => j.id), { name: 'job_id', required: true }, s.job_id || ctx.query.get('job') || '');
  const mode = select(MODES, { name: 'mode' }, s.mode || 'every_tick');
  const cooldown = h('input', { name: 'cooldown', value: s.cooldown || '', placeholder: 'e.g. 1d', autocomplete: 'off' });
  const deadline = h('input', { name: 'starting_deadline', value: s.starting_deadline || '', placeholder: 'e.g. 10m', autocomplete: 'off' });
  const autoDisable = checkbox('Disable automatically when done', { name: 'auto_disable_when_done', checked: !!s.auto_disable_when_done });
  const enabled = checkbox('Enabled', { name: 'enabled', checked: s.enabled !== false });
  const plan = planFields(s);
  const preview = h('div', { class: 'hint', 'aria-live': 'polite' });
  const msg = h('div', { 'aria-live': 'polite' });
  const save = guard(h('button', { class: 'btn primary', type: 'submit' }, 'Save schedule'), 'POST /api/schedules');

  let timer;
  const check = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if (!cron.value.trim()) return preview.replaceChildren();
      const q = new URLSearchParams({ cron: cron.value.trim(), n: '3' });
      if (tz.value.trim()) q.set('tz', tz.value.trim());
      try {
        const r = await get('/api/schedules/preview?' + q);
        const next = Array.isArray(r) ? r : r.next || r.next_fires || r.instants || [];
        preview.replaceChildren('Next: ', ...next.slice(0, 3).flatMap((n, i) => [i ? ', ' : '', fireTime(n)]));
      } catch (e) {
        preview.replaceChildren(h('span', { class: 'badge bad' }, e.message));
      }
    }, 300);
  };
  cron.addEventListener('input', check);
  tz.addEventListener('change', check);
  check();

  const form = h('form', { class: 'form card', onsubmit: async (e) => {
    e.preventDefault();
    msg.replaceChildren();
    const body = definition({
      ...plan.value(),
      id: idIn.value.trim(),
      cron: cron.value.trim(),
      tz: tz.value.trim() || undefined,
      job_id: job.value,
      mode: mode.value,
      cooldown: cooldown.value.trim() || undefined,
      starting_deadline: deadline.value.trim() || undefined,
      auto_disable_when_done: autoDisable.querySelector('input').checked,
      enabled: enabled.querySelector('input').checked,
    });
    try {
      const r = await busy(save, post('/api/schedules', body));
      const to = '/schedules/' + seg(r.id || body.id);
      // Saved either way; a target that reaches nobody (yet) is worth a
      // second look before leaving the form.
      if (r.warning) msg.replaceChildren(notice(h('span', {}, `Saved. ${r.warning}. `, link(to, 'Open the schedule')), 'warn'));
      else ctx.navigate(to);
    } catch (err) {
      msg.replaceChildren(errorCard(err, 'Not saved'));
    }
  } },
  h('div', { class: 'row' }, field('ID', idIn), field('Job', job)),
  h('div', { class: 'row' },
    field('Cron', cron, 'six fields, seconds first: sec min hour day month weekday'),
    field('Time zone', tz, 'IANA name; default UTC')),
  zones, preview,
  plan.el,
  h('div', { class: 'row' }, field('Mode', mode, 'every tick runs the whole target; once per PC / target stop after a success'), field('Cooldown', cooldown, 're-arm after a success'),
    field('Starting deadline', deadline, 'catch up a missed tick within this')),
  autoDisable, enabled, msg, deniedNote('POST /api/schedules', 'save schedules'), h('div', {}, save));
  ctx.root.append(form);
}
