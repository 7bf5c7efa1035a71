/* VeML web UI: a plain-JavaScript single page over the REST API (/api/v1); no build step.
 *
 * Pages (hash routes): #/lineage[/id], #/data[/id], #/models[/id][?compare=ids], #/training[/id], #/inference[/id],
 * #/prediction/id, #/reports, #/version/id.  Every string from the API is put in the page as
 * text (never as HTML).  Numbers shown carry their exact value in a data-value attribute.
 *
 * A server started with a token answers the API only with it: a 401 shows a token form; the
 * token is kept in sessionStorage and sent as "Authorization: Bearer ..." on every fetch
 * (thumbnails too: fetched with the header and drawn from a blob URL).
 */
import {
  MAX_ROWS, PALETTE, PARTS, PRED_BOXES, PRED_COLOR, S, STALE,
  TOKEN_KEY, Unauthorized, api, barChart, catColor, chart, color, enc,
  facts, fmt, fmtBytes, h, href, kindBadge, live, paramsText,
  loadVersions, main, num, pages, storedToken, table, td, tdNum,
  tile, title, versionsOf, vlink,
} from './core.js';
import { sampleGrid } from './grid.js';
import { closeDetail } from './detail.js';
import { pageModels } from './models.js';
import { CLASSIFICATION, cellHref, detectionOutcomes, outcomesGrid, prCurves } from './analysis.js';

/** Positions for a DAG: a row per longest-path depth, each row ordered by its parents' places. */
function layered(nodes, edges) {
  const parents = new Map(nodes.map((n) => [n.id, []]));
  for (const e of edges) parents.get(e.dst).push(e.src);
  const depth = new Map();
  const visiting = new Set();
  const depthOf = (id) => {
    if (depth.has(id)) return depth.get(id);
    if (visiting.has(id)) return 0;  // a cycle cannot happen in a lineage graph; never loop on one
    visiting.add(id);
    let d = 0;
    for (const p of parents.get(id)) d = Math.max(d, depthOf(p) + 1);
    visiting.delete(id);
    depth.set(id, d);
    return d;
  };
  const sorted = nodes.map((n) => n.id).sort((a, b) => a - b);
  sorted.forEach(depthOf);
  const rows = [];
  for (const id of sorted) (rows[depth.get(id)] = rows[depth.get(id)] || []).push(id);
  const place = new Map();
  const pos = {};
  rows.forEach((row, level) => {
    const key = (id) => {
      const ps = parents.get(id).filter((p) => place.has(p));
      return ps.length ? ps.reduce((a, p) => a + place.get(p), 0) / ps.length : -1;
    };
    if (level > 0) row.sort((a, b) => key(a) - key(b) || a - b);
    row.forEach((id, i) => {
      const x = (i - (row.length - 1) / 2) * 150;
      place.set(id, x);
      pos[String(id)] = { x, y: level * 90 };
    });
  });
  return pos;
}

// --- lineage ------------------------------------------------------------------------------------------
const WHOLE_GRAPH_PAGE = 500;  // versions the whole-graph view draws at a time, newest first

