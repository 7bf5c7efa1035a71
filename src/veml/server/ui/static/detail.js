/* VeML web UI: one sample, full size, over the grid (Esc or the close button closes it).
 *
 * An image sample is drawn once per source side by side: its ground truth, then every prediction
 * version made on a data version holding it, each box an SVG rectangle over the image; a
 * confidence slider hides predicted boxes scoring below it.  A series sample is plotted over
 * time, one line per sensor.  Below: the annotation table and the data versions holding the sample.
 */
import { API, S, api, authFetch, catColor, fmt, h, table, td, tdNum, vlink, PRED_COLOR, PALETTE } from './core.js';

const SVG = 'http://www.w3.org/2000/svg';

function s(tag, attrs, ...kids) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  for (const kid of kids.flat()) if (kid) el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  return el;
}

let closeCurrent = null;

export function closeDetail() {
  if (closeCurrent) closeCurrent();
}

/** The blob URL of a stored image, fetched with the token (an <image href> could not carry it). */
async function imageUrl(version, dataId) {
  const r = await authFetch(`${API}/data/${version}/samples/${dataId}/image`, { Accept: 'image/*' });
  if (!r.ok) throw new Error(`image: ${r.status}`);
  return URL.createObjectURL(await r.blob());
}

function boxPanel(name, source, w, ht, url, boxes, predicted) {
  const svg = s('svg', { viewBox: `0 0 ${w} ${ht}`, class: 'sample-svg', role: 'img', 'aria-label': name });
  const img = s('image', { href: url, x: 0, y: 0, width: w, height: ht });
  svg.append(img);
  const font = Math.max(w, ht) / 28;  // labels scale with the image; strokes stay 2 screen pixels wide
  for (const b of boxes) {
    const c = predicted ? PRED_COLOR : catColor(b.category);
    const g = s('g', { class: predicted ? 'box pred' : 'box gt', 'data-score': b.score === null || b.score === undefined ? '' : b.score, 'data-category': b.category },
      s('rect', { x: b.x, y: b.y, width: b.w, height: b.h, fill: 'none', stroke: c, 'stroke-width': 2, 'vector-effect': 'non-scaling-stroke', 'stroke-dasharray': predicted ? '6 4' : null }),
      s('text', { x: b.x, y: predicted ? b.y + b.h + font : Math.max(font, b.y - font / 4), fill: c, 'font-size': font, 'paint-order': 'stroke', stroke: '#fff', 'stroke-width': 2, 'vector-effect': 'non-scaling-stroke' },
        predicted ? `${b.category} ${fmt(b.score, 2)}` : b.category));
    svg.append(g);
  }
  return { el: h('div', { class: 'panel', 'data-source': source, 'data-boxes': boxes.length }, h('b', {}, name), svg), img };
}

function seriesPlot(series) {
  const vals = series.values;
  const steps = vals.length;
  const sensors = vals.length ? vals[0].length : 0;
  const flat = vals.flat().filter((x) => x !== null);
  const lo = flat.length ? Math.min(...flat) : 0;
  const hi = flat.length ? Math.max(...flat) : 1;
  const W = 800;
  const H = 260;
  const x = (i) => 40 + (i / Math.max(1, steps - 1)) * (W - 50);
  const y = (v) => H - 20 - ((v - lo) / ((hi - lo) || 1)) * (H - 40);
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, id: 'series', class: 'series-svg', 'data-steps': steps, 'data-sensors': sensors },
    s('line', { x1: 40, y1: H - 20, x2: W - 10, y2: H - 20, stroke: '#adb5bd' }), s('line', { x1: 40, y1: 10, x2: 40, y2: H - 20, stroke: '#adb5bd' }),
    s('text', { x: 2, y: 16, 'font-size': 10 }, fmt(hi, 3)), s('text', { x: 2, y: H - 22, 'font-size': 10 }, fmt(lo, 3)),
    s('text', { x: W - 60, y: H - 4, 'font-size': 10 }, `step ${steps - 1}`));
  const legend = h('div', { class: 'legend' });
  for (let k = 0; k < sensors; k += 1) {
    const pts = [];
    vals.forEach((row, i) => { if (row[k] !== null) pts.push(`${x(i).toFixed(1)},${y(row[k]).toFixed(1)}`); });
    const name = (series.sensors || [])[k] || `sensor ${k}`;
    const c = PALETTE[k % PALETTE.length];
    svg.append(s('polyline', { points: pts.join(' '), fill: 'none', stroke: c, 'stroke-width': 1.2, 'data-sensor': name, 'data-points': pts.length }));
    legend.append(h('span', {}, h('i', { style: { background: c } }), name));
  }
  return h('div', {}, svg, legend);
}

