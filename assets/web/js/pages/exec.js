// Exec: fire a catalog job at all PCs, groups or PCs, with jitter and
// optional rollout waves, then follow it on its execution page.
import { h, heading, errorCard, field, select, busy } from '../dom.js';
import { get, post, seg } from '../api.js';
import { planFields } from '../plan.js';
import { guard, deniedNote } from '../access.js';

export default async function exec(ctx) {
  ctx.title('Exec');
  ctx.root.append(heading('Exec a job'));
  let jobs;
  try {
    jobs = (await get('/api/jobs', { signal: ctx.signal })) || [];
  } catch (e) {
    ctx.root.append(errorCard(e));
    return;
  }
  if (jobs.length === 0) {
    ctx.root.append(h('p', {}, 'The catalog is empty. ', h('a', { href: '/jobs/new' }, 'Create a job'), ' first.'));
    return;
  }
  const want = ctx.query.get('job') || '';
  const job = select(jobs.map((j) => [j.id, j.description ? `${j.id} — ${j.description}` : j.id]), { name: 'job', required: true }, want);
  const plan = planFields();
  const msg = h('div', { 'aria-live': 'polite' });
  const route = 'POST /api/exec/{job_id}';
  const submit = guard(h('button', { class: 'btn primary', type: 'submit' }, 'Exec'), route);
  const form = h('form', { class: 'form card', onsubmit: async (e) => {
    e.preventDefault();
    msg.replaceChildren();
    try {
      const r = await busy(submit, post('/api/exec/' + seg(job.value), plan.value()));
      ctx.navigate('/executions/' + seg(r.exec_id));
    } catch (err) {
      msg.replaceChildren(errorCard(err, 'Not executed'));
    }
  } }, field('Job', job), plan.el, msg, deniedNote(route, 'exec a job'), h('div', {}, submit));
  ctx.root.append(form);
}
