// Live updates from /api/events. Pages subscribe to kinds of change
// ("agent", "result", "exec", "schedule", "audit") and re-read what they
// show; the events only say that something changed, so a missed or
// coalesced event costs nothing but a slightly later refresh.
//
// When the stream is unavailable (backend restarting, a proxy that buffers
// SSE), subscribers are polled instead, so no page ever needs a manual
// reload; the header says which of the two is in effect.
//
// All tabs share one stream. A browser opens at most six HTTP/1.1
// connections to a host and an open stream holds one, so with a stream per
// tab the seventh dashboard tab could not load anything. The tab holding
// the Web Lock "kanade-live" leads: it alone connects (or polls) and
// forwards every event and its state on a BroadcastChannel; the other tabs
// follow. When the leading tab closes, the browser hands the lock to a
// follower, which connects. A browser without Web Locks or BroadcastChannel
// falls back to a stream per tab.
import { token } from './auth.js';

// The server's event names (kindNames in actors/live), which are also the
// kinds pages subscribe to.
const KINDS = ['agent', 'result', 'exec', 'schedule', 'audit'];
const POLL_MS = 5000;
const RETRY_MAX_MS = 30000;

const SHARED = 'kanade-live';

const subs = new Set();
let es = null;
// Sharing between tabs: the channel, whether this tab leads, and how to
// give up the lock (held until releaseLock runs, or waited for until
// lockWait is aborted).
let channel = null;
let leader = false;
let releaseLock = null;
let lockWait = null;
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
  if (leader && channel) channel.postMessage({ type: 'state', state: s });
}

// subscribe calls f(kind, data) for events of the given kinds, and on every
// poll while the stream is down. It returns the unsubscribe function.
export function subscribe(kinds, f) {
  const s = { kinds: new Set(kinds), f };
  subs.add(s);
  return () => subs.delete(s);
}

// dispatch delivers an event here and, from the leading tab, to the others.
function dispatch(kind, data) {
  deliver(kind, data);
  if (leader && channel) channel.postMessage({ type: 'event', kind, data });
}

function deliver(kind, data) {
  for (const s of [...subs]) {
    if (kind === 'poll' || s.kinds.has(kind)) s.f(kind, data);
  }
}

export function start() {
  if (running) return;
  running = true;
  if (!('locks' in navigator) || typeof BroadcastChannel !== 'function') {
    connect();
    return;
  }
  channel = new BroadcastChannel(SHARED);
  channel.onmessage = (e) => fromOtherTab(e.data || {});
  setState('connecting');
  // A leader answers with its state; until then this tab says connecting.
  channel.postMessage({ type: 'hello' });
  lead();
}

// lead waits for the lock; holding it, this tab connects for everyone.
function lead() {
  lockWait = new AbortController();
  navigator.locks
    .request(SHARED, { signal: lockWait.signal }, () => {
      lockWait = null;
      if (!running) return undefined;
      leader = true;
      document.documentElement.dataset.liveLeader = 'true';
      connect();
      return new Promise((resolve) => {
        releaseLock = resolve;
      });
    })
    .catch(() => {}); // aborted by resign while waiting
}

// resign gives the lock (or the wait for it) up and closes the stream.
function resign() {
  if (lockWait) lockWait.abort();
  lockWait = null;
  if (releaseLock) releaseLock();
  releaseLock = null;
  leader = false;
  delete document.documentElement.dataset.liveLeader;
  disconnect();
}

function fromOtherTab(m) {
  if (leader) {
    if (m.type === 'hello') channel.postMessage({ type: 'state', state });
    return;
  }
  if (m.type === 'state') setState(m.state);
  else if (m.type === 'event') deliver(m.kind, m.data);
}

// A page left for another stays in the back/forward cache with whatever it
// holds; the leading tab lets go of the stream and the lock on the way out,
// so another tab takes over, and competes again on the way back.
window.addEventListener('pagehide', () => {
  if (channel) resign();
  else disconnect();
});
window.addEventListener('pageshow', (e) => {
  if (!e.persisted || !running) return;
  if (channel) {
    channel.postMessage({ type: 'hello' });
    lead();
  } else if (!es) {
    connect();
  }
});

export function stop() {
  running = false;
  if (channel) {
    resign();
    channel.close();
    channel = null;
  } else {
    disconnect();
  }
  setState('off');
}

function disconnect() {
  if (es) es.close();
  es = null;
  clearTimeout(retryTimer);
  stopPolling();
}

function connect() {
  if (!running || (channel && !leader)) return;
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
  for (const kind of KINDS) {
    es.addEventListener(kind, (e) => handle(kind, e.data));
  }
  // Events were lost to this stream (older than the server keeps, or a
  // long outage): refresh everything, as after a reconnect.
  es.addEventListener('reset', () => dispatch('poll', null));
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

function handle(kind, raw) {
  let data = null;
  try {
    data = raw ? JSON.parse(raw) : null;
  } catch {
    data = raw;
  }
  dispatch(kind, data);
}

function startPolling() {
  if (pollTimer) return;
  pollTimer = setInterval(() => dispatch('poll', null), POLL_MS);
}

function stopPolling() {
  clearInterval(pollTimer);
  pollTimer = null;
}
