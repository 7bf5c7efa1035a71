/* VeML web UI: the paged sample grid of a data version (and of a prediction version's outcomes).
 *
 * The server pages, filters (the `veml data filter --where` language) and sorts; the page shows one
 * page at a time and keeps where/sort/order/offset in the hash (#/data/5?where=...&sort=a), so a
 * view can be linked.  Keyboard: arrow keys move the selection, Enter opens the sample, Esc
 * closes it, PageDown / PageUp turn the page.
 */
import { api, h, main, num, td, tdNum, tile, fmt, labelsOf } from './core.js';
import { openDetail } from './detail.js';

export const GRID_LIMIT = 48;

/** Replace the hash's query without a new route (no reload); the route attribute follows. */
export function setQuery(params) {
  const [path] = location.hash.split('?');
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v !== null && v !== undefined && v !== 0) q.set(k, v);
  const hash = q.toString() ? `${path}?${q}` : path;
  history.replaceState(null, '', hash);
  main.dataset.route = hash;
}

/** Columns a sort can name: the sample's own, its typed columns, and its annotation tables'. */
function sortColumns(v) {
  const cols = ['data_id', 'file_name'];
  if (v.modality === 'image') cols.push('width', 'height');
  cols.push(...Object.keys(v.columns || {}));
  const tables = v.annotation_tables || [];
  if (tables.includes('labels') || tables.includes('boxes')) cols.push('category');
  if (tables.includes('boxes')) cols.push('area');
  if (tables.includes('labels') && v.modality !== 'image') cols.push('value');
  if (tables.includes('series')) cols.push('sensor', 't0', 'mean');
  return [...new Set(cols)];
}

/**
 * A keyboard-navigable list of items (tiles or table rows) inside ``box``: arrows move, Enter opens.
 * ``columns()`` says how many items a row holds (for up/down); ``open(i)`` opens item i.
 */
export function keyboard(box, itemsOf, columns, open, turn) {
  box.tabIndex = 0;
  const select = (i, focus) => {
    const items = itemsOf();
    if (!items.length) return;
    const k = Math.max(0, Math.min(items.length - 1, i));
    items.forEach((el, j) => el.classList.toggle('selected', j === k));
    box.dataset.selected = String(k);
    box.dataset.selectedId = items[k].dataset.id;
    if (focus !== false) items[k].scrollIntoView({ block: 'nearest' });
  };
  box.addEventListener('keydown', (e) => {
    if (document.getElementById('detail')) return;  // the open sample has the keyboard
    const at = Number(box.dataset.selected || 0);
    const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(), ArrowUp: -columns() }[e.key];
    if (step !== undefined) { e.preventDefault(); select(at + step); }
    else if (e.key === 'Enter') { e.preventDefault(); if (itemsOf().length) open(at); }
    else if (e.key === 'PageDown' && turn) { e.preventDefault(); turn(1); }
    else if (e.key === 'PageUp' && turn) { e.preventDefault(); turn(-1); }
  });
  return select;
}

/** How many tiles one row of a CSS grid holds (for ArrowUp / ArrowDown). */
export function perRow(items) {
  if (items.length < 2) return 1;
  const top = items[0].offsetTop;
  const n = items.findIndex((el) => el.offsetTop !== top);
  return n < 0 ? items.length : n;
}