async function pageLineage(root, ref, gen, q) {
  let nodes;
  let edges;
  let focus = null;
  let total = 0;
  let loadMore = null;  // a large answer comes a page at a time: adds the next page, says whether more is left
  const limit = /^\d+$/.test(q.get('limit') || '') && Number(q.get('limit')) > 0 ? Number(q.get('limit')) : undefined;
  if (ref) {
    // a page of versions (in id order) at a time; ?limit=N in the hash sets the page size (the server's default otherwise)
    let lin = await api(`/lineage/${enc(ref)}`, { direction: 'both', limit });
    live(gen);
    nodes = lin.nodes;
    edges = [...lin.edges, ...lin.boundary_edges];  // an edge is drawn once both its ends are loaded
    focus = lin.root;
    total = lin.total;
    root.append(h('h1', {}, 'Lineage of ', vlink(focus)), h('p', {}, h('a', { href: '#/lineage' }, '← the whole graph')));
    if (lin.next_cursor) {
      loadMore = async () => {
        lin = await api(`/lineage/${enc(ref)}`, { direction: 'both', limit, cursor: lin.next_cursor });
        live(gen);
        nodes = [...nodes, ...lin.nodes];
        edges = [...edges, ...lin.edges, ...lin.boundary_edges];
        return Boolean(lin.next_cursor);
      };
    }
  } else {
    // every version, newest first, a page at a time (?limit=N sets the page size); edges join drawn versions
    const all = S.versions.slice().sort((a, b) => b.id - a.id);
    const size = limit || WHOLE_GRAPH_PAGE;
    let shown = 0;
    const take = () => {
      shown = Math.min(shown + size, all.length);
      nodes = all.slice(0, shown);
      const drawn = new Set(nodes.map((n) => n.id));
      edges = [];
      for (const n of nodes) for (const p of n.parents) if (drawn.has(p)) edges.push({ src: p, dst: n.id, kind: '' });
      return shown < all.length;
    };
    total = all.length;
    if (take()) loadMore = async () => take();
    root.append(h('h1', {}, 'Lineage'));
  }
  let more = null;  // the "load more" control, redrawing the graph after each page
  if (loadMore) {
    const shown = h('span', { id: 'lineage-page', class: 'muted' });
    const button = h('button', { type: 'button', id: 'load-more' }, 'load more');
    const bar = h('div', { class: 'controls', id: 'lineage-more', 'data-state': 'ready' }, shown, button);
    let left = true;
    const status = () => {
      shown.textContent = `${nodes.length} of ${total} shown`;
      shown.dataset.value = String(nodes.length);
      shown.dataset.total = String(total);
      button.hidden = !left;
    };
    button.addEventListener('click', async () => {
      button.disabled = true;
      bar.dataset.state = 'loading';
      try {
        left = await loadMore();
        status();
        more.draw();
        bar.dataset.state = 'ready';
      } catch (err) {
        if (err === STALE) return;
        shown.replaceChildren(h('span', { class: 'error' }, String(err.message || err)));
        bar.dataset.state = 'error';
      } finally {
        button.disabled = false;
      }
    });
    status();
    more = { draw: null };
    root.append(bar);
  }
  const showParts = h('input', { type: 'checkbox', id: 'show-parts' });
  const count = h('span', { class: 'muted', id: 'graph-count' });
  const legend = h('span', { class: 'legend' });
  root.append(h('div', { class: 'controls' }, h('label', {}, showParts, ' show model parts and core sets'), count, legend));
  const box = h('div', { id: 'graph' });
  root.append(box, h('p', { class: 'muted' }, 'Scroll to zoom, drag to pan; click a version to open it.'));

  function draw() {
    if (S.cy) S.cy.destroy();
    const keep = nodes.filter((n) => showParts.checked || !PARTS.has(n.kind) || n.id === focus);
    const ids = new Set(keep.map((n) => n.id));
    const els = keep.map((n) => ({
      data: { id: String(n.id), label: n.name, kind: n.kind, color: color(n.kind) }, classes: n.id === focus ? 'focus' : '',
    }));
    const kept = edges.filter((e) => ids.has(e.src) && ids.has(e.dst));
    kept.forEach((e, i) => {
      els.push({ data: { id: `e${i}`, source: String(e.src), target: String(e.dst), label: e.kind ? e.kind.toLowerCase() : '' } });
    });
    S.cy = cytoscape({
      container: box,
      elements: els,
      minZoom: 0.1,
      maxZoom: 4,
      style: [
        { selector: 'node', style: { 'background-color': 'data(color)', label: 'data(label)', 'font-size': 11, 'text-valign': 'bottom', 'text-margin-y': 3, width: 18, height: 18, color: '#212529', 'text-wrap': 'ellipsis', 'text-max-width': '120px' } },
        { selector: 'node.focus', style: { 'border-width': 3, 'border-color': '#212529', width: 24, height: 24 } },
        { selector: 'edge', style: { width: 1.2, 'line-color': '#adb5bd', 'target-arrow-color': '#adb5bd', 'target-arrow-shape': 'triangle', 'curve-style': 'bezier', label: 'data(label)', 'font-size': 9, color: '#495057', 'text-rotation': 'autorotate', 'text-background-color': '#fff', 'text-background-opacity': 0.85, 'text-background-padding': '1px' } },
      ],
      layout: { name: 'preset', positions: layered(keep, kept), fit: true, padding: 24 },
    });
    S.cy.on('tap', 'node', (evt) => {
      const n = S.byId.get(Number(evt.target.id()));
      location.hash = n ? href(n) : `#/version/${evt.target.id()}`;
    });
    window.vemlCy = S.cy;
    legend.replaceChildren(...[...new Set(nodes.map((n) => n.kind))].sort().map((k) => h('span', {}, h('i', { style: { background: color(k) } }), k)));
    count.textContent = `${keep.length} of ${nodes.length} versions shown`;
    count.dataset.value = String(keep.length);
  }
  showParts.addEventListener('change', draw);
  if (more) more.draw = draw;
  draw();

  const lcs = await pages('/lifecycles', {}, 1000);
  live(gen);
  root.append(h('h2', {}, `Lifecycles (${lcs.total})`));
  if (!lcs.items.length) {
    root.append(h('p', { class: 'muted' }, 'No complete lifecycle (data → model → training → inference) yet.'));
    return;
  }
  const arrow = h('span', { class: 'arrow' }, '→');
  root.append(table(['data', '', 'model', '', 'training', '', 'inference', '', 'predictions', 'task', 'key metric', 'latency (ms)'],
    lcs.items.map((lc) => h('tr', { class: 'lifecycle flow', 'data-training': lc.training },
      td(vlink(lc.data)), td(arrow.cloneNode(true)), td(vlink(lc.model)), td(arrow.cloneNode(true)), td(vlink(lc.training)),
      td(arrow.cloneNode(true)), td(vlink(lc.inference)), td(arrow.cloneNode(true)), td(vlink(lc.prediction)), td(lc.task),
      h('td', { class: 'num' }, lc.metric ? [`${lc.metric.name} `, num(lc.metric.value, lc.metric.name)] : '–'),
      tdNum(lc.latency_ms, 'latency_ms'))), { id: 'lifecycles' }));
}

// --- lists ----------------------------------------------------------------------------------------------

function deploymentsTable(rows, current) {
  return table(['deployment', 'training', 'format', 'quantize', 'device', 'latency (ms)', 'original (ms)', 'size', 'agreement'],
    rows.map((d) => h('tr', { class: d.id === current ? 'current' : '', 'data-id': d.id },
      td(vlink(d.id)), td(vlink(d.training)), td(d.format), td(d.quantize), td(d.device),
      tdNum(d.latency_ms, 'latency_ms'), tdNum(d.original_latency_ms, 'original_latency_ms'),
      tdNum(d.size_bytes, 'size_bytes', fmtBytes(d.size_bytes)), tdNum(d.agreement, 'agreement'))), { id: 'deployments' });
}

