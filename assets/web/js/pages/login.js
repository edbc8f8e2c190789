// Login: the operator pastes the API token (the backend logs a URL carrying
// it at first start, and keeps it in <data-dir>/admin.token).
import { h, errorCard, notice } from '../dom.js';
import { check, setToken, signedIn } from '../auth.js';
import * as live from '../live.js';
import { loadMe } from '../access.js';

export default function login(ctx) {
  ctx.title('Log in');
  const next = safeNext(ctx.query.get('next'));
  if (signedIn()) {
    ctx.navigate(next, { replace: true });
    return;
  }
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'current-password', required: true, spellcheck: 'false' });
  const msg = h('div', { 'aria-live': 'polite' });
  const reason = ctx.query.get('reason');
  if (reason) msg.append(errorCard({ message: reason }, 'Signed out'));
  const submit = h('button', { class: 'btn primary', type: 'submit' }, 'Log in');
  const form = h('form', { class: 'form', onsubmit: onSubmit },
    h('div', { class: 'field' },
      h('label', { for: 'token' }, 'API token'), input,
      h('small', { class: 'hint' }, 'Your operator token (kanade_op_…, from an admin), or the admin token: printed in the backend log at first start (…/#token=…) and kept in <data-dir>/admin.token.')),
    h('div', {}, submit));

  async function onSubmit(e) {
    e.preventDefault();
    const t = input.value.trim();
    if (!t) return;
    submit.disabled = true;
    msg.replaceChildren(notice('Checking…', 'warn'));
    try {
      const why = await check(t);
      if (why) {
        msg.replaceChildren(errorCard({ message: why, status: 401 }, 'Token refused'));
        input.focus();
        return;
      }
      setToken(t);
      await loadMe();
      document.getElementById('logout').hidden = false;
      live.start();
      ctx.navigate(next, { replace: true });
    } catch (err) {
      msg.replaceChildren(errorCard(err));
    } finally {
      submit.disabled = false;
    }
  }

  ctx.root.append(h('div', { class: 'login card' }, h('h1', {}, 'kanade'), h('p', { class: 'muted' }, 'Sign in to the fleet dashboard.'), msg, form));
  input.focus();
}

// Only a local dashboard path may be the target after login, never another
// site or the API.
function safeNext(n) {
  return n && n.startsWith('/') && !n.startsWith('//') && !n.startsWith('/login') && !n.startsWith('/api') ? n : '/';
}
