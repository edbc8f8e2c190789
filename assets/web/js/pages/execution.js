// One execution: summary, live progress, per-PC status (answered with exit
// code and duration, pending, never answered), the rollout waves with their
// gate state and counts, and the kill / cancel waves / resume or abort a
// held rollout / re-run failed actions.
import { h, heading, table, dl, statusBadge, errorCard, notice, button, busy, link, badge, field } from '../dom.js';
import { get, post, seg } from '../api.js';
import { time, duration, between } from '../fmt.js';
import { panel, progress, agentLink } from '../views.js';
import { confirmButton } from '../confirm.js';
import { guard } from '../access.js';

export default async function execution(ctx) {
  const id = ctx.params.id;
  const base = '/api/executions/' + seg(id);
  ctx.title(`Exec ${id.slice(0, 8)}`);
  const msg = h('div', { 'aria-live': 'polite' });
  const state = h('span', { 'data-exec-status': '' });
  const run = async (label, path, done, el, payload) => {
    msg.replaceChildren();
    try {
      done(await busy(el, post(base + path, payload)));
    } catch (e) {
      msg.replaceChildren(errorCard(e, `${label} failed`));
    }
  };
  const act = (label, path, done, cls = 'btn') => {
    const b = button(label, () => run(label, path, done, b), { class: cls });
    return guard(b, 'POST /api/executions/{exec_id}' + path);
  };
  // The actions offered follow the exec as it changes: Kill while it is in
  // flight, Cancel while a wave is pending, Re-run failed (confirmed, with
  // how many PCs) once some PC failed or missed the deadline. They are
  // redrawn only when that set changes, so a live update does not disarm
  // a confirmation half-way.
  const actions = h('span', { class: 'actions' });
  // A held rollout (its gate not met) offers Resume, which asks why (the
  // reason is audited), and Abort (confirmed).
  const heldBox = h('div', { 'data-held': '' });
  const reason = h('input', { name: 'resume-reason', autocomplete: 'off', placeholder: 'why it goes out anyway' });
  const resume = button('Resume next wave', () => run('Resume', '/waves/resume', (r) => {
    reason.value = '';
    const w = r.resumed || {};
    msg.replaceChildren(notice(`Wave ${(w.wave_index ?? 0) + 1} (${w.group}) ${w.published ? 'published' : 'released; it goes out shortly'}.`));
    body.load();
  }, resume, { reason: reason.value }), { class: 'btn' });
  const abort = confirmButton('Abort rollout', 'cancel the remaining waves?',
    () => run('Abort', '/waves/abort', () => (msg.replaceChildren(notice('Rollout aborted: the remaining waves are cancelled.')), body.load()), abort));
  const heldForm = h('div', { class: 'row', 'data-held-actions': '' },
    field('Reason', reason, 'kept in the audit log'),
    guard(resume, 'POST /api/executions/{exec_id}/waves/resume'),
    guard(abort, 'POST /api/executions/{exec_id}/waves/abort'));
  let shown = '';
  const offer = (e, d) => {
    const inFlight = e.status === 'pending' || e.status === 'running';
    const held = e.status === 'held';
    heldBox.replaceChildren(...(held ? [h('div', { class: 'card notice warn', role: 'status' },
      h('strong', {}, 'Rollout held: '), h('span', { 'data-hold-reason': '' }, d.hold_reason || 'a wave did not meet its gate'),
      h('p', { class: 'hint' }, 'The next wave is not published until you resume it; abort cancels the remaining waves.'),
      heldForm)] : []));
    const pendingWaves = (d.waves || []).some((w) => w.state === 'pending' || w.state === 'held');
    const s = d.summary || {};
    const rerun = (s.failed ?? 0) + (s.never_answered ?? 0);
    const key = `${inFlight}/${pendingWaves}/${rerun}`;
    if (key === shown) return;
    shown = key;
    actions.replaceChildren(...[
      inFlight ? act('Kill', '/kill', () => msg.replaceChildren(notice('Kill sent to every PC running this exec.')), 'btn danger') : null,
      pendingWaves && !held ? act('Cancel pending waves', '/cancel', () => (msg.replaceChildren(notice('Pending waves cancelled.')), body.load())) : null,
      rerun > 0 ? guard(confirmButton('Re-run failed', `re-run on ${rerun} PC${rerun === 1 ? '' : 's'}?`,
        () => run('Re-run failed', '/rerun-failed', (r) => ctx.navigate('/executions/' + seg(r.exec_id))), { danger: false }),
      'POST /api/executions/{exec_id}/rerun-failed') : null,
    ].filter(Boolean));
  };
  ctx.root.append(heading(h('span', {}, 'Exec ', h('code', {}, id), ' ', state), actions), msg, heldBox);

  const body = panel(ctx, null, ['exec', 'result'], async () => {
    const d = await get(base, { signal: ctx.signal });
    const e = d.execution || d.exec || d;
    const rows = d.pcs || d.rows || d.results || d.per_pc || [];
    state.dataset.execStatus = e.status;
    state.replaceChildren(statusBadge(e.status));
    offer(e, d);
    return h('div', { class: 'stack' },
      h('div', { class: 'cols' },
        h('div', {}, dl([
          ['Job', e.job_id ? link('/jobs/' + seg(e.job_id), e.job_id) : '—'],
          ['Version', e.version || '—'],
          ['Initiated by', e.initiated_by || '—'],
          ['Started', time(e.created_at)],
          e.finished_at ? ['Finished', time(e.finished_at)] : null,
          ['Subjects', (e.subjects || []).map((s) => h('code', {}, s)).reduce((a, c) => (a.length ? [...a, ', ', c] : [c]), [])],
          e.error ? ['Error', h('span', { class: 'badge bad' }, e.error)] : null,
        ])),
        h('div', {}, h('h2', {}, 'Progress'), progress(e, { words: false }), summary(d.summary),
          e.schedule_id ? h('p', {}, 'Fired by schedule ', link('/schedules/' + seg(e.schedule_id), e.schedule_id)) : null,
          waves(d.waves || e.waves))),
      h('h2', {}, 'PCs'),
      table(pcColumns(), rows, { empty: 'No PC expected yet.', caption: 'Per-PC status' }));
  }, { wait: 300 });
  ctx.root.append(body);
  await body.ready;
}

