// What the signed-in caller may do. GET /api/me names the caller, their
// role and the server's own route table (route → role), so the dashboard
// disables exactly what the API would refuse with 403, and says why,
// instead of letting a viewer fill in a form only to be told no. The
// server still decides: this only keeps the page honest.
import { get } from './api.js';
import { h } from './dom.js';

let me = null;

// loadMe asks who the token belongs to and redraws the header. A backend
// without /api/me (or one that cannot answer) leaves every control enabled;
// the API's own 403 then says why.
export async function loadMe() {
  try {
    me = await get('/api/me');
  } catch {
    me = null;
  }
  showWho();
  return me;
}

export function forgetMe() {
  me = null;
  showWho();
}

export function current() {
  return me;
}

// showWho puts the caller's name and role in the header and hides the
// navigation entries (data-route) the role may not use.
function showWho() {
  const el = document.getElementById('who');
  if (el) {
    el.replaceChildren(...(me ? [h('span', { class: 'who-name' }, me.name), ' ', h('span', { class: 'badge role' }, me.role)] : []));
    el.hidden = !me;
  }
  for (const item of document.querySelectorAll('#nav [data-route]')) item.hidden = !!denied(item.dataset.route);
}

// denied returns why the caller may not use the route pattern
// ("POST /api/exec/{job_id}"), or '' when they may (or nobody told us).
export function denied(pattern) {
  if (!me || !me.routes) return '';
  const need = me.routes[pattern];
  if (!need) return '';
  const order = me.roles || ['viewer', 'operator', 'admin'];
  const have = order.indexOf(me.role);
  if (have >= 0 && have >= order.indexOf(need)) return '';
  return `requires role ${need}; you are ${me.name} (${me.role})`;
}

// guard makes a control the caller may not use inert, with the reason as
// its tooltip: a button is disabled, a link (which cannot be) is hidden.
export function guard(el, pattern) {
  const why = denied(pattern);
  if (!why) return el;
  if (el.tagName === 'A') {
    el.hidden = true;
  } else {
    el.disabled = true;
    el.title = 'Not allowed: ' + why;
  }
  el.dataset.denied = why;
  return el;
}

// deniedNote is the visible explanation next to a form the caller may not
// submit ("You cannot exec a job: requires role operator; …"), or null.
export function deniedNote(pattern, what) {
  const why = denied(pattern);
  return why ? h('p', { class: 'denied', role: 'note' }, `You cannot ${what}: ${why}.`) : null;
}
