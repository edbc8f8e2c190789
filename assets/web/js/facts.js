// Inventory facts: a probe's stdout as JSON, shown through the display and
// summary fields its manifest declares (field paths may be dotted, e.g.
// "os.version"; a fact that is a list renders as a table of its items).
import { h, dl, table, json } from './dom.js';
import { value } from './fmt.js';

export function pick(facts, path) {
  let v = facts;
  for (const part of String(path).split('.')) {
    if (v === null || typeof v !== 'object') return undefined;
    v = v[part];
  }
  return v;
}

export function fieldColumns(fields) {
  return (fields || []).map((f) => ({
    label: f.label || f.field,
    class: f.type === 'number' || f.type === 'bytes' ? 'num' : '',
    cell: (facts) => value(pick(facts, f.field), f.type),
  }));
}

// factsView shows one PC's facts for one probe.
export function factsView(facts, display) {
  const fields = display && display.length ? display : null;
  let main;
  if (Array.isArray(facts)) {
    main = fields ? table(fieldColumns(fields), facts, { empty: 'No items.' }) : json(facts);
  } else if (facts && typeof facts === 'object') {
    main = fields
      ? dl(fields.map((f) => [f.label || f.field, value(pick(facts, f.field), f.type)]))
      : dl(Object.entries(facts).map(([k, v]) => [k, value(v)]));
  } else {
    main = json(facts);
  }
  return h('div', {}, main, h('details', {}, h('summary', {}, 'raw facts'), json(facts)));
}