function deploymentCharts(parent, rows) {
  if (!rows.length) return;
  const row = h('div', { class: 'row' });
  parent.append(row);
  const a = h('div', { class: 'col' }, h('b', {}, 'latency per sample (ms)'));
  const b = h('div', { class: 'col' }, h('b', {}, 'size (MiB)'));
  row.append(a, b);
  const names = rows.map((d) => d.name);
  barChart(a, 'latency', names, rows.map((d) => d.latency_ms), 'latency (ms)', { colors: '#9c36b5' });
  barChart(b, 'size', names, rows.map((d) => (typeof d.size_bytes === 'number' ? d.size_bytes / 1048576 : null)), 'size (MiB)', { colors: '#845ef7' });
}

function listPage(root, kind) {
  const rows = versionsOf(kind);
  root.append(h('h1', {}, `${kind === 'inference' ? 'Deployments' : `${kind[0].toUpperCase()}${kind.slice(1)} versions`} (${rows.length})`));
  if (!rows.length) { root.append(h('p', { class: 'muted' }, 'None yet.')); return; }
  if (kind === 'data') {
    root.append(table(['name', 'id', 'modality', 'role', 'samples', 'annotations', 'parents', 'created'],
      rows.map((v) => h('tr', { 'data-id': v.id }, td(vlink(v.id)), tdNum(v.id), td(v.modality), td(v.role), tdNum(v.samples, 'samples'),
        tdNum(v.annotations, 'annotations'), td(v.parents.map((p) => [vlink(p), ' '])), td(v.created_at))), { id: 'list' }));
  } else if (kind === 'training') {
    root.append(table(['name', 'data', 'model', 'task', 'parameters', 'created'],
      rows.map((v) => h('tr', { 'data-id': v.id }, td(vlink(v.id)), td(vlink(v.data)), td(vlink(v.model)), td(v.task),
        td(paramsText(v.params)), td(v.created_at))), { id: 'list' }));
  } else {
    root.append(deploymentsTable(rows, null));
    deploymentCharts(root, rows);
    const preds = versionsOf('prediction');
    root.append(h('h2', {}, `Prediction versions (${preds.length})`));
    root.append(table(['name', 'deployment', 'data', 'key metric', 'samples'],
      preds.map((p) => h('tr', { 'data-id': p.id }, td(vlink(p.id)), td(vlink(p.inference)), td(vlink(p.data)),
        h('td', { class: 'num' }, p.key_metric && p.key_metric.name ? [`${p.key_metric.name} `, num(p.key_metric.value, p.key_metric.name)] : '–'),
        tdNum(p.samples, 'samples'))), { id: 'predictions' }));
  }
}

// --- data version -------------------------------------------------------------------------------------
function quantileTable(boxes) {
  const keys = ['per_image', 'width', 'height', 'area'].filter((k) => boxes[k]);
  const qs = ['min', 'p25', 'median', 'p75', 'max', 'mean'];
  return table(['boxes', ...qs], keys.map((k) => h('tr', { 'data-row': k }, td(k.replace('_', ' ')), qs.map((q) => tdNum(boxes[k][q], q)))),
    { id: 'box-quantiles' });
}

function histogram(values, bins) {
  if (!values.length) return { labels: [], counts: [] };
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const n = lo === hi ? 1 : bins;
  const width = (hi - lo) / n || 1;
  const counts = new Array(n).fill(0);
  for (const v of values) counts[Math.min(n - 1, Math.floor((v - lo) / width))] += 1;
  const labels = counts.map((_, i) => `${fmt(lo + i * width, 3)}–${fmt(lo + (i + 1) * width, 3)}`);
  return { labels, counts };
}

