// Schedule helpers shared by the schedule pages: the definition fields a
// POST accepts, a readable target, and tolerant readers for the status
// document of GET /api/schedules/{id}.
import { h } from './dom.js';
import { time } from './fmt.js';

const FIELDS = ['id', 'cron', 'job_id', 'target', 'rollout', 'jitter', 'mode', 'cooldown',
  'auto_disable_when_done', 'enabled', 'tz', 'starting_deadline'];

// definition keeps only the Schedule fields of wire.md §4, so that a status
// document read back can be posted again.
export function definition(s) {
  const out = {};
  for (const k of FIELDS) if (s[k] !== undefined && s[k] !== null) out[k] = s[k];
  return out;
}

export function targetText(s) {
  const t = s.target || {};
  const parts = [];
  if (t.all) parts.push('all PCs');
  if (t.groups && t.groups.length) parts.push('groups ' + t.groups.join(', '));
  if (t.pcs && t.pcs.length) parts.push('PCs ' + t.pcs.join(', '));
  if (s.rollout && s.rollout.waves && s.rollout.waves.length) parts.push(`${s.rollout.waves.length} waves`);
  return parts.join('; ') || '—';
}

export function splitStatus(d) {
  const s = d.schedule || d.definition || d;
  const st = d.status && typeof d.status === 'object' ? d.status : d;
  const state = (typeof d.status === 'string' && d.status) || st.state || st.actor_state || (s.enabled === false ? 'disabled' : 'unknown');
  return {
    s,
    state,
    error: st.error || st.last_error || null,
    next: st.next_fires || st.next_fire_times || st.next || [],
    ticks: st.last_ticks || st.ticks || [],
    restarts: st.restarts,
    progress: st.progress || null,
  };
}

// fireTime renders one upcoming instant: a string, or {utc, local, tz}.
export function fireTime(n) {
  if (typeof n === 'string') return time(n);
  const at = n.utc || n.at || n.instant || n.time;
  return h('span', {}, time(at), n.local ? h('span', { class: 'muted' }, ` · ${n.local}${n.tz ? ' ' + n.tz : ''}`) : null);
}
