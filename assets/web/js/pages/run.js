// Run: one script on one PC, synchronously; the answer (or the timeout) is
// shown when the agent replies.
import { h, heading, errorCard, notice, field, select, busy, dl, pre, badge } from '../dom.js';
import { post, list } from '../api.js';
import { time, between } from '../fmt.js';
import { guard, deniedNote } from '../access.js';

export default async function run(ctx) {
  ctx.title('Run');
  const pc = h('input', { name: 'pc_id', value: ctx.query.get('pc') || '', required: true, autocomplete: 'off', list: 'run-pcs' });
  const pcs = h('datalist', { id: 'run-pcs' });
  const shell = select(['powershell', 'cmd'], { name: 'shell' }, 'powershell');
  const script = h('textarea', { name: 'script', rows: 8, required: true, spellcheck: 'false' }, 'hostname');
  const timeout = h('input', { name: 'timeout_secs', type: 'number', min: 1, max: 3600, value: 60, required: true });
  const out = h('div', { 'aria-live': 'polite' });
  const submit = guard(h('button', { class: 'btn primary', type: 'submit' }, 'Run'), 'POST /api/run');
  const form = h('form', { class: 'form card', onsubmit: async (e) => {
    e.preventDefault();
    const secs = Number(timeout.value);
    out.replaceChildren(notice(`Waiting for ${pc.value.trim()} to answer (up to ${secs + 10} s)…`, 'warn'));
    try {
      const r = await busy(submit, post('/api/run', { pc_id: pc.value.trim(), shell: shell.value, script: script.value, timeout_secs: secs }));
      out.replaceChildren(h('section', { class: 'card' }, h('h2', {}, 'Result'),
        dl([
          ['PC', r.pc_id],
          ['Exit code', r.exit_code === 0 ? badge('0', 'ok') : badge(String(r.exit_code), 'bad')],
          ['Started', time(r.started_at)],
          ['Took', between(r.started_at, r.finished_at)],
        ]),
        h('h3', {}, 'stdout'), pre(r.stdout ?? ''),
        r.stderr ? [h('h3', {}, 'stderr'), pre(r.stderr)] : null));
    } catch (err) {
      out.replaceChildren(errorCard(err, 'Run failed'));
    }
  } },
  h('div', { class: 'row' }, field('PC', pc), field('Shell', shell), field('Timeout (s)', timeout)), pcs,
  field('Script', script), deniedNote('POST /api/run', 'run scripts'), h('div', {}, submit));
  ctx.root.append(heading('Run a script on one PC'), form, out);
  list('/api/agents', { online: 'true', limit: 1000 })
    .then(({ items }) => pcs.replaceChildren(...items.map((a) => h('option', { value: a.pc_id }))), () => {});
}