async function pageData(root, ref, gen, q) {
  if (!ref) { listPage(root, 'data'); return; }
  const v = await api(`/data/${enc(ref)}/stats`);
  live(gen);
  const st = v.stats || {};
  const cats = v.categories || {};
  root.append(title(v), facts([
    ['samples', num(st.samples !== undefined ? st.samples : v.samples, 'samples')], ['modality', v.modality], ['role', v.role],
    ['annotations', num(v.annotations, 'annotations')], ['created', v.created_at],
    v.parents.length ? ['parents', v.parents.map((p) => [vlink(p), ' '])] : null,
    v.tags && v.tags.length ? ['tags', v.tags.join(', ')] : null,
    v.source && v.source.format ? ['imported from', v.source.format] : null,
  ]));
  const usedBy = h('div', { class: 'facts', id: 'used-by' });
  root.append(usedBy);
  const down = await api(`/lineage/${v.id}`, { direction: 'down', hops: 1 });
  live(gen);
  const children = down.nodes.filter((n) => n.id !== v.id && !PARTS.has(n.kind));
  usedBy.append(h('span', {}, h('b', {}, 'used by: '), children.length ? children.map((n) => [kindBadge(n.kind), ' ', vlink(n.id), '  ']) : h('span', { class: 'muted' }, 'nothing yet')));

  // statistics
  root.append(h('h2', {}, 'Statistics'));
  const stats = h('div', { class: 'row' });
  root.append(stats);
  const catNames = Object.keys(cats);
  if (catNames.length) {
    const col = h('div', { class: 'col' }, h('b', {}, 'annotations per category'));
    stats.append(col);
    col.append(table(['category', 'count'], catNames.map((c) => h('tr', { 'data-category': c }, td(c), tdNum(cats[c], c))), { id: 'categories' }));
    barChart(col, 'categories', catNames, catNames.map((c) => cats[c]), 'annotations', { colors: catNames.map(catColor) });
  }
  if (st.image_sizes && Object.keys(st.image_sizes).length) {
    const col = h('div', { class: 'col' }, h('b', {}, 'image sizes (width × height)'));
    stats.append(col);
    const sizes = Object.keys(st.image_sizes);
    col.append(table(['size', 'images'], sizes.map((s) => h('tr', { 'data-size': s }, td(s), tdNum(st.image_sizes[s], s))), { id: 'image-sizes' }));
    barChart(col, 'image-sizes', sizes, sizes.map((s) => st.image_sizes[s]), 'images', { colors: '#2b8a3e' });
  }
  let boxCol = null;
  if (st.boxes && st.boxes.count) {
    boxCol = h('div', { class: 'col' }, h('b', {}, `box sizes (${st.boxes.count} boxes)`));
    stats.append(boxCol);
    boxCol.append(quantileTable(st.boxes));
  }
  if (st.columns) {
    const col = h('div', { class: 'col' }, h('b', {}, 'columns'));
    stats.append(col);
    const ks = ['type', 'missing', 'min', 'max', 'mean', 'std'];
    col.append(table(['column', ...ks], Object.entries(st.columns).map(([name, c]) => h('tr', { 'data-column': name }, td(name),
      ks.map((k) => (typeof c[k] === 'number' ? tdNum(c[k], k) : td(c[k] === undefined ? '–' : c[k]))))), { id: 'column-stats' }));
  }
  if (st.pixels && st.pixels.mean) {
    stats.append(h('div', { class: 'col' }, h('b', {}, 'pixels'), table(['channel', 'mean', 'std'],
      st.pixels.channels.map((c, i) => h('tr', {}, td(c), tdNum(st.pixels.mean[i], 'mean'), tdNum(st.pixels.std[i], 'std'))))));
  }
  if (!stats.children.length) root.append(h('pre', { class: 'json' }, JSON.stringify(st, null, 1)));

  // samples: small versions are loaded whole for the box-area histogram and the sample-level diff;
  // the grid pages the server whatever the size
  const small = v.samples <= MAX_ROWS;
  const rows = small ? (await pages(`/data/${v.id}/samples`, {}, MAX_ROWS)).items : [];
  live(gen);
  if (boxCol && small) {
    const areas = [];
    for (const r of rows) for (const a of r.annotations || []) if (a.kind === 'boxes' && a.bbox_w !== null && a.bbox_w !== undefined) areas.push(a.bbox_w * a.bbox_h);
    const hist = histogram(areas, 8);
    boxCol.append(h('div', { class: 'muted' }, `box area histogram (px², ${rows.length} samples)`));
    barChart(boxCol, 'box-areas', hist.labels, hist.counts, 'boxes', { colors: '#f08c00' });
  }
  root.append(h('h2', {}, 'Samples'));
  await sampleGrid(root, v, q);
  live(gen);

  // diff
  root.append(h('h2', {}, 'Compare with another version'));
  const others = versionsOf('data').filter((o) => o.id !== v.id && o.modality === v.modality);
  const diffSel = h('select', { id: 'diff-with' }, h('option', { value: '' }, 'choose a version…'), others.map((o) => h('option', { value: o.id }, o.name)));
  const diffOut = h('div', { id: 'diff' });
  root.append(h('div', { class: 'controls' }, diffSel), diffOut);
  diffSel.addEventListener('change', async () => {
    diffOut.replaceChildren();
    diffOut.dataset.state = 'loading';
    if (!diffSel.value) return;
    try {
      const other = await api(`/data/${diffSel.value}/stats`);
      const oc = other.categories || {};
      const parts = [];
      if (small && other.samples <= MAX_ROWS) {
        const theirs = (await pages(`/data/${other.id}/samples`, {}, MAX_ROWS)).items;
        const mine = new Set(rows.map((r) => r.data_id));
        const their = new Set(theirs.map((r) => r.data_id));
        const onlyMine = [...mine].filter((x) => !their.has(x)).length;
        const onlyTheirs = [...their].filter((x) => !mine.has(x)).length;
        parts.push(table(['samples', v.name, other.name], [
          h('tr', { 'data-row': 'total' }, td('in the version'), tdNum(v.samples, 'here'), tdNum(other.samples, 'there')),
          h('tr', { 'data-row': 'only' }, td('only in this one'), tdNum(onlyMine, 'only-here'), tdNum(onlyTheirs, 'only-there')),
          h('tr', { 'data-row': 'common' }, td('in both'), h('td', { class: 'num', colspan: 2 }, num(mine.size - onlyMine, 'common'))),
        ], { id: 'diff-samples' }));
      } else {
        parts.push(h('p', { class: 'muted' }, `Sample-level differences are computed only for versions of at most ${MAX_ROWS} samples.`));
      }
      const allCats = [...new Set([...Object.keys(cats), ...Object.keys(oc)])].sort();
      parts.push(table(['category', v.name, other.name, 'difference'], allCats.map((c) => h('tr', { 'data-category': c }, td(c),
        tdNum(cats[c] || 0, 'here'), tdNum(oc[c] || 0, 'there'), tdNum((cats[c] || 0) - (oc[c] || 0), 'delta'))), { id: 'diff-categories' }));
      diffOut.replaceChildren(...parts);
      diffOut.dataset.state = 'ready';
    } catch (err) {
      diffOut.replaceChildren(h('p', { class: 'error' }, String(err.message || err)));
      diffOut.dataset.state = 'error';
    }
  });
}

// --- training -----------------------------------------------------------------------------------------
async function logsOf(id) {
  if (S.logs.has(id)) return S.logs.get(id);
  const rows = [];
  let after = 0;
  let status = null;
  for (;;) {
    const p = await api(`/training/${id}/logs`, { after_id: after, limit: 500 });
    rows.push(...p.logs);
    after = p.next_after_id;
    status = p.status;
    if (!p.more) break;
  }
  if (status !== 'running') S.logs.set(id, rows);
  return rows;
}

