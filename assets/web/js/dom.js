// Tiny DOM helpers and the building blocks every page uses: tables that
// collapse into cards on narrow screens, labelled form fields, badges and the
// error card that shows the API's own message.

// h creates an element. attrs: "class", "on<event>" listeners, booleans as
// present/absent attributes, anything else as an attribute. Children may be
// nodes, strings, numbers, arrays, or null/false (skipped).
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  add(el, children);
  return el;
}

function add(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

export function link(href, ...children) {
  return h('a', { href }, ...children);
}

export function heading(title, ...actions) {
  return h('div', { class: 'page-head' }, h('h1', {}, title),
    actions.length ? h('div', { class: 'actions' }, actions) : null);
}

export function section(title, ...children) {
  return h('section', { class: 'card' }, title ? h('h2', {}, title) : null, ...children);
}

// errorCard shows an error as the API worded it, with the HTTP status.
export function errorCard(err, title = 'Request failed') {
  const status = err && err.status ? ` (HTTP ${err.status})` : '';
  return h('div', { class: 'card error', role: 'alert' },
    h('strong', {}, title + status), h('p', { class: 'error-message' }, (err && err.message) || String(err)));
}

export function notice(text, kind = 'ok') {
  return h('div', { class: `card notice ${kind}`, role: 'status' }, text);
}

export function badge(text, kind = '') {
  return h('span', { class: `badge ${kind}` }, text);
}

const STATUS_KINDS = {
  ok: 'ok', online: 'ok', success: 'ok', completed: 'ok', fired: 'ok', running: 'info', enabled: 'ok',
  healthy: 'ok', pending: 'info', answered: 'ok', waiting: 'info', restarting: 'warn', skipped: 'muted',
  unknown: 'muted', offline: 'muted', disabled: 'muted', cancelled: 'muted', canceled: 'muted',
  degraded: 'bad', failed: 'bad', failure: 'bad', faulted: 'bad', invalid: 'bad', expired: 'warn',
  missed: 'warn', missing: 'bad', never_answered: 'warn', killed: 'warn', stale: 'muted',
  held: 'warn', judging: 'info',
};

export function statusBadge(status) {
  const s = String(status ?? 'unknown');
  return badge(s.replace(/_/g, ' '), STATUS_KINDS[s.toLowerCase()] || '');
}

// table renders rows; columns: [{label, cell(row) → node|string, class}].
// Every cell carries its column label so narrow screens can show each row
// as a labelled card instead of clipping columns.
export function table(columns, rows, { empty = 'Nothing yet.', caption, rowAttrs } = {}) {
  if (!rows || rows.length === 0) return h('p', { class: 'empty muted' }, empty);
  return h('div', { class: 'table-wrap' },
    h('table', { class: 'grid' },
      caption ? h('caption', { class: 'sr-only' }, caption) : null,
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.class }, c.label)))),
      h('tbody', {}, rows.map((r) => h('tr', rowAttrs ? rowAttrs(r) : {},
        columns.map((c) => h('td', { 'data-label': c.label, class: c.class }, c.cell(r))))))));
}

// dl renders [label, value] pairs.
export function dl(pairs) {
  return h('dl', { class: 'props' }, pairs.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

let fieldSeq = 0;

// field wraps a control with its label (and an optional hint tied to it by
// aria-describedby).
export function field(label, control, hint) {
  if (!control.id) control.id = 'f' + ++fieldSeq;
  let hintEl = null;
  if (hint) {
    hintEl = h('small', { id: control.id + '-hint', class: 'hint' }, hint);
    control.setAttribute('aria-describedby', hintEl.id);
  }
  return h('div', { class: 'field' }, h('label', { for: control.id }, label), control, hintEl);
}

export function checkbox(label, attrs = {}) {
  const input = h('input', { type: 'checkbox', ...attrs });
  input.id = input.id || 'f' + ++fieldSeq;
  return h('div', { class: 'field check' }, input, h('label', { for: input.id }, label));
}

export function select(options, attrs = {}, selected = '') {
  return h('select', attrs, options.map((o) => {
    const [value, text] = Array.isArray(o) ? o : [o, o];
    return h('option', { value, selected: value === selected }, text);
  }));
}

export function button(text, onclick, attrs = {}) {
  return h('button', { type: 'button', class: 'btn', onclick, ...attrs }, text);
}

// busy disables el while the promise runs, so a double click never sends a
// request twice.
export async function busy(el, promise) {
  if (!el) return promise;
  el.disabled = true;
  el.setAttribute('aria-busy', 'true');
  try {
    return await promise;
  } finally {
    el.disabled = false;
    el.removeAttribute('aria-busy');
  }
}

export function pre(text, cls = '') {
  return h('pre', { class: 'output ' + cls }, text === '' ? h('span', { class: 'muted' }, '(empty)') : text);
}

export function json(v) {
  return pre(JSON.stringify(v, null, 2));
}

// csv splits a comma/space separated list typed by an operator.
export function csv(s) {
  return String(s || '').split(/[\s,]+/).map((x) => x.trim()).filter(Boolean);
}

// pager renders "N of total" with previous/next links that keep the other
// query parameters.
export function pager(query, total, shown, limit) {
  const offset = Number(query.get('offset') || 0);
  const to = (o) => {
    const q = new URLSearchParams(query);
    if (o > 0) q.set('offset', o);
    else q.delete('offset');
    const s = q.toString();
    return location.pathname + (s ? '?' + s : '');
  };
  return h('nav', { class: 'pager', 'aria-label': 'Pages' },
    h('span', { class: 'muted' }, shown ? `${offset + 1}–${offset + shown} of ${total}` : `0 of ${total}`),
    offset > 0 ? link(to(Math.max(0, offset - limit)), '← Newer') : null,
    offset + shown < total ? link(to(offset + limit), 'Older →') : null);
}
