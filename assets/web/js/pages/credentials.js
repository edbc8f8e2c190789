// Agent credentials: the NATS tokens of one PC (on its agent page) and the
// kitting page, which mints them in bulk and makes enrollment tokens for
// PCs not known yet. A token is shown once; the lists never show one.
import { h, heading, table, errorCard, notice, field, busy, badge, section, csv, button } from '../dom.js';
import { post, del, list, seg } from '../api.js';
import { time, number } from '../fmt.js';
import { panel } from '../views.js';
import { confirmButton } from '../confirm.js';
import { guard, deniedNote } from '../access.js';
import { issuedToken, download } from '../secret.js';

const STATE_KINDS = { active: 'ok', pending: 'info', expired: 'warn', revoked: 'bad' };

function stateBadge(c) {
  return badge(c.state, STATE_KINDS[c.state] || '');
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

function disconnected(r) {
  const n = r.disconnected || 0;
  return n === 0 ? 'No live connection to end.' : `${n} live connection${n === 1 ? '' : 's'} ended.`;
}

// credentialsPanel lists pcID's credentials, mints one (shown once) and
// revokes one or all of them; a revocation ends the PC's connection.
export function credentialsPanel(ctx, pcID) {
  const base = '/api/agents/' + seg(pcID) + '/credentials';
  const msg = h('div', { 'aria-live': 'polite' });
  const rows = h('div', {});
  const revoke = (id, question, done) => guard(confirmButton(id === 'all' ? 'Revoke all' : 'Revoke', question,
    () => act(msg, del(base + '/' + seg(id)), (r) => {
      msg.replaceChildren(notice(`${done(r)} ${disconnected(r)}`));
      load();
    })), 'DELETE /api/agents/{pc_id}/credentials/{id}');
  const render = (items) => table([
    { label: 'Credential', cell: (c) => h('span', {}, h('code', {}, c.id), c.kind === 'enrollment' ? h('span', { class: 'muted' }, ' (enrolled)') : null) },
    { label: 'State', cell: stateBadge },
    { label: 'Created', cell: (c) => h('span', {}, time(c.created_at), h('span', { class: 'muted' }, ' by ' + c.created_by)) },
    { label: 'Last used', cell: (c) => time(c.last_used_at) },
    { label: 'Revoked', cell: (c) => (c.revoked_at ? h('span', {}, time(c.revoked_at), c.revoked_by ? h('span', { class: 'muted' }, ' by ' + c.revoked_by) : null) : '—') },
    { label: 'Actions', cell: (c) => (c.state === 'revoked' ? '—' : revoke(c.id, `Revoke ${c.id}?`, () => `Revoked ${c.id}.`)) },
  ], items, { empty: 'No credential: this PC connects with the shared token, if at all.', caption: 'NATS credentials' });
  const load = async () => {
    try {
      const { items } = await list(base, { limit: 100 });
      if (ctx.alive) rows.replaceChildren(render(items));
    } catch (e) {
      if (e.name !== 'AbortError' && ctx.alive) rows.replaceChildren(errorCard(e));
    }
  };
  const mint = guard(button('New credential', (e) => act(msg, busy(e.currentTarget, post(base)), (r) => {
    msg.replaceChildren(issuedToken(r.token, pcID, `New NATS token for ${pcID}: set it as the agent's NatsToken (or KANADE_NATS_TOKEN).`));
    load();
  }), { class: 'btn primary' }), 'POST /api/agents/{pc_id}/credentials');
  const revokeAll = revoke('all', `Revoke every credential of ${pcID}?`,
    (r) => `Revoked ${r.revoked.length} credential${r.revoked.length === 1 ? '' : 's'}.`);
  ctx.live(['audit'], load, 1000);
  const card = h('section', { class: 'card', 'data-credentials': pcID },
    h('div', { class: 'page-head' }, h('h2', {}, 'NATS credentials'), h('div', { class: 'actions' }, mint, revokeAll)),
    h('p', { class: 'muted' }, 'A credential puts this PC\'s agent on the bus as this PC only: its own Commands, heartbeat and results. Revoking one disconnects the agent at once.'),
    msg, rows);
  card.ready = load();
  return card;
}

// kitting is the page that mints credentials for many PCs at once (a CSV
// pc_id,token for the imaging script) and manages enrollment tokens.
export default async function kitting(ctx) {
  ctx.title('Kitting');
  const enrollments = enrollmentList(ctx);
  ctx.root.append(heading('Kitting'),
    h('p', { class: 'muted' }, 'Each PC gets its own NATS token, so a compromised PC cannot command the fleet. Tokens are shown once; the server keeps only their hashes.'),
    bulkForm(), enrollForm(() => enrollments.load()), enrollments);
  await enrollments.ready;
}

function bulkForm() {
  const route = 'POST /api/agents/credentials';
  const msg = h('div', { 'aria-live': 'polite' });
  const ids = guard(h('textarea', { name: 'pc_ids', rows: 6, required: true, spellcheck: 'false', placeholder: 'PC-0001\nPC-0002\n…' }), route);
  const submit = guard(h('button', { class: 'btn primary', type: 'submit' }, 'Mint credentials'), route);
  const onsubmit = async (e) => {
    e.preventDefault();
    const pcIDs = csv(ids.value);
    await act(msg, busy(submit, post('/api/agents/credentials', { pc_ids: pcIDs })), (text) => {
      const lines = String(text).trim().split('\n').length - 1;
      msg.replaceChildren(h('div', { class: 'card notice ok', role: 'status', 'data-kit': lines },
        h('p', {}, `Minted ${number(lines)} credential${lines === 1 ? '' : 's'}. `, h('strong', {}, 'Download the CSV now: the tokens are shown only this once.')),
        h('p', {}, download(text, 'kanade-credentials.csv', 'Download CSV (pc_id,token)')),
        h('details', {}, h('summary', {}, 'Show'), h('pre', { class: 'output mono' }, text))));
      ids.value = '';
    });
  };
  return section('Credentials for known PCs', h('form', { class: 'form', onsubmit },
    field('PC ids', ids, 'one per line (or separated by commas or spaces), at most 10 000'),
    deniedNote(route, 'mint credentials'), h('div', {}, submit)), msg);
}

function enrollForm(reload) {
  const route = 'POST /api/enrollments';
  const msg = h('div', { 'aria-live': 'polite' });
  const count = guard(h('input', { name: 'count', type: 'number', min: 1, max: 1000, value: 1, required: true }), route);
  const groups = guard(h('input', { name: 'groups', autocomplete: 'off', placeholder: 'e.g. canary, lab' }), route);
  const expires = guard(h('input', { name: 'expires_in', autocomplete: 'off', value: '7d' }), route);
  const submit = guard(h('button', { class: 'btn primary', type: 'submit' }, 'Make enrollment tokens'), route);
  const onsubmit = async (e) => {
    e.preventDefault();
    const req = { count: Number(count.value), groups: csv(groups.value), expires_in: expires.value.trim() };
    await act(msg, busy(submit, post('/api/enrollments', req)), (r) => {
      const list = r.enrollments || [];
      const text = 'id,token\n' + list.map((c) => `${c.id},${c.token}`).join('\n') + '\n';
      msg.replaceChildren(list.length === 1
        ? issuedToken(list[0].token, list[0].id, 'Enrollment token made.')
        : h('div', { class: 'card notice ok', role: 'status', 'data-issued': 'enrollments' },
          h('p', {}, `Made ${list.length} enrollment tokens. `, h('strong', {}, 'Download them now: they are shown only this once.')),
          h('p', {}, download(text, 'kanade-enrollments.csv', 'Download CSV (id,token)'))));
      reload();
    });
  };
  return section('Enrollment tokens for PCs not known yet',
    h('p', { class: 'muted' }, 'An agent presenting an enrollment token becomes the PC it runs as, joins the groups below, and keeps the token as its credential. One PC per token; unused tokens expire.'),
    h('form', { class: 'form', onsubmit },
      h('div', { class: 'row' }, field('How many', count, 'at most 1 000'), field('Groups', groups, 'comma separated, optional'), field('Expires in', expires, 'e.g. 1d, 7d (at most 90d)')),
      deniedNote(route, 'make enrollment tokens'), h('div', {}, submit)), msg);
}

function enrollmentList(ctx) {
  const msg = h('div', { 'aria-live': 'polite' });
  const card = panel(ctx, 'Enrollment tokens', ['audit'], async () => {
    const { items } = await list('/api/enrollments', { limit: 200 });
    return h('div', {}, msg, table([
      { label: 'Token', cell: (c) => h('code', {}, c.id) },
      { label: 'State', cell: stateBadge },
      { label: 'PC', cell: (c) => (c.pc_id ? h('a', { href: '/agents/' + seg(c.pc_id) }, c.pc_id) : h('span', { class: 'muted' }, 'not bound')) },
      { label: 'Groups', cell: (c) => (c.groups && c.groups.length ? c.groups.join(', ') : '—') },
      { label: 'Created', cell: (c) => h('span', {}, time(c.created_at), h('span', { class: 'muted' }, ' by ' + c.created_by)) },
      { label: 'Expires', cell: (c) => (c.pc_id ? '—' : time(c.expires_at)) },
      { label: 'Actions', cell: (c) => (c.state === 'revoked' ? '—' : guard(confirmButton('Revoke', `Revoke ${c.id}?`, () => act(msg, del('/api/enrollments/' + seg(c.id)), (r) => {
        msg.replaceChildren(notice(`Revoked ${c.id}. ${disconnected(r)}`));
        card.load();
      })), 'DELETE /api/enrollments/{id}')) },
    ], items, { empty: 'No enrollment tokens yet.', caption: 'Enrollment tokens' }));
  }, { wait: 1000 });
  return card;
}
