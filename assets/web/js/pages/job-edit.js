// Create or edit a job as YAML, exactly the manifest `curl --data-binary
// @job.yaml` would send: the backend validates it and its error text (an
// unknown field, a bad timeout) is shown as is.
import { h, heading, errorCard, notice, link, field, busy } from '../dom.js';
import { get, post, seg } from '../api.js';
import { toYAML } from '../yaml.js';
import { guard, deniedNote } from '../access.js';

const TEMPLATE = `id: hello
version: "1.0.0"
description: Say hello
execute:
  shell: powershell
  script: |
    Write-Output "hello from $env:COMPUTERNAME"
  timeout: 30s
`;

export default async function jobEdit(ctx) {
  const id = ctx.params.id;
  ctx.title(id ? `Job ${id}` : 'New job');
  const msg = h('div', { 'aria-live': 'polite' });
  const text = h('textarea', { name: 'manifest', rows: 18, spellcheck: 'false', required: true });
  const save = guard(h('button', { class: 'btn primary', type: 'submit' }, 'Save'), 'POST /api/jobs');
  ctx.root.append(heading(id ? `Job ${id}` : 'New job', link('/jobs', 'All jobs'),
    id ? guard(link('/exec?job=' + encodeURIComponent(id), 'Exec'), 'POST /api/exec/{job_id}') : null), msg);

  if (id) {
    try {
      const jobs = await get('/api/jobs', { signal: ctx.signal });
      const job = (jobs || []).find((j) => j.id === id);
      if (!job) {
        ctx.root.append(errorCard({ status: 404, message: `job '${id}' not found in catalog` }));
        return;
      }
      text.value = toYAML(job);
    } catch (e) {
      ctx.root.append(errorCard(e));
      return;
    }
  } else {
    text.value = TEMPLATE;
  }

  const form = h('form', { class: 'form card', onsubmit: async (e) => {
    e.preventDefault();
    msg.replaceChildren();
    try {
      const r = await busy(save, post('/api/jobs', text.value, { type: 'application/yaml' }));
      msg.replaceChildren(notice(h('span', {}, `Saved job ${r.id} version ${r.version}. `,
        link('/exec?job=' + encodeURIComponent(r.id), 'Exec it'), ' · ', link('/jobs', 'back to jobs'))));
      if (r.id !== id) history.replaceState(null, '', '/jobs/' + seg(r.id));
    } catch (err) {
      msg.replaceChildren(errorCard(err, 'Not saved'));
    }
  } },
  field('Manifest (YAML)', text, 'Fields: id, version, description, execute {shell, script, timeout, run_as, cwd}, require_approval, inventory {display, summary}.'),
  deniedNote('POST /api/jobs', 'save jobs'), h('div', { class: 'actions' }, save));
  ctx.root.append(form);
}
