// toYAML writes a JSON value as YAML for editing, the inverse of what the
// backend accepts on POST /api/jobs. Scalars that YAML would read as another
// type ("1.0", "true", "null", "12:30") are quoted; multi-line strings (the
// script) become literal blocks so they stay readable.

const PLAIN = /^[A-Za-z_/][A-Za-z0-9_ ./()$%+-]*$/;
const RESERVED = /^(true|false|yes|no|on|off|null|~|y|n)$/i;

function scalar(s) {
  if (typeof s !== 'string') return s === null || s === undefined ? 'null' : String(s);
  if (PLAIN.test(s) && !RESERVED.test(s) && !s.endsWith(' ')) return s;
  // A JSON string is a valid YAML double-quoted scalar.
  return JSON.stringify(s);
}

function block(s, indent) {
  const pad = ' '.repeat(indent);
  const chomp = s.endsWith('\n') ? '' : '-';
  const body = s.replace(/\n$/, '').split('\n').map((l) => (l === '' ? '' : pad + l)).join('\n');
  // An indentation indicator keeps a first line that starts with spaces.
  const ind = /^[ \t]/.test(s) ? String(2) : '';
  return `|${ind}${chomp}\n${body}`;
}

function isMultiline(v) {
  return typeof v === 'string' && v.includes('\n') && !/[\t\r]/.test(v.replace(/\n/g, ''));
}

function write(v, indent) {
  const pad = ' '.repeat(indent);
  if (Array.isArray(v)) {
    if (v.length === 0) return ' []';
    return v.map((item) => {
      if (item && typeof item === 'object' && !Array.isArray(item) && Object.keys(item).length) {
        const inner = write(item, indent + 2).replace(/^\n\s*/, '');
        return `\n${pad}- ${inner}`;
      }
      return `\n${pad}-${write(item, indent + 2)}`;
    }).join('');
  }
  if (v && typeof v === 'object') {
    const entries = Object.entries(v).filter(([, x]) => x !== undefined);
    if (entries.length === 0) return ' {}';
    return entries.map(([k, x]) => `\n${pad}${scalar(k)}:${write(x, indent + 2)}`).join('');
  }
  if (isMultiline(v)) return ' ' + block(v, indent);
  return ' ' + scalar(v);
}

export function toYAML(v) {
  return write(v, 0).replace(/^\n/, '') + '\n';
}
