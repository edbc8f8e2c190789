// Formatting of times, sizes and numbers, always in the browser's locale
// and time zone.
import { h } from './dom.js';

const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
const absFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'long' });
const numFmt = new Intl.NumberFormat();

export function parseTime(v) {
  if (v === null || v === undefined || v === '') return null;
  const d = v instanceof Date ? v : new Date(v);
  return isNaN(d.getTime()) ? null : d;
}

const UNITS = [
  ['year', 365 * 86400], ['month', 30 * 86400], ['week', 7 * 86400],
  ['day', 86400], ['hour', 3600], ['minute', 60], ['second', 1],
];

export function relative(d, now = Date.now()) {
  const secs = (d.getTime() - now) / 1000;
  const abs = Math.abs(secs);
  if (abs < 5) return 'just now';
  for (const [unit, size] of UNITS) {
    if (abs >= size || unit === 'second') return rtf.format(Math.round(secs / size), unit);
  }
  return '';
}

export function absolute(d) {
  return absFmt.format(d);
}

// time renders a timestamp both ways: the relative form (kept current by
// refreshTimes) and the absolute local time, with the full date and zone in
// the tooltip.
export function time(v) {
  const d = parseTime(v);
  if (!d) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: d.toISOString(), title: fullFmt.format(d), class: 'ts' },
    h('span', { class: 'rel' }, relative(d)), ' ',
    h('span', { class: 'abs' }, absolute(d)));
}

export function refreshTimes(root = document) {
  const now = Date.now();
  for (const el of root.querySelectorAll('time.ts')) {
    const rel = el.querySelector('.rel');
    if (rel) rel.textContent = relative(new Date(el.getAttribute('datetime')), now);
  }
}

export function bytes(n) {
  const v = Number(n);
  if (!isFinite(v)) return String(n ?? '—');
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  let x = Math.abs(v);
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  const s = i === 0 ? String(x) : x.toFixed(x < 10 ? 1 : 0);
  return (v < 0 ? '-' : '') + s + ' ' + units[i];
}

export function number(n) {
  const v = Number(n);
  return isFinite(v) && n !== '' && n !== null ? numFmt.format(v) : String(n ?? '—');
}

// value formats one inventory fact by its display type.
export function value(v, type) {
  if (v === null || v === undefined) return h('span', { class: 'muted' }, '—');
  switch (type) {
    case 'bytes':
      return bytes(v);
    case 'number':
      return number(v);
    case 'timestamp':
      return time(typeof v === 'number' ? new Date(v * (v < 1e12 ? 1000 : 1)) : v);
  }
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

export function duration(ms) {
  if (ms === null || ms === undefined || !isFinite(ms)) return '—';
  if (ms < 1000) return Math.round(ms) + ' ms';
  const s = ms / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + ' s';
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

// between is the duration between two timestamps, or '—'.
export function between(a, b) {
  const da = parseTime(a);
  const db = parseTime(b);
  return da && db ? duration(db - da) : '—';
}

export function shortId(id) {
  return id && id.length > 13 ? id.slice(0, 8) + '…' : id || '';
}
