// The API token: kept in localStorage so a new tab stays signed in, read from
// a "#token=…" fragment (the URL the backend logs at first start), and
// dropped on logout or on any 401.

const KEY = 'kanade.token';
// Set when the backend answered without a token (KANADE_AUTH_DISABLE): the
// dashboard then needs no login at all.
let open = false;

export function token() {
  return localStorage.getItem(KEY) || '';
}

export function setToken(t) {
  localStorage.setItem(KEY, t);
}

export function clearToken() {
  localStorage.removeItem(KEY);
}

export function signedIn() {
  return open || token() !== '';
}

// takeFragmentToken signs in from "#token=<t>" and removes the fragment from
// the address bar at once, so the token is not left in history, bookmarks or
// a screen share.
export function takeFragmentToken() {
  const m = location.hash.match(/^#(?:.*&)?token=([^&]*)/);
  if (!m) return false;
  const t = decodeURIComponent(m[1]).trim();
  history.replaceState(history.state, '', location.pathname + location.search);
  if (t === '') return false;
  setToken(t);
  return true;
}

// probeOpen asks the backend whether it needs a token at all; only done when
// none is stored, to skip the login page of an open backend.
export async function probeOpen() {
  if (token() !== '') return false;
  try {
    const r = await fetch('/api/jetstream/status', { headers: { 'X-Kanade-Source': 'dashboard' } });
    open = r.ok;
  } catch {
    open = false;
  }
  return open;
}

// check tells whether t is accepted; it returns the API's 401 message when
// not, so the login form can show exactly why.
export async function check(t) {
  const r = await fetch('/api/jetstream/status', {
    headers: { Authorization: 'Bearer ' + t, 'X-Kanade-Source': 'dashboard' },
  });
  if (r.status !== 401) return '';
  try {
    return (await r.json()).error || 'token refused';
  } catch {
    return 'token refused';
  }
}
