// Entry point: signs in from a "#token=" fragment, wires the header (menu,
// live indicator, logout) and starts the router.
import { takeFragmentToken, probeOpen, signedIn, clearToken, token } from './auth.js';
import { setUnauthorizedHandler, setForbiddenHandler } from './api.js';
import { loadMe, forgetMe } from './access.js';
import * as live from './live.js';
import { navigate, start } from './router.js';
import { refreshTimes } from './fmt.js';

takeFragmentToken();
await probeOpen();

// A 401 anywhere means the token is gone or wrong: back to Login, with the
// API's reason, and back to this page after signing in again.
setUnauthorizedHandler((reason) => {
  live.stop();
  forgetMe();
  if (location.pathname === '/login') return;
  const q = new URLSearchParams({ next: location.pathname + location.search, reason });
  navigate('/login?' + q, { replace: true });
});

const toggle = document.getElementById('nav-toggle');
toggle.addEventListener('click', () => {
  const open = document.body.classList.toggle('nav-open');
  toggle.setAttribute('aria-expanded', String(open));
});
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && document.body.classList.contains('nav-open')) {
    document.body.classList.remove('nav-open');
    toggle.setAttribute('aria-expanded', 'false');
    toggle.focus();
  }
});

const logout = document.getElementById('logout');
// An open backend (auth disabled) has nothing to log out of.
logout.hidden = signedIn() && token() === '';
logout.addEventListener('click', () => {
  clearToken();
  forgetMe();
  live.stop();
  navigate('/login');
});

const LIVE_TEXT = {
  live: 'Live', connecting: 'Connecting…', reconnecting: 'Reconnecting…', polling: 'Polling', off: '',
};
const liveEl = document.getElementById('live');
live.onState((s) => {
  liveEl.textContent = LIVE_TEXT[s] ?? s;
  liveEl.title = s === 'polling' ? 'Event stream unavailable; refreshing every few seconds' : '';
});

// Relative times ("2 minutes ago") age while a page stays open.
setInterval(() => refreshTimes(), 15000);

// Who is signed in decides what each page enables; known before the first
// page draws.
setForbiddenHandler(() => loadMe());
if (signedIn()) await loadMe();
// Asked again: a refused token (401 from /api/me) was dropped meanwhile.
if (signedIn()) live.start();
start();
