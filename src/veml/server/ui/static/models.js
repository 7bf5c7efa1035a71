/* VeML web UI: the models view, with version compare (as MLflow's "compare runs").
 *
 * Every model version with its training versions under it; tick two or more (mouse, or Tab and
 * Space) and GET /models/compare puts their model spec, training parameters and final metrics side
 * by side, the rows where they differ highlighted ("only differences" hides the others).  The
 * selection lives in the hash (#/models?compare=4,6,9; #/models/4 starts with version 4), so a
 * comparison can be linked.
 */
import { STALE, api, fmt, h, kindBadge, live, paramsText, table, td, versionsOf, vlink } from './core.js';
import { setQuery } from './grid.js';

const SECTION_TITLES = { model: 'Model', training: 'Training', metrics: 'Final metrics' };
const VERSION_KEYS = new Set(['data', 'test', 'model', 'init_from']);  // training rows whose values are version ids

const lineageLink = (id) => h('a', { href: `#/lineage/${id}`, class: 'lineage-link', 'data-id': id }, 'lineage');

/** A compared value: its JSON in data-value; a version id as a link to that version. */
function valueCell(key, x) {
  const v = x === undefined ? null : x;
  const shown = VERSION_KEYS.has(key) && typeof v === 'number' ? vlink(v) : fmt(v);
  return h('td', { class: typeof v === 'number' && !VERSION_KEYS.has(key) ? 'num' : '', 'data-value': JSON.stringify(v) }, shown);
}

function compareTable(c, onlyDiff) {
  const head = h('tr', {}, h('th', {}, ''), c.versions.map((v) => h('th', { 'data-id': v.id },
    kindBadge(v.kind), ' ', vlink(v.id), ' ', lineageLink(v.id))));
  const body = [];
  for (const section of Object.keys(SECTION_TITLES)) {
    const rows = c.rows.filter((r) => r.section === section && (!onlyDiff || r.differs));
    if (!rows.length) continue;
    body.push(h('tr', { class: 'section' }, h('th', { colspan: c.versions.length + 1 }, SECTION_TITLES[section])));
    for (const r of rows) {
      body.push(h('tr', { class: r.differs ? 'diff' : '', 'data-section': r.section, 'data-key': r.key },
        td(r.key), r.values.map((x) => valueCell(r.key, x))));
    }
  }
  return h('table', { id: 'compare-table' }, h('thead', {}, head), h('tbody', {}, body));
}

export async function pageModels(root, ref, gen, q) {
  const models = versionsOf('model');
  const runs = versionsOf('training');
  const n = (k, what) => `${k} ${what} version${k === 1 ? '' : 's'}`;
  root.append(h('h1', {}, `Models (${n(models.length, 'model')}, ${n(runs.length, 'training')})`));
  if (!models.length && !runs.length) { root.append(h('p', { class: 'muted' }, 'No model version yet (veml model add …).')); return; }
  const wanted = new Set((q.get('compare') || '').split(',').filter((x) => /^\d+$/.test(x)).map(Number));
  if (ref && /^\d+$/.test(ref)) wanted.add(Number(ref));
  const boxes = [];
  const box = (v) => {
    const b = h('input', { type: 'checkbox', class: 'pick', value: v.id, id: `pick-${v.id}`, 'aria-label': `compare ${v.name}` });
    b.checked = wanted.has(v.id);
    boxes.push(b);
    return b;
  };
  const runRow = (t, m) => h('tr', { class: 'run', 'data-id': t.id, 'data-model': m ? m.id : '' }, td(box(t)),
    td(h('span', { class: 'indent' }, '↳ ', kindBadge('training'), ' ', vlink(t.id))), td(t.task || (m && m.task) || '–'),
    td(t.data !== null && t.data !== undefined ? ['data ', vlink(t.data)] : '–'), td(t.test !== null && t.test !== undefined ? ['test ', vlink(t.test)] : '–'),
    td(paramsText(t.params)), td(t.created_at), td(lineageLink(t.id)));
  const rows = [];
  for (const m of models) {
    rows.push(h('tr', { class: 'model', 'data-id': m.id }, td(box(m)), td([kindBadge('model'), ' ', vlink(m.id)]), td(m.task),
      td(m.architecture), td(m.backbone || '–'), td(paramsText(m.parameters)), td(m.created_at), td(lineageLink(m.id))));
    for (const t of runs.filter((r) => r.model === m.id)) rows.push(runRow(t, m));
  }
  const modelIds = new Set(models.map((m) => m.id));
  const loose = runs.filter((r) => !modelIds.has(r.model));  // runs logged with the SDK that name no model version
  if (loose.length) {
    rows.push(h('tr', { class: 'section' }, h('th', { colspan: 8 }, 'training versions with no model version (logged runs)')));
    for (const t of loose) rows.push(runRow(t, null));
  }
  root.append(h('p', { class: 'muted' }, 'Tick two or more versions (Tab to a box, Space to tick) to compare them side by side.'),
    table(['', 'version', 'task', 'architecture / data', 'backbone / test', 'parameters', 'created', ''], rows, { id: 'models' }));

  const onlyDiff = h('input', { type: 'checkbox', id: 'only-diff' });
  onlyDiff.checked = q.get('diff') === '1';
  const out = h('div', { id: 'model-compare' });
  root.append(h('h2', {}, 'Compare'), h('div', { class: 'controls' }, h('label', {}, onlyDiff, ' only differences'),
    h('span', { class: 'muted', id: 'compare-count' })), out);

  let last = null;
  const remember = () => setQuery({ compare: boxes.filter((b) => b.checked).map((b) => b.value).join(','), diff: onlyDiff.checked ? '1' : '' });
  async function draw() {
    const picked = boxes.filter((b) => b.checked).map((b) => Number(b.value));
    out.dataset.state = 'loading';
    const count = root.querySelector('#compare-count');
    if (picked.length < 2) {
      last = null;
      count.textContent = '';
      out.replaceChildren(h('p', { class: 'muted' }, 'Pick at least two versions.'));
      out.dataset.state = 'ready';
      return;
    }
    const c = await api('/models/compare', { ref: picked.map(String) });
    live(gen);
    if (picked.join(',') !== boxes.filter((b) => b.checked).map((b) => b.value).join(',')) return;  // a newer pick is on its way
    last = c;
    count.textContent = `${c.differing} of ${c.rows.length} rows differ`;
    count.dataset.value = String(c.differing);
    out.replaceChildren(compareTable(c, onlyDiff.checked));
    out.dataset.state = 'ready';
  }
  const redraw = () => draw().catch((err) => {
    if (err === STALE) return;
    out.replaceChildren(h('p', { class: 'error' }, String(err.message || err)));
    out.dataset.state = 'error';
  });
  for (const b of boxes) b.addEventListener('change', () => { remember(); redraw(); });
  onlyDiff.addEventListener('change', () => {
    remember();
    if (last) out.replaceChildren(compareTable(last, onlyDiff.checked));
  });
  await draw();
}
