/* VeML web UI: prediction analysis of a classification or detection prediction version.
 *
 * Every sample with its true and predicted class, confidence and loss, paged by the server,
 * sorted by loss or confidence, narrowed to one confusion-matrix cell (#/prediction/7?true=a&pred=b,
 * which the matrix's cells link to); and each class's precision-recall curve.  For a detector: per-class
 * TP/FP/FN at IoU 0.5 whose FP and FN cells open the images behind them, and every image with its counts.
 */
import { PALETTE, api, chart, fmt, h, num, S, table, td, tdNum, tile } from './core.js';
import { GRID_LIMIT, keyboard, perRow, setQuery } from './grid.js';
import { openDetail } from './detail.js';

export const CLASSIFICATION = new Set(['classification', 'tabular-classification']);

/** A cell's link: the outcomes of the samples of true class ``t`` predicted as ``p``. */
export const cellHref = (id, t, p) => `#/prediction/${id}?true=${encodeURIComponent(t)}&pred=${encodeURIComponent(p)}`;

export async function prCurves(root, p) {
  const c = await api(`/predictions/${p.id}/curves`);
  root.append(h('h2', {}, 'Precision-recall per class'));
  const col = h('div', { class: 'col', id: 'pr-curves' });
  root.append(col);
  chart(col, 'pr', {
    type: 'line',
    data: {
      datasets: c.curves.map((k, i) => ({
        label: `${k.class} (AP ${fmt(k.ap, 3)})`, borderColor: PALETTE[i % PALETTE.length], backgroundColor: PALETTE[i % PALETTE.length],
        data: k.recall.map((r, j) => ({ x: r, y: k.precision[j] })), pointRadius: 1.5, tension: 0, stepped: 'after',
      })),
    },
    options: { parsing: true, plugins: { legend: { display: true, position: 'bottom' } },
      scales: { x: { type: 'linear', min: 0, max: 1, title: { display: true, text: 'recall' } }, y: { min: 0, max: 1.05, title: { display: true, text: 'precision' } } } },
  }, 'tall');
  col.append(table(['class', c.task === 'detection' ? 'ground-truth boxes' : 'positives', c.task === 'detection' ? 'AP at IoU 0.5' : 'average precision'], c.curves.map((k) => h('tr', { 'data-class': k.class }, td(k.class), tdNum(k.positives, 'positives'), tdNum(k.ap, 'ap'))), { id: 'ap' }));
}

