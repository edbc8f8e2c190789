// Operators: who may use the API, and with which role. An admin creates an
// operator (its token is shown here once: the server keeps only a hash),
// changes roles, replaces a lost token and revokes one; a change applies
// to the operator's next request. Everyone else sees the list only.
import { h, heading, table, errorCard, notice, field, select, busy, badge, section } from '../dom.js';
import { post, patch, del, list, seg } from '../api.js';
import { time } from '../fmt.js';
import { panel } from '../views.js';
import { confirmButton } from '../confirm.js';
import { guard, deniedNote, current } from '../access.js';
import { issuedToken } from '../secret.js';

const ROLES = ['viewer', 'operator', 'admin'];

export default async function operators(ctx) {
  ctx.title('Operators');
  const msg = h('div', { 'aria-live': 'polite' });
  const me = current();
  const body = panel(ctx, null, ['audit'], async () => {
    const { items } = await list('/api/operators', { limit: 1000 });
    return table([
      { label: 'Name', cell: (o) => h('span', {}, h('strong', {}, o.name), me && me.name === o.name ? h('span', { class: 'muted' }, ' (you)') : null) },
      { label: 'Role', cell: (o) => (o.revoked_at ? badge(o.role) : roleSelect(o, msg, body)) },
      { label: 'Created', cell: (o) => h('span', {}, time(o.created_at), h('span', { class: 'muted' }, ' by ' + o.created_by)) },
      { label: 'Status', cell: (o) => (o.revoked_at
        ? h('span', {}, badge('revoked', 'bad'), ' ', time(o.revoked_at), o.revoked_by ? h('span', { class: 'muted' }, ' by ' + o.revoked_by) : null)
        : badge('active', 'ok')) },
      { label: 'Actions', cell: (o) => (o.revoked_at ? '—' : h('span', { class: 'actions' },
        guard(confirmButton('New token', `Replace ${o.name}'s token?`, () => act(msg, post('/api/operators/' + seg(o.name) + '/token'), (r) => {
          msg.replaceChildren(issued(r, `New token for ${r.name}; the old one no longer works.`));
          body.load();
        }), { danger: false }), 'POST /api/operators/{name}/token'),
        guard(confirmButton('Revoke', `Revoke ${o.name}?`, () => act(msg, del('/api/operators/' + seg(o.name)), () => {
          msg.replaceChildren(notice(`Revoked ${o.name}: their token no longer works.`));
          body.load();
        })), 'DELETE /api/operators/{name}'))) },
    ], items, { empty: 'No operators yet.', caption: 'Operators' });
  }, { wait: 1000 });
  ctx.root.append(heading('Operators'),
    h('p', { class: 'muted' }, 'viewer: reads everything · operator: also jobs, exec, schedules, groups, config, run · admin: also releases, operators and script revocation.'),
    createForm(msg, () => body.load()), msg, body);
  await body.ready;
}

// act runs one change and shows its failure (the API's own message).
async function act(msg, p, done) {
  msg.replaceChildren();
  try {
    done(await p);
  } catch (e) {
    msg.replaceChildren(errorCard(e));
  }
}

function roleSelect(o, msg, body) {
  const sel = select(ROLES, { name: 'role', 'aria-label': `Role of ${o.name}` }, o.role);
  sel.addEventListener('change', () => act(msg, busy(sel, patch('/api/operators/' + seg(o.name), { role: sel.value })), (r) => {
    msg.replaceChildren(notice(`${r.name} is now ${r.role}.`));
    body.load();
  }).then(() => {
    if (msg.querySelector('[role=alert]')) sel.value = o.role;
  }));
  return guard(sel, 'PATCH /api/operators/{name}');
}

function createForm(msg, reload) {
  const route = 'POST /api/operators';
  const name = guard(h('input', { name: 'name', required: true, autocomplete: 'off', pattern: '[A-Za-z0-9_=\\-]+', maxlength: 64, placeholder: 'e.g. alice' }), route);
  const role = guard(select(ROLES, { name: 'role' }, 'viewer'), route);
  const submit = guard(h('button', { class: 'btn primary', type: 'submit' }, 'Create'), route);
  const onsubmit = async (e) => {
    e.preventDefault();
    await act(msg, busy(submit, post('/api/operators', { name: name.value.trim(), role: role.value })), (r) => {
      msg.replaceChildren(issued(r, `Created ${r.name} (${r.role}).`));
      e.target.reset();
      reload();
    });
  };
  return section('New operator', h('form', { class: 'form', onsubmit },
    h('div', { class: 'row' }, field('Name', name, 'letters, digits, _ = -; shown in the audit trail'), field('Role', role)),
    deniedNote(route, 'create operators'), h('div', {}, submit)));
}

// issued shows a token the one time it exists outside its owner's hands.
function issued(r, text) {
  return issuedToken(r.token, r.name, text);
}