/** The grid over a whole data version, paged by the server. ``q``: the hash's query (URLSearchParams). */
export async function sampleGrid(root, v, q) {
  const st = { where: q.get('where') || '', sort: q.get('sort') || 'data_id', order: q.get('order') === 'desc' ? 'desc' : 'asc', offset: Math.max(0, Number(q.get('offset')) || 0) };
  const image = v.modality === 'image';
  const limit = Math.min(500, Math.max(1, Number(q.get('limit')) || GRID_LIMIT));
  const whereIn = h('input', { type: 'search', id: 'where', size: 56, value: st.where, spellcheck: 'false',
    placeholder: "filter, as veml data filter --where: category = 'car' AND width >= 64" });
  const apply = h('button', { type: 'button', id: 'where-apply' }, 'filter');
  const sortSel = h('select', { id: 'sort', title: 'sort by' }, sortColumns(v).map((c) => h('option', { value: c, selected: c === st.sort }, c)));
  const orderSel = h('select', { id: 'order' }, h('option', { value: 'asc', selected: st.order === 'asc' }, 'ascending'),
    h('option', { value: 'desc', selected: st.order === 'desc' }, 'descending'));
  const prev = h('button', { type: 'button', id: 'prev' }, '← previous');
  const next = h('button', { type: 'button', id: 'next' }, 'next →');
  const info = h('span', { id: 'page-info', class: 'muted' });
  const problem = h('span', { id: 'where-error', class: 'error' });
  root.append(h('div', { class: 'controls' }, whereIn, apply, h('label', {}, 'sort ', sortSel), orderSel),
    h('div', { class: 'controls' }, prev, next, info, problem));
  const grid = h('div', { id: 'samples', class: image ? 'grid' : '', 'data-state': 'loading' });
  root.append(grid, h('p', { class: 'muted' }, 'Arrow keys move, Enter opens a sample, Esc closes it, PageDown / PageUp turn the page.'));
  let rows = [];
  let total = 0;
  let seq = 0;

  const items = () => [...grid.querySelectorAll(image ? '.tile' : 'tbody tr')];
  const open = (i) => {
    select(i, false);
    const r = rows[i];
    openDetail(v, r.data_id, () => items()[i] && grid.focus());
  };
  const turn = (d) => {
    const to = st.offset + d * limit;
    if (to < 0 || to >= total) return;
    st.offset = to;
    load();
  };
  const select = keyboard(grid, items, () => (image ? perRow(items()) : 1), open, turn);

  function render() {
    grid.replaceChildren();
    if (image) {
      rows.forEach((r, i) => {
        const caption = `${r.file_name || r.data_id} · ${Object.values(r.meta || {}).join(' ')}`;
        const t = tile(v.id, r, caption);
        t.addEventListener('click', () => open(i));
        grid.append(t);
      });
    } else {
      const cols = Object.keys(v.columns || {});
      const head = ['data_id', 'file_name', ...cols].map((c) => h('th', { 'data-sort': c, class: `sortable ${c === st.sort ? st.order : ''}`,
        onclick: () => { st.order = st.sort === c && st.order === 'asc' ? 'desc' : 'asc'; st.sort = c; sortSel.value = c; orderSel.value = st.order; st.offset = 0; load(); } }, c));
      grid.append(h('table', {}, h('thead', {}, h('tr', {}, head, h('th', {}, 'label'))), h('tbody', {},
        rows.map((r, i) => h('tr', { 'data-id': r.data_id, onclick: () => open(i) }, tdNum(r.data_id, 'data_id'), td(r.file_name || ''),
          cols.map((c) => (typeof (r.meta || {})[c] === 'number' ? tdNum(r.meta[c], c) : td(fmt((r.meta || {})[c])))), td(labelsOf(r).join(', ')))))));
    }
    select(0, false);
  }

  async function load() {
    const mine = ++seq;
    grid.dataset.state = 'loading';
    problem.textContent = '';
    setQuery({ where: st.where, sort: st.sort === 'data_id' ? '' : st.sort, order: st.order === 'asc' ? '' : st.order, offset: st.offset, limit: limit === GRID_LIMIT ? '' : limit });
    let p;
    try {
      p = await api(`/data/${v.id}/samples`, { where: st.where || undefined, sort: st.sort, order: st.order, limit, offset: st.offset });
    } catch (err) {
      if (mine !== seq) return;
      problem.textContent = String(err.message || err);
      grid.dataset.state = 'error';
      return;
    }
    if (mine !== seq) return;
    rows = p.items;
    total = p.total;
    render();
    const last = st.offset + rows.length;
    info.replaceChildren(num(p.total, 'matching'), ` of ${fmt(v.samples)} samples match · showing `,
      num(rows.length ? st.offset + 1 : 0, 'first'), '–', num(last, 'last'));
    prev.disabled = st.offset <= 0;
    next.disabled = last >= total;
    grid.dataset.state = 'ready';
  }

  const refilter = () => { st.where = whereIn.value.trim(); st.offset = 0; load(); };
  apply.addEventListener('click', refilter);
  whereIn.addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); refilter(); } });
  sortSel.addEventListener('change', () => { st.sort = sortSel.value; st.offset = 0; load(); });
  orderSel.addEventListener('change', () => { st.order = orderSel.value; st.offset = 0; load(); });
  prev.addEventListener('click', () => turn(-1));
  next.addEventListener('click', () => turn(1));
  await load();
}
