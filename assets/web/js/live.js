// Live updates from /api/events. Pages subscribe to kinds of change
// ("agent", "result", "exec", "schedule", "audit") and re-read what they
// show; the events only say that something changed, so a missed or
// coalesced event costs nothing but a slightly later refresh.
//
// When the stream is unavailable (backend restarting, a proxy that buffers
// SSE), subscribers are polled instead, so no page ever needs a manual
// reload; the header says which of the two is in effect.
import { token } from './auth.js';

const KINDS = ['agent', 'result', 'exec', 'schedule', 'audit'];
// Server event names mapped to the kinds pages subscribe to. Several
// spellings are accepted so a renamed event does not silently stop updates.
const EVENT_KINDS = {
  agent: 'agent', agents: 'agent', heartbeat: 'agent', agents_seen: 'agent',
  result: 'result', results: 'result', results_projected: 'result',
  exec: 'exec', execution: 'exec', exec_progress: 'exec', exec_progressed: 'exec',
  schedule: 'schedule', schedule_tick: 'schedule', schedule_ticked: 'schedule',
  audit: 'audit', audit_projected: 'audit',
};
const POLL_MS = 5000;
const RETRY_MAX_MS = 30000;

const subs = new Set();
let es = null;
let pollTimer = null;
let retryTimer = null;
let retryMs = 2000;
let running = false;
let state = 'off';
const stateListeners = new Set();

export function onState(f) {
  stateListeners.add(f);
  f(state);
}

function setState(s) {
  state = s;
  document.documentElement.dataset.live = s;
  for (const f of stateListeners) f(s);
}

// subscribe calls f(kind, data) for events of the given kinds, and on every
// poll while the stream is down. It returns the unsubscribe function.
export function subscribe(kinds, f) {
  const s = { kinds: new Set(kinds), f };
  subs.add(s);
  return () => subs.delete(s);
}

function dispatch(kind, data) {
  for (const s of [...subs]) {
    if (kind === 'poll' || s.kinds.has(kind)) s.f(kind, data);
  }
}

export function start() {
  if (running) return;
  running = true;
  connect();
}

export function stop() {
  running = false;
  if (es) es.close();
  es = null;
  clearTimeout(retryTimer);
  stopPolling();
  setState('off');
}

function connect() {
  if (!running) return;
  const t = token();
  const url = t ? '/api/events?access_token=' + encodeURIComponent(t) : '/api/events';
  setState('connecting');
  es = new EventSource(url);
  es.onopen = () => {
    retryMs = 2000;
    stopPolling();
    setState('live');
    // Whatever happened while disconnected is unknown: refresh everything.
    dispatch('poll', null);
  };
  es.onmessage = (e) => handle('message', e.data);
  for (const name of Object.keys(EVENT_KINDS)) {
    es.addEventListener(name, (e) => handle(name, e.data));
  }
  es.onerror = () => {
    // EventSource retries by itself after a dropped stream (readyState
    // CONNECTING), but gives up for good on an HTTP error (CLOSED): then
    // poll and retry later ourselves.
    startPolling();
    if (es.readyState === EventSource.CLOSED) {
      es = null;
      setState('polling');
      clearTimeout(retryTimer);
      retryTimer = setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    } else {
      setState('reconnecting');
    }
  };
}

function handle(name, raw) {
  let data = null;
  try {
    data = raw ? JSON.parse(raw) : null;
  } catch {
    data = raw;
  }
  let kind = EVENT_KINDS[name];
  if (!kind && data && typeof data === 'object') {
    kind = EVENT_KINDS[data.type] || EVENT_KINDS[data.kind];
  }
  if (kind && KINDS.includes(kind)) dispatch(kind, data);
}

function startPolling() {
  if (pollTimer) return;
  pollTimer = setInterval(() => dispatch('poll', null), POLL_MS);
}

function stopPolling() {
  clearInterval(pollTimer);
  pollTimer = null;
}
