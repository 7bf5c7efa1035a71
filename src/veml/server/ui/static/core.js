/* VeML web UI, shared part: the API client (with the bearer token), DOM and number helpers,
 * charts and thumbnails.  An ES module: the views (app.js, grid.js, analysis.js) import what they use.
 */
const API = '/api/v1';
const MAX_ROWS = 1000;   // sample rows a data page loads (filters and the sample diff work on these)
const GRID_PAGE = 48;    // thumbnails shown before "show more"
const THUMB = 128;
const KIND_COLORS = {
  data: '#2b8a3e', model: '#1971c2', training: '#e8590c', inference: '#9c36b5', prediction: '#c2255c',
  drift: '#f08c00', similarity: '#0c8599', coreset: '#868e96', project: '#495057',
  architecture: '#adb5bd', backbone: '#adb5bd', neck: '#adb5bd', head: '#adb5bd',
};
const PARTS = new Set(['architecture', 'backbone', 'neck', 'head', 'coreset', 'project']);
const PALETTE = ['#1971c2', '#e8590c', '#2b8a3e', '#c2255c', '#9c36b5', '#f08c00', '#0c8599', '#5c940d', '#862e9c', '#495057'];
const PRED_COLOR = '#fcc419';  // predicted boxes (dashed), apart from every class colour of PALETTE
const PRED_BOXES = 10;        // predicted boxes drawn per worst-prediction tile, highest score first
const PAGE_OF = { data: 'data', model: 'models', training: 'training', inference: 'inference', prediction: 'prediction' };
const STALE = new Error('stale');
const TOKEN_KEY = 'veml.token';

/** The server wants a (valid) bearer token: the router shows the token form. */
class Unauthorized extends Error {}

function storedToken() {
  try { return sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
}

function withAuth(headers) {
  const t = storedToken();
  return t ? Object.assign({}, headers, { Authorization: `Bearer ${t}` }) : headers;
}

/** fetch() with the stored token; a 401 becomes Unauthorized. */
async function authFetch(url, headers) {
  const r = await fetch(url, { headers: withAuth(headers || {}), credentials: 'same-origin' });
  if (r.status === 401) {
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    throw new Unauthorized((body && body.error) || 'this server needs a token');
  }
  return r;
}

const main = document.getElementById('main');
const S = { versions: [], byId: new Map(), gen: 0, charts: [], cy: null, logs: new Map() };
window.vemlPending = 0;  // images still loading (tests wait for 0 before a screenshot)
window.vemlCharts = () => S.charts.map((c) => ({
  name: c.canvas.dataset.chart, labels: c.data.labels || [],
  datasets: c.data.datasets.map((d) => ({ label: d.label, data: d.data })),
}));

// --- small helpers --------------------------------------------------------------------------------
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'style') Object.assign(el.style, v);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

async function api(path, params) {
  const url = new URL(API + path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    for (const one of [].concat(v)) if (one !== undefined && one !== null) url.searchParams.append(k, one);
  }
  const r = await authFetch(url, { Accept: 'application/json' });
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
  return body;
}

async function pages(path, params, cap) {
  const items = [];
  let total = 0;
  for (;;) {
    const p = await api(path, Object.assign({}, params, { limit: 500, offset: items.length }));
    items.push(...p.items);
    total = p.total;
    if (!p.items.length || items.length >= total || items.length >= cap) break;
  }
  return { items: items.slice(0, cap), total };
}

async function loadVersions() {
  const { items } = await pages('/versions', {}, 100000);
  S.versions = items;
  S.byId = new Map(items.map((v) => [v.id, v]));
}

const enc = encodeURIComponent;
const live = (gen) => { if (gen !== S.gen) throw STALE; };
const color = (kind) => KIND_COLORS[kind] || '#495057';

function catColor(name) {
  let x = 0;
  for (const ch of String(name)) x = (x * 31 + ch.charCodeAt(0)) >>> 0;
  return PALETTE[x % PALETTE.length];
}

