// Jobs: the catalog, with exec/edit/delete. Deleting a job a schedule still
// uses answers 409 with the schedule's name; that message is shown as is.
import { h, heading, table, badge, link, errorCard, notice } from '../dom.js';
import { get, del, seg } from '../api.js';
import { panel } from '../views.js';
import { confirmButton } from '../confirm.js';
import { guard } from '../access.js';

export default async function jobs(ctx) {
  ctx.title('Jobs');
  const msg = h('div', { 'aria-live': 'polite' });
  const catalog = panel(ctx, null, ['audit'], async () => {
    const items = await get('/api/jobs', { signal: ctx.signal });
    return table([
      { label: 'ID', cell: (j) => link('/jobs/' + seg(j.id), j.id) },
      { label: 'Version', cell: (j) => j.version },
      { label: 'Description', cell: (j) => j.description || '—' },
      { label: 'Shell', cell: (j) => j.execute?.shell || '—' },
      { label: 'Timeout', cell: (j) => j.execute?.timeout || '—' },
      { label: 'Kind', cell: (j) => (j.inventory ? badge('inventory', 'info') : badge('script')) },
      { label: 'Actions', cell: (j) => h('span', { class: 'actions' },
        guard(link('/exec?job=' + encodeURIComponent(j.id), 'Exec'), 'POST /api/exec/{job_id}'),
        link('/jobs/' + seg(j.id), 'Edit'),
        guard(confirmButton('Delete', `Delete ${j.id}?`, async () => {
          msg.replaceChildren();
          try {
            await del('/api/jobs/' + seg(j.id));
            msg.replaceChildren(notice(`Deleted job ${j.id}.`));
            catalog.load();
          } catch (e) {
            msg.replaceChildren(errorCard(e, `Cannot delete ${j.id}`));
          }
        }), 'DELETE /api/jobs/{id}')) },
    ], items || [], { empty: 'The catalog is empty. Create a job from YAML.', caption: 'Jobs' });
  }, { wait: 1000 });
  ctx.root.append(heading('Jobs', guard(h('a', { class: 'btn primary', href: '/jobs/new' }, 'New job'), 'POST /api/jobs')), msg, catalog);
  await catalog.ready;
}