/** The outcomes grid; ``q`` the hash's query (true, pred, sort, order, offset). */
export async function outcomesGrid(root, p, q) {
  const dataNode = S.byId.get(p.data);
  const image = dataNode && dataNode.modality === 'image';
  const st = { true: q.get('true') || '', pred: q.get('pred') || '', sort: q.get('sort') || 'loss', order: q.get('order') === 'asc' ? 'asc' : 'desc', offset: Math.max(0, Number(q.get('offset')) || 0) };
  const classes = (p.metrics && p.metrics.classes) || [];
  const pick = (id, label, value) => h('select', { id }, h('option', { value: '' }, `any ${label}`), classes.map((c) => h('option', { value: c, selected: c === value }, c)));
  const trueSel = pick('outcome-true', 'true class', st.true);
  const predSel = pick('outcome-pred', 'predicted class', st.pred);
  const sortSel = h('select', { id: 'outcome-sort' }, ['loss', 'confidence', 'data_id'].map((k) => h('option', { value: k, selected: k === st.sort }, k)));
  const orderSel = h('select', { id: 'outcome-order' }, h('option', { value: 'desc', selected: st.order === 'desc' }, 'highest first'),
    h('option', { value: 'asc', selected: st.order === 'asc' }, 'lowest first'));
  const prev = h('button', { type: 'button', id: 'outcome-prev' }, '← previous');
  const next = h('button', { type: 'button', id: 'outcome-next' }, 'next →');
  const info = h('span', { id: 'outcome-info', class: 'muted' });
  const section = h('div', { id: 'outcomes-section' });
  root.append(section);
  section.append(h('h2', {}, 'Every sample'), h('div', { class: 'controls' }, trueSel, predSel, h('label', {}, 'sort by ', sortSel), orderSel, prev, next, info));
  const grid = h('div', { id: 'outcomes', class: image ? 'grid' : '', 'data-state': 'loading' });
  section.append(grid);
  let items = [];
  let total = 0;
  let seq = 0;
  const els = () => [...grid.querySelectorAll(image ? '.tile' : 'tbody tr')];
  const open = (i) => { select(i, false); openDetail(dataNode || { id: p.data }, items[i].data_id, () => grid.focus()); };
  const turn = (d) => { const to = st.offset + d * GRID_LIMIT; if (to >= 0 && to < total) { st.offset = to; load(); } };
  const select = keyboard(grid, els, () => (image ? perRow(els()) : 1), open, turn);

  async function load() {
    const mine = ++seq;
    grid.dataset.state = 'loading';
    setQuery({ true: st.true, pred: st.pred, sort: st.sort === 'loss' ? '' : st.sort, order: st.order === 'desc' ? '' : st.order, offset: st.offset });
    const o = await api(`/predictions/${p.id}/outcomes`, { true: st.true || undefined, pred: st.pred || undefined, sort: st.sort, order: st.order, limit: GRID_LIMIT, offset: st.offset });
    if (mine !== seq) return;
    items = o.items;
    total = o.total;
    grid.replaceChildren();
    const caption = (it) => `true ${it.true === null ? '?' : it.true} · pred ${it.pred} · conf ${fmt(it.confidence, 3)} · loss ${fmt(it.loss, 3)}`;
    if (image) {
      const rows = items.length ? (await api(`/data/${p.data}/samples`, { where: `data_id IN (${items.map((it) => it.data_id).join(',')})`, limit: items.length })).items : [];
      if (mine !== seq) return;
      const byId = new Map(rows.map((r) => [r.data_id, r]));
      items.forEach((it, i) => {
        const t = tile(p.data, byId.get(it.data_id) || { data_id: it.data_id, annotations: [] }, caption(it), `wrap ${it.correct === false ? 'bad' : ''}`, `pred: ${it.pred}`);
        t.dataset.loss = it.loss === null ? '' : String(it.loss);
        t.dataset.confidence = String(it.confidence);
        t.addEventListener('click', () => open(i));
        grid.append(t);
      });
    } else {
      grid.append(table(['sample', 'true', 'predicted', 'confidence', 'loss'], items.map((it, i) => h('tr', { 'data-id': it.data_id, class: it.correct === false ? 'bad' : '', onclick: () => open(i) },
        tdNum(it.data_id, 'data_id'), td(it.true === null ? '–' : it.true), td(it.pred), tdNum(it.confidence, 'confidence'), tdNum(it.loss, 'loss')))));
    }
    select(0, false);
    info.replaceChildren(num(o.total, 'outcomes'), ' samples', st.true || st.pred ? ` (true ${st.true || 'any'}, predicted ${st.pred || 'any'})` : '',
      ` · showing ${items.length ? st.offset + 1 : 0}–${st.offset + items.length}`);
    prev.disabled = st.offset <= 0;
    next.disabled = st.offset + items.length >= total;
    grid.dataset.state = 'ready';
  }
  const reload = () => { st.true = trueSel.value; st.pred = predSel.value; st.sort = sortSel.value; st.order = orderSel.value; st.offset = 0; load(); };
  for (const el of [trueSel, predSel, sortSel, orderSel]) el.addEventListener('change', reload);
  prev.addEventListener('click', () => turn(-1));
  next.addEventListener('click', () => turn(1));
  await load();
  if (st.true || st.pred) section.scrollIntoView({ block: 'start' });
  return section;
}

/** A detector's "confusion cell": the images where class ``c`` has a false positive (``error`` fp) or a miss (fn). */
export const errorHref = (id, c, error) => `#/prediction/${id}?class=${encodeURIComponent(c)}&error=${error}`;

/** Detection: per-class TP/FP/FN at IoU 0.5 (FP and FN cells open their images) and every image with its
 *  counts, sortable by errors or highest box score; a row opens the sample view.  ``q``: class, error, threshold, sort, order, offset. */
