// Inventory: the probes (jobs with an inventory hint), a table per probe
// with its summary columns, and every probe's facts for one PC.
import { h, heading, table, link, errorCard } from '../dom.js';
import { get, seg } from '../api.js';
import { time } from '../fmt.js';
import { panel, agentLink } from '../views.js';
import { factsView, fieldColumns } from '../facts.js';

export default async function inventory(ctx) {
  ctx.title('Inventory');
  const probes = panel(ctx, 'Probes', ['result'], async () => {
    const jobs = await get('/api/inventory/jobs', { signal: ctx.signal });
    return table([
      { label: 'Probe', cell: (j) => link('/inventory/job/' + seg(j.manifest_id), j.manifest_id) },
      { label: 'Description', cell: (j) => j.description || '—' },
      { label: 'Summary columns', cell: (j) => columnsOf(j).map((f) => f.label || f.field).join(', ') || '—' },
    ], jobs || [], { empty: 'No inventory jobs. A job with an "inventory:" section in its manifest becomes a probe.' });
  }, { wait: 3000 });
  ctx.root.append(heading('Inventory'), probes);
  await probes.ready;
}

const columnsOf = (j) => (j.summary && j.summary.length ? j.summary : j.display || []);

export async function byJob(ctx) {
  const job = ctx.params.job;
  ctx.title(`Inventory · ${job}`);
  const body = panel(ctx, null, ['result'], async () => {
    const r = await get('/api/inventory/by-job/' + seg(job), { signal: ctx.signal });
    const cols = fieldColumns(columnsOf(r));
    return table([
      { label: 'PC', cell: (row) => link('/inventory/pc/' + seg(row.pc_id), row.pc_id) },
      ...cols.map((c) => ({ ...c, cell: (row) => c.cell(row.facts) })),
      { label: 'Collected', cell: (row) => time(row.collected_at) },
    ], r.rows || [], { empty: 'No PC has reported this probe yet.', caption: `Inventory ${job}` });
  }, { wait: 2000 });
  ctx.root.append(heading(`Inventory: ${job}`, link('/inventory', 'All probes'), link('/exec?job=' + encodeURIComponent(job), 'Collect now')), body);
  await body.ready;
}

export async function byPc(ctx) {
  const pc = ctx.params.pc;
  ctx.title(`Inventory · ${pc}`);
  const body = h('div', {});
  const load = async () => {
    try {
      const rows = await get('/api/inventory/' + seg(pc), { signal: ctx.signal });
      body.replaceChildren(...(rows && rows.length ? rows.map((r) => h('section', { class: 'card' },
        h('h2', {}, link('/inventory/job/' + seg(r.job_id), r.job_id)),
        h('p', { class: 'muted' }, 'Collected ', time(r.collected_at)),
        factsView(r.facts, r.display))) : [h('p', { class: 'muted' }, 'No inventory collected from this PC yet.')]));
    } catch (e) {
      if (e.name !== 'AbortError') body.replaceChildren(errorCard(e));
    }
  };
  ctx.root.append(heading(`Inventory: ${pc}`, h('span', {}, 'PC ', agentLink(pc))), body);
  await load();
  ctx.live(['result'], load, 2000);
}