async function pageTraining(root, ref, gen) {
  if (!ref) { listPage(root, 'training'); return; }
  const t = await api(`/training/${enc(ref)}`);
  live(gen);
  root.append(title(t), facts([
    ['status', h('span', { id: 'status' }, t.status || 'unknown')], ['data', vlink(t.data)], ['model', vlink(t.model)],
    t.test !== null && t.test !== undefined ? ['test data', vlink(t.test)] : null,
    t.init_from !== null && t.init_from !== undefined ? ['initialised from', vlink(t.init_from)] : null,
    ['task', t.task], ['train samples', num(t.train_samples, 'train_samples')], ['evaluated on', num(t.eval_samples, 'eval_samples')],
    ['created', t.created_at],
  ]));
  const scalar = Object.entries(t.metrics || {}).filter(([, x]) => typeof x === 'number');
  const top = h('div', { class: 'row' });
  root.append(top);
  top.append(h('div', { class: 'col' }, h('h2', {}, 'Metrics'), scalar.length
    ? table(['metric', 'value'], scalar.map(([k, x]) => h('tr', { 'data-metric': k }, td(k), tdNum(x, k))), { id: 'metrics' })
    : h('p', { class: 'muted' }, 'No metrics recorded.')));
  if (t.profile) {
    top.append(h('div', { class: 'col' }, h('h2', {}, 'Profile'), table(['', ''], Object.entries(t.profile).map(([k, x]) => h('tr', {}, td(k), tdNum(x, k)))))); 
  }

  // runs to compare
  const others = versionsOf('training').filter((o) => o.id !== t.id);
  const boxes = others.map((o) => h('input', { type: 'checkbox', value: o.id, class: 'compare', id: `compare-${o.id}` }));
  root.append(h('h2', {}, 'Curves'), others.length
    ? h('div', { class: 'controls', id: 'compare' }, h('span', {}, 'overlay: '), others.map((o, i) => h('label', {}, boxes[i], ` ${o.name}`)))
    : '');
  const curves = h('div', { id: 'curves' });
  const params = h('div', { id: 'params-box' });
  root.append(curves, h('h2', {}, 'Hyper-parameters'), params);

  async function draw() {
    const ids = [t.id, ...boxes.filter((b) => b.checked).map((b) => Number(b.value))];
    curves.dataset.state = 'loading';
    const logs = [];
    for (const id of ids) logs.push(await logsOf(id));
    live(gen);
    const isCurve = (x) => String(x.canvas.dataset.chart).startsWith('curve:');
    const old = S.charts.filter(isCurve);
    S.charts = S.charts.filter((x) => !isCurve(x));
    for (const c of old) c.destroy();
    curves.replaceChildren();
    const runs = ids.map((id) => S.byId.get(id) || t);
    const keys = [...new Set(logs.flat().map((r) => r.key))].sort();
    if (!keys.length) curves.append(h('p', { class: 'muted' }, 'No logged values.'));
    const row = h('div', { class: 'row' });
    curves.append(row);
    for (const key of keys) {
      const col = h('div', { class: 'col' }, h('b', {}, key));
      row.append(col);
      chart(col, `curve:${key}`, {
        type: 'line',
        data: {
          datasets: runs.map((run, i) => ({
            label: run.name, borderColor: PALETTE[i % PALETTE.length], backgroundColor: PALETTE[i % PALETTE.length],
            data: logs[i].filter((r) => r.key === key).map((r) => ({ x: r.step, y: r.value })), pointRadius: 2, tension: 0,
          })),
        },
        options: { parsing: true, scales: { x: { type: 'linear', title: { display: true, text: 'step' } } } },
      });
    }
    curves.append(table(['run', ...keys.map((k) => `last ${k}`), 'rows'], runs.map((run, i) => h('tr', { 'data-run': run.id },
      td(vlink(run.id)), keys.map((k) => {
        const own = logs[i].filter((r) => r.key === k);
        return own.length ? tdNum(own[own.length - 1].value, k) : td('–');
      }), tdNum(logs[i].length, 'rows'))), { id: 'last-values' }));
    // final metrics side by side (as MLflow's run comparison): a row differs when the runs disagree
    const described = await Promise.all(ids.map((id) => (id === t.id ? t : api(`/training/${id}`))));
    live(gen);
    const mkeys = [...new Set(described.flatMap((d) => Object.entries(d.metrics || {}).filter(([, x]) => typeof x === 'number').map(([k]) => k)))].sort();
    curves.append(h('h3', {}, 'Final metrics'), table(['metric', ...runs.map((r) => r.name)], mkeys.map((k) => {
      const vals = described.map((d) => (d.metrics || {})[k]);
      const differs = new Set(vals.map((x) => JSON.stringify(x))).size > 1;
      return h('tr', { class: differs ? 'diff' : '', 'data-metric': k }, td(k), vals.map((x) => tdNum(x === undefined ? null : x, k)));
    }), { id: 'metrics-compare' }));
    const pkeys = [...new Set(runs.flatMap((r) => Object.keys(r.params || {})))].sort();
    params.replaceChildren(table(['parameter', ...runs.map((r) => r.name)], pkeys.map((k) => {
      const vals = runs.map((r) => (r.params || {})[k]);
      const differs = new Set(vals.map((x) => JSON.stringify(x))).size > 1;
      return h('tr', { class: differs ? 'diff' : '', 'data-param': k }, td(k), vals.map((x) => (typeof x === 'number' ? tdNum(x, k) : td(fmt(x)))));
    }), { id: 'params' }));
    curves.dataset.state = 'ready';
  }
  for (const b of boxes) {
    b.addEventListener('change', () => draw().catch((err) => {
      if (err === STALE) return;
      curves.replaceChildren(h('p', { class: 'error' }, String(err.message || err)));
      curves.dataset.state = 'error';
    }));
  }
  await draw();

  const deps = versionsOf('inference').filter((d) => d.training === t.id);
  root.append(h('h2', {}, `Deployments (${deps.length})`), deps.length ? deploymentsTable(deps, null) : h('p', { class: 'muted' }, 'Not deployed yet.'));
}