// pcStatus reads "answered" as the outcome the operator cares about.
function pcStatus(r) {
  const answered = r.exit_code !== null && r.exit_code !== undefined;
  if (answered) return r.exit_code === 0 ? 'success' : 'failure';
  return r.state || r.status || 'pending';
}

function pcColumns() {
  return [
    { label: 'PC', cell: (r) => agentLink(r.pc_id) },
    { label: 'Status', cell: (r) => statusBadge(pcStatus(r)) },
    { label: 'Exit', cell: (r) => (r.exit_code === null || r.exit_code === undefined ? '—' : r.exit_code === 0 ? badge('0', 'ok') : badge(String(r.exit_code), 'bad')) },
    { label: 'Took', cell: (r) => (r.duration_ms !== undefined ? duration(r.duration_ms)
      : r.duration_secs !== undefined ? duration(r.duration_secs * 1000) : between(r.started_at, r.finished_at)) },
    { label: 'Finished', cell: (r) => time(r.finished_at) },
    { label: 'Result', cell: (r) => (r.request_id && r.exit_code !== null && r.exit_code !== undefined
      ? link('/results/' + seg(r.request_id) + '?pc_id=' + encodeURIComponent(r.pc_id), 'output') : '—') },
  ];
}

function summary(s) {
  if (!s) return null;
  return h('p', { class: 'actions' },
    badge(`${s.succeeded ?? 0} succeeded`, 'ok'), badge(`${s.failed ?? 0} failed`, s.failed ? 'bad' : ''),
    badge(`${s.pending ?? 0} pending`, 'info'), badge(`${s.never_answered ?? 0} never answered`, s.never_answered ? 'warn' : ''));
}

// waveState names a wave's state as an operator reads it: fired, or
// judging while a due gated wave waits for the earlier waves' answers.
function waveState(w) {
  if (w.state === 'published') return 'fired';
  if (w.state === 'pending' && w.judge_at) return 'judging';
  return w.state;
}

function waves(ws) {
  if (!Array.isArray(ws) || ws.length === 0) return null;
  return h('div', {}, h('h3', {}, 'Waves'), table([
    { label: 'Wave', cell: (w) => String((w.wave_index ?? w.index ?? 0) + 1) },
    { label: 'Group', cell: (w) => w.group_name || w.group },
    { label: 'Due', cell: (w) => time(w.due_at) },
    { label: 'State', cell: (w) => h('span', { 'data-wave-state': waveState(w) }, statusBadge(waveState(w)), w.gated ? ' ' : null,
      w.gated ? badge('gated', 'muted') : null) },
    { label: 'PCs', cell: (w) => (w.expected_pcs === undefined || w.expected_pcs === null ? '—'
      : `${w.success ?? 0} ok · ${w.failure ?? 0} failed of ${w.expected_pcs}`) },
    { label: 'Note', cell: (w) => [
      w.judge_at && w.state === 'pending' ? `judged by ${time(w.judge_at)}` : null,
      w.reason ? h('span', { 'data-wave-reason': '' }, w.reason) : null,
      w.resumed_by ? h('span', {}, ` — resumed by ${w.resumed_by}`) : null,
    ].filter(Boolean) },
  ], ws, { rowAttrs: (w) => ({ 'data-wave': String(w.wave_index ?? 0) }) }));
}
