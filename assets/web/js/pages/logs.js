// Logs: the tail of one agent's own log, fetched from the agent on demand
// (logs.fetch.<pc_id>, 10 s).
import { h, heading, errorCard, field, busy, pre, notice } from '../dom.js';
import { get, seg } from '../api.js';

export default async function logs(ctx) {
  ctx.title('Logs');
  const pc = h('input', { name: 'pc', value: ctx.query.get('pc') || '', required: true, autocomplete: 'off' });
  const tail = h('input', { name: 'tail', type: 'number', min: 1, max: 10000, value: ctx.query.get('tail') || 200 });
  const out = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { class: 'btn primary', type: 'submit' }, 'Fetch');
  const fetchLogs = async () => {
    const id = pc.value.trim();
    if (!id) return;
    history.replaceState(null, '', `/logs?pc=${encodeURIComponent(id)}&tail=${encodeURIComponent(tail.value)}`);
    out.replaceChildren(notice(`Asking ${id} for its log…`, 'warn'));
    try {
      const text = await busy(submit, get(`/api/agents/${seg(id)}/logs?tail=${encodeURIComponent(tail.value)}`));
      out.replaceChildren(h('section', { class: 'card' }, h('h2', {}, `${id}: last ${tail.value} lines`), pre(String(text ?? ''), 'tall')));
    } catch (e) {
      out.replaceChildren(errorCard(e, 'Logs unavailable'));
    }
  };
  ctx.root.append(heading('Agent logs'),
    h('form', { class: 'filters card', onsubmit: (e) => (e.preventDefault(), fetchLogs()) },
      field('PC', pc), field('Lines', tail), submit),
    out);
  if (pc.value) await fetchLogs();
}