// --- inference and predictions --------------------------------------------------------------------------
async function pageInference(root, ref, gen) {
  if (!ref) { listPage(root, 'inference'); return; }
  const inf = await api(`/versions/${enc(ref)}`);
  live(gen);
  if (inf.kind !== 'inference') throw new Error(`${inf.name} is a ${inf.kind} version, not a deployment`);
  root.append(title(inf), facts([
    ['training', vlink(inf.training)], ['task', inf.task], ['format', inf.format], ['quantize', inf.quantize], ['device', inf.device],
    ['latency', [num(inf.latency_ms, 'latency_ms'), ' ms']], ['before export', [num(inf.original_latency_ms, 'original_latency_ms'), ' ms']],
    ['size', num(inf.size_bytes, 'size_bytes', fmtBytes(inf.size_bytes))], ['agreement', num(inf.agreement, 'agreement')],
    ['max |Δ|', num(inf.max_abs_diff, 'max_abs_diff')], ['checked on', [num(inf.check_samples, 'check_samples'), ' samples']],
  ]));
  const preds = versionsOf('prediction').filter((p) => p.inference === inf.id);
  root.append(h('h2', {}, `Predictions with this deployment (${preds.length})`), preds.length
    ? table(['prediction', 'data', 'key metric', 'samples'], preds.map((p) => h('tr', { 'data-id': p.id }, td(vlink(p.id)), td(vlink(p.data)),
      h('td', { class: 'num' }, p.key_metric && p.key_metric.name ? [`${p.key_metric.name} `, num(p.key_metric.value, p.key_metric.name)] : '–'),
      tdNum(p.samples, 'samples'))), { id: 'predictions' })
    : h('p', { class: 'muted' }, 'No prediction version yet.'));
  const all = versionsOf('inference');
  root.append(h('h2', {}, `All deployments (${all.length})`), deploymentsTable(all, inf.id));
  deploymentCharts(root, all);
}

function confusion(metrics, link) {
  const cm = metrics.confusion_matrix;
  const classes = metrics.classes || cm.map((_, i) => String(i));
  const max = Math.max(1, ...cm.flat());
  return table(['true ↓ / predicted →', ...classes], cm.map((row, i) => h('tr', { 'data-true': classes[i] }, h('th', {}, classes[i]),
    row.map((x, j) => h('td', { 'data-pred': classes[j], style: { background: `rgba(25,113,194,${(0.08 + 0.8 * x / max).toFixed(3)})`, color: x / max > 0.55 ? '#fff' : '#212529' } },
      link ? h('a', { href: link(classes[i], classes[j]), class: 'cell' }, num(x, 'count')) : num(x, 'count'))))), { id: 'confusion', class: 'cm' });
}

async function pagePrediction(root, ref, gen, q) {
  const p = await api(`/predictions/${enc(ref)}`);
  live(gen);
  const m = p.metrics || {};
  root.append(title(p), facts([
    ['deployment', vlink(p.inference)], ['data', vlink(p.data)], ['task', p.task], ['samples', num(p.samples, 'samples')],
    p.key_metric && p.key_metric.name ? [p.key_metric.name, num(p.key_metric.value, 'key_metric')] : null,
  ]));
  const scalar = Object.entries(m).filter(([, x]) => typeof x === 'number');
  const top = h('div', { class: 'row' });
  root.append(top);
  top.append(h('div', { class: 'col' }, h('h2', {}, 'Metrics'), table(['metric', 'value'], scalar.map(([k, x]) => h('tr', { 'data-metric': k }, td(k), tdNum(x, k))), { id: 'metrics' })));
  if (Array.isArray(m.confusion_matrix) && m.confusion_matrix.length) {
    const link = CLASSIFICATION.has(p.task) ? (t, pr) => cellHref(p.id, t, pr) : null;
  top.append(h('div', { class: 'col' }, h('h2', {}, 'Confusion matrix'), confusion(m, link),
    link ? h('p', { class: 'muted' }, 'A cell opens its samples below.') : ''));
  }
  if (m.per_class && Object.keys(m.per_class).length) {
    const names = Object.keys(m.per_class);
    const ks = [...new Set(names.flatMap((c) => Object.keys(m.per_class[c])))];
    const col = h('div', { class: 'col' }, h('h2', {}, 'Per class'));
    top.append(col);
    col.append(table(['class', ...ks], names.map((c) => h('tr', { 'data-class': c }, td(c), ks.map((k) => tdNum(m.per_class[c][k], k)))), { id: 'per-class' }));
    if (ks.includes('f1')) barChart(col, 'per-class-f1', names, names.map((c) => m.per_class[c].f1), 'F1', { colors: names.map(catColor), options: { plugins: { legend: { display: false } }, scales: { y: { min: 0, max: 1 } } } });
  }
  if (CLASSIFICATION.has(p.task) && p.metrics) {
    await prCurves(root, p);
    live(gen);
    await outcomesGrid(root, p, q);
    live(gen);
  } else if (p.task === 'detection' && p.metrics) {
    await prCurves(root, p);
    live(gen);
    await detectionOutcomes(root, p, q);
    live(gen);
  }
  const worst = (p.worst || []).slice(0, 24);
  root.append(h('h2', {}, `Worst predictions (${worst.length} of ${(p.worst || []).length})`));
  if (!worst.length) return;
  const dataNode = S.byId.get(p.data);
  const grid = h('div', { class: 'grid', id: 'worst' });
  root.append(grid);
  const classes = m.classes || [];
  const name = (x) => (typeof x === 'number' && classes[x] !== undefined ? classes[x] : fmt(x));
  const captionOf = (w) => {
    if ('true' in w && 'pred' in w) return `true ${name(w.true)} · pred ${name(w.pred)}${'p_true' in w ? ` · p(true) ${fmt(w.p_true, 3)}` : ''}`;
    return Object.entries(w).filter(([k]) => k !== 'data_id' && k !== 'index').map(([k, x]) => `${k} ${fmt(x, 3)}`).join(' · ');
  };
  if (dataNode && dataNode.modality === 'image') {
    const rows = (await pages(`/data/${p.data}/samples`, {}, MAX_ROWS)).items;
    live(gen);
    const byId = new Map(rows.map((r) => [r.data_id, r]));
    // detection: each worst sample's predicted boxes, drawn dashed over its ground truth
    const predicted = new Map();
    if (p.task === 'detection') {
      const got = await Promise.all(worst.map((w) => api(`/predictions/${p.id}/samples/${w.data_id}`, { limit: PRED_BOXES })));
      live(gen);
      got.forEach((g, i) => predicted.set(worst[i].data_id, g.items));
      grid.before(h('div', { class: 'legend', id: 'worst-legend' },
        h('span', {}, h('i', { style: { borderRadius: '0', background: 'transparent', border: '2px solid #495057' } }), 'ground truth (class colour)'),
        h('span', {}, h('i', { style: { borderRadius: '0', background: 'transparent', border: `2px dashed ${PRED_COLOR}` } }),
          `predicted, with score (top ${PRED_BOXES})`)));
    }
    for (const w of worst) {
      const row = byId.get(w.data_id) || { data_id: w.data_id, annotations: [] };
      const wrong = 'true' in w && 'pred' in w && w.true !== w.pred;
      grid.append(tile(p.data, row, captionOf(w), `wrap ${wrong ? 'bad' : ''}`, 'pred' in w ? `pred: ${name(w.pred)}` : '',
        p.task === 'detection' ? predicted.get(w.data_id) || [] : undefined));
    }
  } else {
    grid.className = '';
    grid.append(table(['sample', 'details'], worst.map((w) => h('tr', { 'data-id': w.data_id }, tdNum(w.data_id), td(captionOf(w))))));
  }
}

