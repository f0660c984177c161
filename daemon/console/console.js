// sessiond operator console: polls GET /cluster and GET /api/overview every second and
// renders the cluster map, charts of this node's history and the active alerts; looks
// sessions up by id (GET /api/session) or by user (GET /api/user). Same-origin requests only.
// Every string from the daemon reaches the DOM as text (el() below), never as markup.
'use strict';

const kPollMs = 1000;
const kTimeoutMs = 5000;
const kColors = ['#1a5fb4', '#c64600', '#26a269', '#9141ac', '#a51d2d', '#986a44', '#008080'];

// el('td', {class: 'num'}, 'text', childNode): an element with attributes and text/children.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const $ = (id) => document.getElementById(id);

function fmtNumber(value, digits = 0) {
  if (typeof value !== 'number' || !Number.isFinite(value)) return '–';
  return value.toLocaleString(undefined, {maximumFractionDigits: digits});
}

function fmtBytes(bytes) {
  if (typeof bytes !== 'number' || !Number.isFinite(bytes)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${fmtNumber(value, unit === 0 ? 0 : 1)} ${units[unit]}`;
}

// "in 12 min" / "3 s ago" relative to now.
function fmtRelative(ms) {
  const delta = ms - Date.now();
  const abs = Math.abs(delta);
  let text;
  if (abs < 60e3) text = `${Math.round(abs / 1e3)} s`;
  else if (abs < 3600e3) text = `${Math.round(abs / 60e3)} min`;
  else if (abs < 86400e3) text = `${(abs / 3600e3).toFixed(1)} h`;
  else text = `${(abs / 86400e3).toFixed(1)} d`;
  return delta >= 0 ? `in ${text}` : `${text} ago`;
}

function fmtTime(ms) {
  if (typeof ms !== 'number' || ms <= 0) return 'none';
  return `${new Date(ms).toLocaleString()} (${fmtRelative(ms)})`;
}

// fetch + JSON with a deadline; never throws. Returns {ok, status, data, error}.
async function getJson(url) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), kTimeoutMs);
  try {
    const response = await fetch(url, {signal: controller.signal, cache: 'no-store'});
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (response.ok && data !== null) return {ok: true, status: response.status, data};
    let error = data && typeof data.error === 'string' ? data.error : `HTTP ${response.status}`;
    if (response.status === 401) error = `unauthorized (401): ${error}; reload the page to sign in`;
    return {ok: false, status: response.status, data, error};
  } catch (e) {
    const error = e.name === 'AbortError' ? 'timed out' : `network error (${e.message})`;
    return {ok: false, status: 0, data: null, error};
  } finally {
    clearTimeout(timer);
  }
}

// ---- cluster map and alerts -------------------------------------------------------------

function renderCluster(cluster) {
  const nodes = Array.isArray(cluster.nodes) ? cluster.nodes : [];
  const kind = cluster.cluster ? `${nodes.length} nodes` : 'single node';
  $('cluster-summary').textContent =
    `region ${cluster.region} · epoch ${cluster.epoch} · ${kind}`;
  let sessions = 0;
  let ops = 0;
  const rows = nodes.map((node) => {
    const o = node.overview || null;
    const up = Boolean(node.up) && !node.down && o !== null;
    if (up) {
      sessions += o.sessions || 0;
      ops += o.ops_per_s || 0;
    }
    const alerts = o && Array.isArray(o.alerts) ? o.alerts.length : 0;
    const status = up ? 'up' : node.up && !node.down ? 'unreachable' : 'down';
    return el('tr', {'data-testid': 'node-row', 'data-node': node.id},
      el('td', {class: 'mono'}, node.id),
      el('td', {class: 'mono'}, node.address),
      el('td', {'data-testid': 'node-status', class: up ? 'status-up' : 'status-down',
        title: node.error || null}, status),
      el('td', {class: 'num'}, `${fmtNumber((node.share || 0) * 100, 1)} %`),
      el('td', {class: 'num'}, o ? fmtNumber(o.sessions) : '–'),
      el('td', {class: 'num'}, o ? fmtNumber(o.ops_per_s, 1) : '–'),
      el('td', {class: 'num'}, o ? fmtNumber(o.p99_ms, 2) : '–'),
      el('td', {class: 'num'}, o ? fmtBytes(o.memory_bytes) : '–'),
      el('td', {class: alerts > 0 ? 'num has-alerts' : 'num'}, o ? String(alerts) : '–'));
  });
  $('nodes').replaceChildren(...rows);
  $('sessions-total').textContent = fmtNumber(sessions);
  $('ops-total').textContent = fmtNumber(ops, 1);
  renderMigration(cluster.migration);
}

function renderMigration(migration) {
  const box = $('migration');
  if (!migration) {
    box.classList.add('muted');
    box.replaceChildren('no migration running');
    return;
  }
  const rows = Object.entries(migration.progress || {}).map(([node, p]) =>
    el('tr', {}, el('td', {class: 'mono'}, node), el('td', {}, p.state),
      el('td', {class: 'num'}, fmtNumber(p.sessions)),
      el('td', {class: 'num'}, fmtBytes(p.bytes))));
  const started = fmtTime(migration.started_ms);
  box.classList.remove('muted');
  box.replaceChildren(
    el('h3', {}, `migration ${migration.id}: ${migration.reason} (started ${started})`),
    el('table', {},
      el('thead', {}, el('tr', {}, el('th', {}, 'node'), el('th', {}, 'state'),
        el('th', {class: 'num'}, 'sessions moved'), el('th', {class: 'num'}, 'bytes moved'))),
      el('tbody', {}, ...rows)));
}

// Alerts of this node's overview and of every node in /cluster, each (node, rule) once; an
// unreachable node is listed too.
function renderAlerts(overview, cluster) {
  const seen = new Map();
  const add = (node, alert) => {
    const key = `${node}\u0000${alert.rule}`;
    if (!seen.has(key)) seen.set(key, {node, ...alert});
  };
  if (overview) for (const a of overview.alerts || []) add(overview.node, a);
  for (const node of (cluster && cluster.nodes) || []) {
    if (node.overview) for (const a of node.overview.alerts || []) add(node.id, a);
    else if (node.error) add(node.id, {rule: 'unreachable', detail: node.error});
  }
  const items = [...seen.values()].map((a) =>
    el('li', {'data-testid': 'alert', 'data-node': a.node},
      el('span', {class: 'rule'}, a.rule),
      el('span', {class: 'mono'}, `${a.node} `),
      a.detail || '',
      a.since_ms ? el('span', {class: 'muted'}, ` · since ${fmtTime(a.since_ms)}`) : null));
  $('alerts').replaceChildren(...(items.length ? items : [el('li', {class: 'muted'}, 'none')]));
}

// ---- charts of this node's history ------------------------------------------------------

const charts = {};

function makeChart(id, names) {
  if (typeof Chart === 'undefined') return null;
  return new Chart($(id), {
    type: 'line',
    data: {labels: [], datasets: names.map((name, i) => dataset(name, i))},
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      elements: {point: {radius: 0}, line: {borderWidth: 1.5}},
      interaction: {mode: 'index', intersect: false},
      scales: {x: {ticks: {maxTicksLimit: 8, maxRotation: 0}}, y: {beginAtZero: true}},
      plugins: {legend: {display: names.length > 1, position: 'bottom'}},
    },
  });
}

function dataset(label, i) {
  const color = kColors[i % kColors.length];
  return {label, data: [], borderColor: color, backgroundColor: color};
}

function renderCharts(overview) {
  $('chart-node').textContent = `${overview.node}, serving this console`;
  const history = Array.isArray(overview.history) ? overview.history : [];
  const regions = [...new Set(history.flatMap((p) => Object.keys(p.region_lag_ms || {})))].sort();
  $('lag-empty').hidden = regions.length > 0;
  if (typeof Chart === 'undefined') {
    $('last-update').textContent += ' (charts unavailable: /chart.min.js did not load)';
    return;
  }
  if (!charts.ops) {
    charts.ops = makeChart('chart-ops', ['ops/s', 'creates/s']);
    charts.latency = makeChart('chart-latency', ['p50 ms', 'p99 ms']);
    charts.sessions = makeChart('chart-sessions', ['sessions']);
    charts.lag = makeChart('chart-lag', []);
  }
  const labels = history.map((p) => new Date(p.t_ms).toLocaleTimeString([], {hour12: false}));
  const series = (key) => history.map((p) => (typeof p[key] === 'number' ? p[key] : null));
  const set = (chart, columns) => {
    chart.data.labels = labels;
    columns.forEach((data, i) => {
      chart.data.datasets[i].data = data;
    });
    chart.update('none');
  };
  set(charts.ops, [series('ops_per_s'), series('creates_per_s')]);
  set(charts.latency, [series('p50_ms'), series('p99_ms')]);
  set(charts.sessions, [series('sessions')]);
  const lag = charts.lag;
  if (lag.data.datasets.map((d) => d.label).join('\u0000') !== regions.join('\u0000')) {
    lag.data.datasets = regions.map((region, i) => dataset(region, i));
    lag.options.plugins.legend.display = regions.length > 0;
  }
  set(lag, regions.map((r) => history.map((p) => (p.region_lag_ms || {})[r] ?? null)));
}

// ---- polling -----------------------------------------------------------------------------

async function poll() {
  const [cluster, overview] = await Promise.all([getJson('/cluster'), getJson('/api/overview')]);
  const now = new Date().toLocaleTimeString();
  const status = $('last-update');
  const failed = [cluster, overview].filter((r) => !r.ok);
  if (failed.length === 0) {
    status.textContent = `updated ${now}`;
    status.classList.remove('error');
  } else {
    const which = cluster.ok ? 'overview' : 'cluster';
    status.textContent = `update failed at ${now}: ${which}: ${failed[0].error}`;
    status.classList.add('error');
  }
  try {
    if (cluster.ok) renderCluster(cluster.data);
    if (overview.ok) renderCharts(overview.data);
    if (cluster.ok || overview.ok) {
      renderAlerts(overview.ok ? overview.data : null, cluster.ok ? cluster.data : null);
    }
  } catch (e) {
    // A malformed answer must not stop the polling.
    status.textContent = `unexpected answer at ${now}: ${e.message}`;
    status.classList.add('error');
  }
  setTimeout(poll, kPollMs);
}

// ---- session lookup ----------------------------------------------------------------------

function showError(message) {
  $('lookup-result').replaceChildren(
    el('p', {class: 'error', 'data-testid': 'lookup-error'}, message));
}

function table(head, rows) {
  return el('div', {class: 'scroll'}, el('table', {},
    el('thead', {}, el('tr', {}, ...head.map((h) => el('th', {}, h)))),
    el('tbody', {}, ...rows)));
}

async function lookupById(id) {
  const values = $('lookup-values').checked ? '&values=1' : '';
  const result = await getJson(`/api/session?id=${encodeURIComponent(id)}${values}`);
  if (!result.ok) return showError(`session ${id}: ${result.error}`);
  const s = result.data;
  const fields = (s.fields || []).map((f) => el('tr', {'data-testid': 'field-row'},
    el('td', {class: 'mono'}, f.name), el('td', {class: 'num'}, fmtBytes(f.bytes)),
    'value' in f ? el('td', {class: 'mono value', 'data-testid': 'field-value'}, f.value) : null));
  const hasValues = (s.fields || []).some((f) => 'value' in f);
  const accesses = (s.access_log || []).map((a) => el('tr', {'data-testid': 'access-row'},
    el('td', {}, fmtTime(a.t_ms)), el('td', {class: 'mono'}, a.ip),
    el('td', {class: 'mono'}, a.user_agent_hash)));
  const item = (name, value, testid) =>
    [el('dt', {}, name), el('dd', {'data-testid': testid}, value)];
  $('lookup-result').replaceChildren(
    el('dl', {'data-testid': 'session'},
      ...item('id', el('span', {class: 'mono'}, s.id), 'session-id'),
      ...item('user', s.user || '(none)', 'session-user'),
      ...item('node', s.node, 'session-node'),
      ...item('created', fmtTime(s.created_ms)),
      ...item('last access', fmtTime(s.last_access_ms)),
      ...item('deadline', fmtTime(s.deadline_ms)),
      ...item('preset', s.preset || 'none'),
      ...item('signed', s.signed ? 'yes' : 'no'),
      ...item('version', s.version)),
    el('h3', {}, `fields (${fields.length})${hasValues ? '' : ' · values hidden'}`),
    fields.length ? table(hasValues ? ['name', 'size', 'value'] : ['name', 'size'], fields)
      : el('p', {class: 'muted'}, 'no fields'),
    el('h3', {}, `access history (${accesses.length})`),
    accesses.length ? table(['time', 'address', 'user-agent hash'], accesses)
      : el('p', {class: 'muted'}, 'no recorded accesses'));
}

async function lookupByUser(user) {
  const reveal = $('lookup-reveal').checked ? '&reveal=1' : '';
  const result = await getJson(`/api/user?user=${encodeURIComponent(user)}${reveal}`);
  if (!result.ok) return showError(`user ${user}: ${result.error}`);
  const u = result.data;
  const rows = (u.sessions || []).map((s) => {
    const id = s.id
      ? el('button', {class: 'link mono', type: 'button', title: 'look this session up'}, s.id)
      : el('span', {class: 'mono', title: 'tick "reveal ids" to open it'}, `${s.id_prefix}…`);
    if (s.id) id.addEventListener('click', () => lookup('id', s.id));
    return el('tr', {'data-testid': 'user-session-row', 'data-id-prefix': s.id_prefix},
      el('td', {}, id),
      el('td', {}, fmtTime(s.created_ms)),
      el('td', {}, fmtTime(s.last_access_ms)),
      el('td', {}, fmtTime(s.deadline_ms)));
  });
  $('lookup-result').replaceChildren(
    el('h3', {}, `user ${u.user} on ${u.node}: ${rows.length} session(s)`),
    rows.length ? table(['session', 'created', 'last access', 'deadline'], rows)
      : el('p', {class: 'muted'}, 'no sessions'));
}

async function lookup(mode, text) {
  const query = (text ?? $('lookup-input').value).trim();
  if (!query) return showError(mode === 'id' ? 'enter a session id' : 'enter a user');
  $('lookup-input').value = query;
  $('lookup-result').replaceChildren(el('p', {class: 'muted'}, 'looking up…'));
  try {
    await (mode === 'id' ? lookupById(query) : lookupByUser(query));
  } catch (e) {
    showError(`unexpected answer: ${e.message}`);
  }
}

$('lookup-form').addEventListener('submit', (event) => {
  event.preventDefault();
  lookup('id');
});
$('lookup-by-user').addEventListener('click', () => lookup('user'));
poll();
