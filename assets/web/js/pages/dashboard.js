// Dashboard: fleet health at a glance, then the latest results, executions
// and operator activity, all kept current by live events.
import { h, heading, table, errorCard } from '../dom.js';
import { get, list } from '../api.js';
import { number } from '../fmt.js';
import { panel, resultColumns, execColumns, auditColumns } from '../views.js';

const STATUS_TEXT = {
  ok: 'Fleet healthy',
  degraded: 'Fleet degraded',
  unknown: 'No agents yet',
};

export default async function dashboard(ctx) {
  ctx.title('Dashboard');
  const health = h('div', {});
  ctx.root.append(heading('Dashboard'), health);

  const loadHealth = async () => {
    try {
      // 503 carries the same body when the fleet is degraded.
      const f = await get('/api/health/fleet', { okStatus: [503], signal: ctx.signal });
      if (ctx.alive) health.replaceChildren(banner(f), stats(f));
    } catch (e) {
      if (e.name !== 'AbortError' && ctx.alive) health.replaceChildren(errorCard(e, 'Fleet health unavailable'));
    }
  };
  const results = panel(ctx, 'Recent results', ['result'], async () => {
    const { items } = await list('/api/results', { limit: 8 });
    return table(resultColumns({ output: false }), items, { empty: 'No results yet.' });
  });
  const execs = panel(ctx, 'Recent executions', ['exec'], async () => {
    const { items } = await list('/api/executions', { limit: 6 });
    return table(execColumns(), items, { empty: 'No executions yet.' });
  });
  const audit = panel(ctx, 'Recent activity', ['audit'], async () => {
    const { items } = await list('/api/audit', { limit: 8 });
    return table(auditColumns(), items, { empty: 'No activity yet.' });
  });
  ctx.root.append(execs, results, audit);
  ctx.live(['agent', 'result'], loadHealth, 1000);
  await Promise.all([loadHealth(), results.ready, execs.ready, audit.ready]);
}

function banner(f) {
  const status = f.status || 'unknown';
  const js = f.jetstream || {};
  const why = [];
  if (js.missing && js.missing.length) why.push(`JetStream missing: ${js.missing.join(', ')}`);
  if (status === 'degraded' && (f.agents?.known ?? 0) > 0 && (f.agents?.active ?? 0) === 0) {
    why.push('no agent has sent a heartbeat in the last 2 minutes');
  }
  return h('div', { class: `banner ${status}`, role: 'status', 'data-health': status },
    h('strong', {}, STATUS_TEXT[status] || status),
    why.length ? h('span', {}, why.join('; ')) : null);
}

function stats(f) {
  const a = f.agents || {};
  const r = f.recent_results || {};
  const js = f.jetstream || {};
  const stat = (label, value, href, key) => h('div', { class: 'stat' },
    h('span', { class: 'value', 'data-stat': key }, typeof value === 'string' ? value : number(value ?? 0)),
    h('a', { href, class: 'label' }, label));
  return h('div', { class: 'stats' },
    stat('agents online', a.active, '/agents?online=true', 'agents-online'),
    stat('agents known', a.known, '/agents', 'agents-known'),
    stat('stale agents', a.stale, '/agents?online=false', 'agents-stale'),
    stat(`results (${r.window_hours ?? 24} h)`, r.total, '/results', 'results-total'),
    stat(`failed (${r.window_hours ?? 24} h)`, r.failed, '/results?status=failure', 'results-failed'),
    stat('JetStream resources ok', `${js.healthy ?? 0}/${js.total ?? 0}`, '/jetstream', 'jetstream'));
}