// --- reports ----------------------------------------------------------------------------------------------
async function pageReports(root, ref, gen) {
  const [drift, sim] = await Promise.all([pages('/reports', { kind: 'drift' }, 5000), pages('/reports', { kind: 'similarity' }, 5000)]);
  live(gen);
  root.append(h('h1', {}, 'Drift and similarity reports'));
  root.append(h('h2', {}, `Drift (${drift.total})`));
  if (!drift.items.length) root.append(h('p', { class: 'muted' }, 'No drift report yet (veml drift …).'));
  else {
    // the deployed model's metric estimated on the unlabeled batch (veml drift --inference), with its interval
    const estimate = (r) => (r.estimate
      ? h('td', { 'data-key': 'estimate', 'data-value': String(r.estimate.value), title: `${r.estimate.method}; ${r.estimate.reference_value.toFixed(3)} on held-out data` },
        `${r.estimate.metric} ${r.estimate.value.toFixed(3)} [${r.estimate.low.toFixed(3)}–${r.estimate.high.toFixed(3)}]`)
      : h('td', { class: 'muted', title: r.estimate_reason || '' }, '—'));
    root.append(table(['report', 'reference', 'test', 'deployment', 'method', 'decision', 'estimated metric', 'statistic', 'p-value', 'alpha', 'n ref', 'reference split', 'n test', 'created'],
      drift.items.slice().reverse().map((r) => h('tr', { 'data-id': r.id }, td(r.name), td(vlink(r.reference)), td(vlink(r.test)), td(vlink(r.inference)),
        td(r.method), h('td', {}, h('span', { class: `badge ${r.drift ? 'drift' : 'nodrift'}`, 'data-key': 'decision', 'data-value': String(r.drift) }, r.drift ? 'drift' : 'no drift')),
        estimate(r), tdNum(r.statistic, 'statistic'), tdNum(r.p_value, 'p_value'), tdNum(r.alpha, 'alpha'), tdNum(r.n_reference, 'n_reference'),
        td(r.reference_split || 'given'), tdNum(r.n_test, 'n_test'), td(r.created_at))), { id: 'drift' }));
  }
  root.append(h('h2', {}, `Similarity (${sim.total})`));
  if (!sim.items.length) root.append(h('p', { class: 'muted' }, 'No similarity report yet (veml similar …).'));
  sim.items.slice().reverse().forEach((r, n) => {
    const sec = h('div', { class: 'similarity', 'data-id': r.id });
    root.append(sec);
    sec.append(h('p', {}, h('b', {}, r.name), ': versions nearest to ', vlink(r.target), ` (${r.method}, core sets of ${fmt(r.k)})`));
    const ranking = r.ranking || [];
    const row = h('div', { class: 'row' });
    sec.append(row);
    const left = h('div', { class: 'col' });
    row.append(left);
    left.append(table(['rank', 'version', 'distance', 'samples', 'role'], ranking.map((x, i) => h('tr', { 'data-id': x.id }, tdNum(i + 1),
      td(vlink(x.id)), tdNum(x.distance, 'distance'), tdNum(x.samples, 'samples'), td(x.role || ''))), { class: 'ranking' }));
    if ((r.skipped || []).length) left.append(h('p', { class: 'muted' }, `skipped: ${r.skipped.map((s) => s.name || s.id).join(', ')}`));
    if (n < 5 && ranking.length) {
      const right = h('div', { class: 'col' });
      row.append(right);
      barChart(right, `similarity:${r.id}`, ranking.map((x) => x.name), ranking.map((x) => x.distance), 'distance',
        { colors: '#0c8599', options: { indexAxis: 'y', plugins: { legend: { display: false } } } });
    }
  });
  const projected = drift.items.filter((r) => r.projection && Array.isArray(r.projection.reference)).slice().reverse();
  root.append(h('h2', {}, `2-D projection of the core sets (${projected.length})`));
  if (!projected.length) {
    root.append(h('p', { class: 'muted', id: 'projection-note' },
      'No core-set MMD drift report yet: only those (method mmd, on embeddings) carry a projection of their reference and test core sets.'));
  }
  const grid = h('div', { class: 'row', id: 'projections' });
  root.append(grid);
  projected.slice(0, 6).forEach((r) => {
    const p = r.projection;
    const ev = p.explained_variance || [];
    const axis = (i) => ({ type: 'linear', title: { display: true, text: `PC${i + 1}${typeof ev[i] === 'number' ? ` (${fmt(100 * ev[i], 3)}% of the variance)` : ''}` } });
    const pts = (xs) => xs.map(([x, y]) => ({ x, y }));
    const col = h('div', { class: 'col projection', 'data-id': r.id },
      h('p', {}, h('b', {}, r.name), ': ', vlink(r.reference), ' (reference) vs ', vlink(r.test), ' (test), ',
        h('span', { class: `badge ${r.drift ? 'drift' : 'nodrift'}` }, r.drift ? 'drift' : 'no drift')));
    grid.append(col);
    chart(col, `projection:${r.id}`, {
      type: 'scatter',
      data: {
        datasets: [
          { label: `reference core set (${p.reference.length})`, data: pts(p.reference), backgroundColor: 'rgba(25,113,194,0.7)', borderColor: '#1971c2', pointRadius: 3 },
          { label: `test core set (${p.test.length})`, data: pts(p.test), backgroundColor: 'rgba(232,89,12,0.7)', borderColor: '#e8590c', pointRadius: 3, pointStyle: 'triangle' },
        ],
      },
      options: { plugins: { legend: { display: true, position: 'bottom', labels: { usePointStyle: true } } }, scales: { x: axis(0), y: axis(1) } },
    }, 'tall');
  });
}

