// filterForm builds a filter bar whose values live in the URL query, so a
// filtered view can be reloaded and shared. Submitting navigates (replacing
// the history entry) and the page redraws from the new query.
import { h, field } from './dom.js';

// fields: [{name, label, control}] where control is an input or select
// already holding the current value.
export function filterForm(ctx, fields, { toQuery = (_name, v) => v } = {}) {
  const onsubmit = (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const f of fields) {
      const v = toQuery(f.name, f.control.value.trim());
      if (v) q.set(f.name, v);
    }
    ctx.navigate(location.pathname + (q.toString() ? '?' + q : ''), { replace: true });
  };
  return h('form', { class: 'filters', onsubmit },
    fields.map((f) => field(f.label, f.control)),
    h('button', { class: 'btn', type: 'submit' }, 'Filter'),
    h('a', { href: location.pathname, class: 'btn' }, 'Clear'));
}

// sinceInput is a local date-time picker whose value is sent as RFC 3339.
export function sinceInput(query) {
  const v = query.get('since');
  const input = h('input', { type: 'datetime-local', name: 'since', step: 1 });
  if (v) {
    const d = new Date(v);
    if (!isNaN(d)) input.value = new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
  }
  return input;
}

export function sinceToRFC3339(v) {
  if (!v) return '';
  const d = new Date(v);
  return isNaN(d) ? '' : d.toISOString();
}