export async function detectionOutcomes(root, p, q) {
  const dataNode = S.byId.get(p.data);
  const threshold = Number(q.get('threshold'));
  const st = { class: q.get('class') || '', error: q.get('error') || '', threshold: q.get('threshold') !== null && threshold >= 0 && threshold <= 1 ? threshold : 0.5,
    sort: q.get('sort') || 'errors', order: q.get('order') === 'asc' ? 'asc' : 'desc', offset: Math.max(0, Number(q.get('offset')) || 0) };
  const options = (id, values, value, labels = values) => h('select', { id }, values.map((v, i) => h('option', { value: v, selected: v === value }, labels[i])));
  const classes = Object.keys((p.metrics && p.metrics.per_class) || {});
  const classSel = options('det-class', ['', ...classes], st.class, ['any class', ...classes]);
  const errorSel = options('det-error', ['', 'fp', 'fn'], st.error, ['any error', 'false positives', 'missed']);
  const thrIn = h('input', { type: 'number', id: 'det-threshold', min: 0, max: 1, step: 0.05, value: st.threshold });
  const sortSel = options('outcome-sort', ['errors', 'confidence', 'data_id'], st.sort);
  const orderSel = options('outcome-order', ['desc', 'asc'], st.order, ['highest first', 'lowest first']);
  const prev = h('button', { type: 'button', id: 'outcome-prev' }, '← previous');
  const next = h('button', { type: 'button', id: 'outcome-next' }, 'next →');
  const info = h('span', { id: 'outcome-info', class: 'muted' });
  const section = h('div', { id: 'outcomes-section' });
  const counts = h('div', { id: 'det-counts' });
  const grid = h('div', { id: 'outcomes', 'data-state': 'loading' });
  root.append(section);
  section.append(h('h2', {}, 'Errors per class (IoU 0.5)'), counts, h('h2', {}, 'Every image'),
    h('div', { class: 'controls' }, classSel, errorSel, h('label', {}, 'confidence ≥ ', thrIn), h('label', {}, 'sort by ', sortSel), orderSel, prev, next, info), grid);
  let items = [];
  let total = 0;
  let seq = 0;
  const els = () => [...grid.querySelectorAll('tbody tr')];
  const open = (i) => { select(i, false); openDetail(dataNode || { id: p.data }, items[i].data_id, () => grid.focus()); };
  const turn = (d) => { const to = st.offset + d * GRID_LIMIT; if (to >= 0 && to < total) { st.offset = to; load(); } };
  const select = keyboard(grid, els, () => 1, open, turn);
  const cell = (c, k, n) => h('td', { class: 'num', 'data-key': k }, n && k !== 'tp' ? h('a', { href: errorHref(p.id, c, k), class: 'cell' }, num(n, k)) : num(n, k));

  async function load() {
    const mine = ++seq;
    grid.dataset.state = 'loading';
    setQuery({ class: st.class, error: st.error, threshold: st.threshold === 0.5 ? '' : String(st.threshold), sort: st.sort === 'errors' ? '' : st.sort,
      order: st.order === 'desc' ? '' : st.order, offset: st.offset });
    const o = await api(`/predictions/${p.id}/outcomes`, { class: st.class || undefined, error: st.error || undefined, threshold: st.threshold,
      sort: st.sort, order: st.order, limit: GRID_LIMIT, offset: st.offset });
    if (mine !== seq) return;
    items = o.items;
    total = o.total;
    counts.replaceChildren(table(['class', 'true positives', 'false positives', 'missed'], Object.entries(o.per_class).map(([c, n]) => h('tr', { 'data-class': c },
      td(c), cell(c, 'tp', n.tp), cell(c, 'fp', n.fp), cell(c, 'fn', n.fn))), { id: 'det-errors' }));
    grid.replaceChildren(table(['sample', 'ground truth', 'predicted', 'TP', 'FP', 'FN', 'errors', 'max confidence'], items.map((it, i) => h('tr',
      { 'data-id': it.data_id, class: it.errors ? 'bad' : '', onclick: () => open(i) }, tdNum(it.data_id, 'data_id'), tdNum(it.gt, 'gt'),
      tdNum(it.predicted, 'predicted'), tdNum(it.tp, 'tp'), tdNum(it.fp, 'fp'), tdNum(it.fn, 'fn'), tdNum(it.errors, 'errors'), tdNum(it.confidence, 'confidence')))));
    select(0, false);
    info.replaceChildren(num(o.total, 'outcomes'), ' images', st.class || st.error ? ` (${st.error === 'fp' ? 'false positives' : st.error === 'fn' ? 'missed' : 'errors'} of ${st.class || 'any class'})` : '',
      ` · showing ${items.length ? st.offset + 1 : 0}–${st.offset + items.length}`);
    prev.disabled = st.offset <= 0;
    next.disabled = st.offset + items.length >= total;
    grid.dataset.state = 'ready';
  }
  const reload = () => {
    const t = Number(thrIn.value);
    Object.assign(st, { class: classSel.value, error: errorSel.value, threshold: thrIn.value !== '' && t >= 0 && t <= 1 ? t : st.threshold, sort: sortSel.value, order: orderSel.value, offset: 0 });
    load();
  };
  for (const el of [classSel, errorSel, thrIn, sortSel, orderSel]) el.addEventListener('change', reload);
  prev.addEventListener('click', () => turn(-1));
  next.addEventListener('click', () => turn(1));
  await load();
  if (st.class || st.error) section.scrollIntoView({ block: 'start' });
  return section;
}