// --- any other version ------------------------------------------------------------------------------------
async function pageVersion(root, ref, gen) {
  const v = await api(`/versions/${enc(ref)}`);
  live(gen);
  root.append(title(v), facts([['created', v.created_at], v.parents.length ? ['parents', v.parents.map((p) => [vlink(p), ' '])] : null]),
    h('pre', { class: 'json', id: 'json' }, JSON.stringify(v, null, 2)));
}

// --- the token form (a server started with --token) -------------------------------------------------------
function tokenForm(message) {
  const input = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'off', spellcheck: 'false', size: 40, required: true });
  const form = h('form', {
    id: 'token-form', class: 'token-form',
    onsubmit: (e) => {
      e.preventDefault();
      const t = input.value.trim();
      if (!t) return;
      try { sessionStorage.setItem(TOKEN_KEY, t); } catch (err) { /* storage off: this try only */ }
      route();
    },
  }, h('h1', {}, 'Token needed'),
  h('p', { class: 'muted' }, 'This server was started with a token: enter it to read the repository. It is kept for this tab only (sessionStorage).'),
  h('div', { class: 'controls' }, h('label', { for: 'token' }, 'Bearer token'), input, h('button', { type: 'submit', id: 'token-submit' }, 'Open')),
  message ? h('p', { class: 'error', id: 'token-error' }, message) : null);
  document.body.dataset.page = 'token';
  main.replaceChildren(form);
  main.dataset.state = 'token';
  input.focus();
}

// --- router -------------------------------------------------------------------------------------------------
const ROUTES = { lineage: pageLineage, data: pageData, models: pageModels, training: pageTraining, inference: pageInference, prediction: pagePrediction, reports: pageReports, version: pageVersion };

async function route() {
  S.gen += 1;
  const gen = S.gen;
  for (const c of S.charts) c.destroy();
  S.charts = [];
  if (S.cy) { S.cy.destroy(); S.cy = null; window.vemlCy = null; }
  closeDetail();
  const [path, query] = location.hash.split('?');
  const q = new URLSearchParams(query || '');
  const parts = path.replace(/^#\/?/, '').split('/');
  const page = ROUTES[parts[0]] ? parts[0] : 'lineage';
  const ref = parts[1] ? decodeURIComponent(parts[1]) : null;
  if ((page === 'prediction' || page === 'version') && !ref) { location.hash = '#/lineage'; return; }
  document.body.dataset.page = page;
  document.title = `VeML · ${page}${ref ? ` ${ref}` : ''}`;
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', a.dataset.page === page || (page === 'prediction' && a.dataset.page === 'inference'));
  }
  main.dataset.state = 'loading';
  main.dataset.route = location.hash;
  main.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
  const root = h('div', { id: `page-${page}` });
  try {
    await loadVersions();
    live(gen);
    main.replaceChildren(root);
    await ROUTES[page](root, ref, gen, q);
    live(gen);
    main.dataset.state = 'ready';
  } catch (err) {
    if (err === STALE || gen !== S.gen) return;
    if (err instanceof Unauthorized) {
      const refused = storedToken() !== null;
      try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* storage off: nothing kept */ }
      tokenForm(refused ? `The server refused this token (${err.message}).` : null);
      return;
    }
    if (!root.isConnected) main.replaceChildren(root);
    root.append(h('p', { class: 'error', id: 'error' }, String(err.message || err)));
    main.dataset.state = 'error';
  }
}

window.addEventListener('hashchange', route);
route();