/** Open sample ``dataId`` of data version ``v`` over the page; ``onClose`` runs when it closes. */
export async function openDetail(v, dataId, onClose) {
  closeDetail();
  const body = h('div', { class: 'detail-body' }, h('p', { class: 'muted' }, 'Loading…'));
  const close = h('button', { type: 'button', id: 'detail-close', title: 'close (Esc)' }, '×');
  const overlay = h('div', { id: 'detail', class: 'overlay', role: 'dialog', 'aria-modal': 'true', 'data-id': dataId, 'data-state': 'loading', tabindex: '-1' },
    h('div', { class: 'detail-card' }, close, body));
  const urls = [];
  const onKey = (e) => { if (e.key === 'Escape') { e.preventDefault(); finish(); } };
  function finish() {
    document.removeEventListener('keydown', onKey, true);
    for (const u of urls) URL.revokeObjectURL(u);
    overlay.remove();
    closeCurrent = null;
    if (onClose) onClose();
  }
  closeCurrent = finish;
  close.addEventListener('click', finish);
  overlay.addEventListener('click', (e) => { if (e.target === overlay) finish(); });
  document.addEventListener('keydown', onKey, true);
  document.body.append(overlay);
  overlay.focus();
  window.vemlPending += 1;
  try {
    const d = await api(`/data/${v.id}/samples/${dataId}`);
    const r = d.sample;
    const preds = S.versions.filter((p) => p.kind === 'prediction' && d.versions.includes(p.data));
    const got = await Promise.all(preds.map((p) => api(`/predictions/${p.id}/samples/${dataId}`, { limit: 500 })));
    if (!overlay.isConnected) return;
    const parts = [h('h2', {}, r.file_name || `sample ${r.data_id}`, ' ', h('span', { class: 'muted' }, `#${r.data_id} of `), vlink(v.id))];
    if (r.modality === 'image') {
      const url = await imageUrl(v.id, dataId);
      urls.push(url);
      if (!overlay.isConnected) return;
      const w = r.width || 1;
      const ht = r.height || 1;
      const gt = (r.annotations || []).filter((a) => a.kind === 'boxes' && a.bbox_x !== null && a.bbox_x !== undefined)
        .map((a) => ({ x: a.bbox_x, y: a.bbox_y, w: a.bbox_w, h: a.bbox_h, category: a.category }));
      const slider = h('input', { type: 'range', id: 'conf', min: 0, max: 1, step: 0.05, value: 0 });
      const sliderVal = h('span', { id: 'conf-value' }, '0');
      const panels = h('div', { class: 'panels', id: 'panels' });
      const loads = [];
      const add = (p) => { panels.append(p.el); loads.push(new Promise((ok) => { p.img.addEventListener('load', ok, { once: true }); p.img.addEventListener('error', ok, { once: true }); })); };
      add(boxPanel('ground truth', 'ground-truth', w, ht, url, gt, false));
      got.forEach((g, i) => {
        const boxes = g.items.filter((it) => Array.isArray(it.bbox)).map((it) => ({ x: it.bbox[0], y: it.bbox[1], w: it.bbox[2], h: it.bbox[3], category: it.category, score: it.score }));
        const p = boxPanel(preds[i].name, `prediction:${preds[i].id}`, w, ht, url, boxes, true);
        const labels = g.items.filter((it) => !Array.isArray(it.bbox) && it.category !== null);
        if (labels.length) p.el.append(h('div', { class: 'pred-label', 'data-key': 'pred' }, labels.map((it) => `${it.category} (${fmt(it.score, 3)})`).join(', ')));
        add(p);
      });
      const applyConf = () => {
        const t = Number(slider.value);
        sliderVal.textContent = fmt(t);
        for (const panel of panels.querySelectorAll('.panel')) {
          let shown = 0;
          for (const g of panel.querySelectorAll('g.box')) {
            const sc = g.dataset.score === '' ? null : Number(g.dataset.score);
            const hide = g.classList.contains('pred') && sc !== null && sc < t;
            g.style.display = hide ? 'none' : '';
            if (!hide) shown += 1;
          }
          panel.dataset.shown = String(shown);
        }
      };
      slider.addEventListener('input', applyConf);
      applyConf();
      parts.push(h('div', { class: 'controls' }, h('label', { for: 'conf' }, 'hide predicted boxes below confidence '), slider, sliderVal), panels);
      await Promise.all(loads);
    } else if (d.series) {
      parts.push(seriesPlot(d.series));
    } else if (r.meta && Object.keys(r.meta).length) {
      parts.push(table(['column', 'value'], Object.entries(r.meta).map(([k, x]) => h('tr', { 'data-column': k }, td(k), typeof x === 'number' ? tdNum(x, k) : td(fmt(x)))), { id: 'sample-columns' }));
    }
    if (r.modality !== 'image' && got.length) {
      parts.push(table(['prediction', 'predicted', 'score'], got.map((g, i) => h('tr', { 'data-id': preds[i].id }, td(vlink(preds[i].id)),
        td(g.items.map((it) => it.category).filter((c) => c !== null).join(', ') || '–'), tdNum(g.items.length ? g.items[0].score : null, 'score'))), { id: 'sample-predictions' }));
    }
    const anns = r.annotations || [];
    const keys = [...new Set(anns.flatMap((a) => Object.keys(a)))].filter((k) => !['data_id', 'kind'].includes(k));
    parts.push(h('h3', {}, `Annotations (${anns.length})`), anns.length
      ? table(['kind', ...keys], anns.map((a) => h('tr', { 'data-ann': a.ann_id }, td(a.kind), keys.map((k) => (typeof a[k] === 'number' ? tdNum(a[k], k) : td(a[k] === null || a[k] === undefined ? '–' : String(a[k])))))), { id: 'ann-table' })
      : h('p', { class: 'muted', id: 'ann-table' }, 'none'));
    parts.push(h('h3', {}, `In ${d.versions.length} data version${d.versions.length === 1 ? '' : 's'}`),
      h('div', { class: 'facts', id: 'sample-versions' }, d.versions.map((id) => h('span', {}, vlink(id)))));
    body.replaceChildren(...parts);
    for (const a of body.querySelectorAll('a.vlink')) a.addEventListener('click', () => finish());
    overlay.dataset.state = 'ready';
  } catch (err) {
    body.replaceChildren(h('p', { class: 'error' }, String(err.message || err)));
    overlay.dataset.state = 'error';
  } finally {
    window.vemlPending -= 1;
  }
}
