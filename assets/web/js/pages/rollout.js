// Rollout: the agent releases in the object store, uploading a new one, and
// rolling a version out to everyone, a group or one PC.
import { h, heading, section, table, errorCard, notice, field, select, busy, link } from '../dom.js';
import { get, post, del, seg } from '../api.js';
import { bytes, time } from '../fmt.js';
import { panel } from '../views.js';
import { confirmButton } from '../confirm.js';
import { guard, deniedNote } from '../access.js';

export default async function rollout(ctx) {
  ctx.title('Rollout');
  const msg = h('div', { 'aria-live': 'polite' });
  const version = select([], { name: 'version', required: true });
  let releases = [];
  const releasesPanel = panel(ctx, 'Releases', ['audit'], async () => {
    releases = (await get('/api/agents/releases', { signal: ctx.signal })) || [];
    const keep = version.value;
    version.replaceChildren(...releases.map((r) => h('option', { value: r.version, selected: r.version === keep }, r.version)));
    return table([
      { label: 'Version', cell: (r) => h('code', {}, r.version) },
      { label: 'Size', class: 'num', cell: (r) => bytes(r.size) },
      { label: 'Digest', cell: (r) => h('code', { title: r.digest }, String(r.digest || '').slice(0, 18) + (r.digest && r.digest.length > 18 ? '…' : '')) },
      { label: 'Uploaded', cell: (r) => time(r.modified) },
      { label: 'Actions', cell: (r) => guard(confirmButton('Delete', `Delete ${r.version}?`, async () => {
        msg.replaceChildren();
        try {
          await del('/api/agents/releases/' + seg(r.version));
          msg.replaceChildren(notice(`Deleted release ${r.version}.`));
          releasesPanel.load();
        } catch (e) {
          msg.replaceChildren(errorCard(e, `Cannot delete ${r.version}`));
        }
      }), 'DELETE /api/agents/releases/{version}') },
    ], releases, { empty: 'No agent release uploaded yet.', caption: 'Agent releases' });
  }, { wait: 1000 });

  ctx.root.append(heading('Agent rollout'), msg, releasesPanel, h('div', { class: 'cols' }, uploadForm(msg, () => releasesPanel.load()), rolloutForm(msg, version)));
  await releasesPanel.ready;
}

function uploadForm(msg, reload) {
  const file = h('input', { type: 'file', name: 'file', required: true });
  const version = h('input', { name: 'version', autocomplete: 'off', placeholder: 'read from the binary when empty' });
  const submit = guard(h('button', { class: 'btn primary', type: 'submit' }, 'Upload'), 'POST /api/agents/publish');
  const onsubmit = async (e) => {
    e.preventDefault();
    const fd = new FormData();
    fd.append('file', file.files[0]);
    if (version.value.trim()) fd.append('version', version.value.trim());
    msg.replaceChildren();
    try {
      const r = await busy(submit, post('/api/agents/publish', fd));
      msg.replaceChildren(notice(`Uploaded release ${(r && r.version) || version.value.trim()}.`));
      e.target.reset();
      reload();
    } catch (err) {
      msg.replaceChildren(errorCard(err, 'Upload failed'));
    }
  };
  return section('Upload a release', h('form', { class: 'form', onsubmit },
    field('Agent executable', file), field('Version', version), deniedNote('POST /api/agents/publish', 'upload releases'), h('div', {}, submit)));
}

function rolloutForm(msg, version) {
  const type = select([['global', 'every agent'], ['group', 'one group'], ['pc', 'one PC']], { name: 'scope' }, 'global');
  const value = h('input', { name: 'scope_value', autocomplete: 'off', disabled: true });
  const jitter = h('input', { name: 'jitter', autocomplete: 'off', placeholder: 'e.g. 30m' });
  type.addEventListener('change', () => {
    value.disabled = type.value === 'global';
    value.required = !value.disabled;
  });
  const submit = guard(h('button', { class: 'btn primary', type: 'submit' }, 'Roll out'), 'POST /api/agents/rollout');
  const onsubmit = async (e) => {
    e.preventDefault();
    const body = { version: version.value, scope: { type: type.value } };
    if (type.value !== 'global') body.scope.value = value.value.trim();
    if (jitter.value.trim()) body.jitter = jitter.value.trim();
    msg.replaceChildren();
    try {
      const r = await busy(submit, post('/api/agents/rollout', body));
      msg.replaceChildren(notice(h('span', {}, `Rolling out ${r.version} to ${r.scope_label || r.scope_key}`,
        r.jitter ? ` (jitter ${r.jitter})` : '', '. ', link('/config', 'See config scopes'))));
    } catch (err) {
      msg.replaceChildren(errorCard(err, 'Rollout failed'));
    }
  };
  return section('Roll out', h('form', { class: 'form', onsubmit },
    field('Version', version), h('div', { class: 'row' }, field('Scope', type), field('Group or PC', value)),
    field('Jitter', jitter, 'agents upgrade at a random time within this'), deniedNote('POST /api/agents/rollout', 'roll out releases'), h('div', {}, submit)));
}