function fmt(x, digits) {
  if (x === null || x === undefined) return '–';
  if (typeof x === 'boolean') return x ? 'yes' : 'no';
  if (typeof x !== 'number') return typeof x === 'object' ? JSON.stringify(x) : String(x);
  if (Number.isInteger(x)) return String(x);
  const a = Math.abs(x);
  const d = digits || 4;
  if (a !== 0 && (a < 1e-3 || a >= 1e7)) return x.toExponential(d - 1);
  return String(Number(x.toPrecision(d)));
}

/** Parameters as one line: ``k=v k=v``. */
const paramsText = (p) => Object.entries(p || {}).map(([k, v]) => `${k}=${fmt(v)}`).join(' ');

function fmtBytes(n) {
  if (typeof n !== 'number') return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

/** A number as shown, with its exact value in data-value (and a name in data-key when given). */
const num = (x, key, text) => h('span', { class: 'v', 'data-key': key, 'data-value': x === null || x === undefined ? '' : String(x) },
  text === undefined ? fmt(x) : text);

function href(node) {
  if (node.kind === 'drift' || node.kind === 'similarity') return '#/reports';
  return `#/${PAGE_OF[node.kind] || 'version'}/${node.id}`;
}

function vlink(id) {
  const n = S.byId.get(id);
  if (!n) return h('span', { class: 'muted' }, id === null || id === undefined ? '–' : `#${id}`);
  return h('a', { href: href(n), class: 'vlink', 'data-id': n.id, title: `${n.kind} #${n.id}` }, n.name);
}

const kindBadge = (kind) => h('span', { class: 'kind', style: { background: color(kind) } }, kind);

function title(node) {
  return h('h1', {}, kindBadge(node.kind), node.name, ' ', h('span', { class: 'muted' }, `#${node.id}`), ' ',
    h('a', { href: `#/lineage/${node.id}`, class: 'lineage-link', style: { fontSize: '13px', fontWeight: '400' } }, 'lineage'));
}

const facts = (pairs) => h('div', { class: 'facts' },
  pairs.filter((p) => p).map(([k, v]) => h('span', {}, h('b', {}, k, ': '), v)));

function table(headers, rows, attrs) {
  return h('table', attrs || {}, h('thead', {}, h('tr', {}, headers.map((x) => h('th', {}, x)))),
    h('tbody', {}, rows));
}

const td = (x, cls) => h('td', { class: cls }, x);
const tdNum = (x, key, text) => h('td', { class: 'num' }, num(x, key, text));

function chart(parent, name, config, cls) {
  const canvas = h('canvas', { 'data-chart': name });
  parent.append(h('div', { class: `chart ${cls || ''}` }, canvas));
  const options = Object.assign({ animation: false, responsive: true, maintainAspectRatio: false }, config.options || {});
  const c = new Chart(canvas, Object.assign({}, config, { options }));
  S.charts.push(c);
  return c;
}

function barChart(parent, name, labels, values, label, opts) {
  return chart(parent, name, {
    type: 'bar',
    data: { labels, datasets: [{ label, data: values, backgroundColor: (opts && opts.colors) || '#4dabf7' }] },
    options: Object.assign({ plugins: { legend: { display: false } } }, (opts && opts.options) || {}),
  });
}

function versionsOf(kind) { return S.versions.filter((v) => v.kind === kind); }

// --- thumbnails with boxes ---------------------------------------------------------------------------
/** A thumbnail with its ground-truth boxes (solid, class colour) and, if given, predicted boxes
 *  (``predicted``: rows of /predictions/{ref}/samples/{id}, dashed in PRED_COLOR with their scores). */
function tile(version, row, caption, extraClass, banner, predicted) {
  const cv = h('canvas', { width: THUMB, height: THUMB });
  const cap = h('div', { class: 'cap', title: caption }, caption);
  const el = h('div', { class: `tile ${extraClass || ''}`, 'data-id': row.data_id }, cv, cap);
  const ctx = cv.getContext('2d');
  const w = row.width || THUMB;
  const ht = row.height || THUMB;
  const s = Math.min(THUMB / w, THUMB / ht);
  const ox = (THUMB - w * s) / 2;
  const oy = (THUMB - ht * s) / 2;
  const img = new Image();
  window.vemlPending += 1;
  const done = () => { window.vemlPending -= 1; };
  img.onload = () => {
    ctx.drawImage(img, ox, oy, w * s, ht * s);
    ctx.font = '9px sans-serif';
    ctx.lineWidth = 1.5;
    let boxes = 0;
    for (const a of row.annotations || []) {
      if (a.kind !== 'boxes' || a.bbox_x === null || a.bbox_x === undefined) continue;
      const c = catColor(a.category);
      const x = ox + a.bbox_x * s;
      const y = oy + a.bbox_y * s;
      ctx.strokeStyle = c;
      ctx.strokeRect(x, y, a.bbox_w * s, a.bbox_h * s);
      const text = String(a.category);
      const tw = ctx.measureText(text).width + 3;
      ctx.fillStyle = c;
      ctx.fillRect(x, Math.max(0, y - 10), tw, 10);
      ctx.fillStyle = '#fff';
      ctx.fillText(text, x + 1.5, Math.max(8, y - 2));
      boxes += 1;
    }
    let predBoxes = 0;
    ctx.setLineDash([4, 3]);
    for (const pr of predicted || []) {
      if (!Array.isArray(pr.bbox) || pr.bbox.length !== 4) continue;
      const [bx, by, bw, bh] = pr.bbox;
      const x = ox + bx * s;
      const y = oy + by * s;
      ctx.strokeStyle = PRED_COLOR;
      ctx.strokeRect(x, y, bw * s, bh * s);
      const text = `${pr.category} ${fmt(pr.score, 2)}`;
      const tw = ctx.measureText(text).width + 3;
      const ty = Math.min(THUMB - 10, y + bh * s);  // the label under the box, clear of the ground truth's
      ctx.fillStyle = PRED_COLOR;
      ctx.fillRect(x, ty, tw, 10);
      ctx.fillStyle = '#212529';
      ctx.fillText(text, x + 1.5, ty + 8);
      predBoxes += 1;
    }
    ctx.setLineDash([]);
    if (banner) {
      ctx.font = 'bold 11px sans-serif';
      ctx.fillStyle = 'rgba(33,37,41,0.8)';
      ctx.fillRect(0, THUMB - 16, THUMB, 16);
      ctx.fillStyle = '#fff';
      ctx.fillText(banner, 4, THUMB - 4);
    }
    el.dataset.boxes = String(boxes);
    if (predicted) el.dataset.predBoxes = String(predBoxes);
    el.dataset.loaded = '1';
    done();
  };
  const failed = () => {
    ctx.fillStyle = '#868e96';
    ctx.fillText('image unavailable', 8, 20);
    el.dataset.loaded = '0';
    done();
  };
  img.onerror = failed;
  // <img src> cannot carry the Authorization header: fetch the bytes with it and draw them from a blob URL
  authFetch(`${API}/data/${version}/samples/${row.data_id}/image?thumbnail=${THUMB}`, { Accept: 'image/*' })
    .then((r) => { if (!r.ok) throw new Error(`${r.status}`); return r.blob(); })
    .then((blob) => {
      const url = URL.createObjectURL(blob);
      const release = () => URL.revokeObjectURL(url);
      img.addEventListener('load', release, { once: true });
      img.addEventListener('error', release, { once: true });
      img.src = url;
    })
    .catch(failed);
  return el;
}

function labelsOf(row) {
  return (row.annotations || []).filter((a) => a.kind === 'labels').map((a) => (a.category !== null && a.category !== undefined ? a.category : a.value));
}

export {
  API, GRID_PAGE, KIND_COLORS, MAX_ROWS, PAGE_OF, PALETTE, PARTS, PRED_BOXES,
  PRED_COLOR, S, STALE, THUMB, TOKEN_KEY, Unauthorized, api, authFetch,
  barChart, catColor, chart, color, enc, facts, fmt, fmtBytes,
  h, href, kindBadge, labelsOf, live, loadVersions, main, num, paramsText,
  pages, storedToken, table, td, tdNum, tile, title, versionsOf,
  vlink, withAuth,
};
