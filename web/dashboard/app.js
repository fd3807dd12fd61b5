// The Pulse live dashboard: first paint from the HTTP API, then live events
// through the browser client. No build step, no dependencies.
import { PulseClient } from './pulse-client.js';

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);
if (params.get('token')) localStorage.setItem('pulse.token', params.get('token'));
const token = params.get('token') || localStorage.getItem('pulse.token') || null;
const authHeaders = token ? { Authorization: 'Bearer ' + token } : {};

const client = new PulseClient({ token });
window.pulse = { client };

// ----- connection badge: always the client's real state -----
const badge = $('#badge');
let retryAt = 0;
function renderBadge() {
  const s = client.state;
  let state = s;
  let text;
  if (s === 'live') text = 'Live' + (client.transport && client.transport !== 'ws' ? ' (' + client.transport.toUpperCase() + ')' : '');
  else if (s === 'connecting') text = 'Connecting…';
  else if (s === 'reconnecting') {
    const secs = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
    if (client.attempt >= 2) { state = 'disconnected'; text = 'Disconnected · retrying' + (secs > 0 ? ' in ' + secs + 's' : '…'); }
    else text = 'Reconnecting…';
  } else { state = 'offline'; text = client.fatal ? 'Disconnected (' + (client.fatal.code === 4401 || client.fatal.code === 4403 ? 'sign in again' : 'closed') + ')' : 'Disconnected'; }
  badge.dataset.state = state;
  badge.textContent = text;
}
client.on('state', renderBadge);
client.on('retry', ({ delay }) => { retryAt = Date.now() + delay; renderBadge(); });
setInterval(renderBadge, 1000);
renderBadge();

// ----- helpers -----
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function flash(node, cls) {
  node.classList.remove(cls);
  void node.offsetWidth; // restart the animation
  node.classList.add(cls);
}
function ago(ts) {
  const s = Math.round((Date.now() - Date.parse(ts)) / 1000);
  if (!isFinite(s)) return '';
  if (s < 5) return 'just now';
  if (s < 60) return s + 's ago';
  if (s < 3600) return Math.floor(s / 60) + 'm ago';
  return Math.floor(s / 3600) + 'h ago';
}
function healthOf(checks) {
  if (checks.some((c) => c.level === 'L3' && c.status === 'fail')) return 'critical';
  if (checks.some((c) => c.status !== 'ok')) return 'degraded';
  return 'healthy';
}
async function getJson(path) {
  const res = await fetch(path, { headers: authHeaders });
  if (!res.ok) throw new Error(path + ': HTTP ' + res.status);
  return res.json();
}

// ----- toasts and desktop notifications -----
const notifyButton = $('#notify');
if ('Notification' in window && Notification.permission === 'default') {
  notifyButton.hidden = false;
  notifyButton.addEventListener('click', async () => {
    await Notification.requestPermission();
    notifyButton.hidden = Notification.permission !== 'default';
  });
}
function toast(kind, title, body) {
  const t = el('div', 'toast ' + kind);
  t.append(el('div', 'title', title), el('div', 'meta', body));
  $('#toasts').prepend(t);
  while ($('#toasts').children.length > 4) $('#toasts').lastChild.remove();
  setTimeout(() => t.remove(), 6000);
  if (document.hidden && 'Notification' in window && Notification.permission === 'granted') {
    try { new Notification('Pulse: ' + title, { body, tag: title }); } catch { /* not supported here */ }
  }
}

// ----- agents -----
const agents = new Map(); // agent_id -> {state, row}
function upsertAgent(patch, changed = true) {
  let a = agents.get(patch.agent_id);
  if (!a) {
    a = { state: { status: 'online', health: 'unknown', checks: [] }, row: el('tr') };
    a.row.dataset.agent = patch.agent_id;
    agents.set(patch.agent_id, a);
    insertSorted(a.row, patch.agent_id);
  }
  const before = a.state.status + '/' + a.state.health;
  Object.assign(a.state, patch);
  const s = a.state;
  changed = changed && before !== s.status + '/' + s.health;
  const failing = (s.checks || []).filter((c) => c.status !== 'ok').map((c) => c.name + (c.message ? ': ' + c.message : ''));
  a.row.replaceChildren(
    el('td', 'agent', s.agent_id),
    cell('status', s.status, 's-' + s.status),
    cell('health', s.health, 'h-' + s.health),
    el('td', 'seen', s.last_seen ? ago(s.last_seen) : ''),
    el('td', 'checks', failing.join(', ') || '—'),
  );
  if (changed) flash(a.row, 'changed');
  $('#agent-count').textContent = agents.size;
}
function cell(cls, text, pillClass) {
  const td = el('td', cls);
  td.append(el('span', 'pill ' + pillClass, text));
  return td;
}
function insertSorted(row, id) {
  const body = $('#agents tbody');
  const next = [...body.children].find((r) => r.dataset.agent > id);
  body.insertBefore(row, next || null);
}
setInterval(() => {
  for (const a of agents.values()) {
    const seen = a.row.querySelector('.seen');
    if (seen && a.state.last_seen) seen.textContent = ago(a.state.last_seen);
  }
}, 5000);

// ----- alerts -----
const openAlerts = new Map(); // alert_id -> {alert, li}
function addAlert(alert, fresh) {
  if (alert.state !== 'open') return removeAlert(alert);
  if (openAlerts.has(alert.alert_id)) return;
  const li = el('li', alert.level);
  li.dataset.alert = alert.alert_id;
  li.append(
    el('div', 'title', `${alert.level} · ${alert.agent_id} · ${alert.check}`),
    el('div', 'meta', (alert.message ? alert.message + ' · ' : '') + 'opened ' + new Date(alert.opened_at).toLocaleTimeString()),
  );
  openAlerts.set(alert.alert_id, { alert, li });
  // Newest first: before the first one opened earlier.
  const list = $('#alerts');
  const before = [...list.children].find((n) => { const a = openAlerts.get(n.dataset.alert); return a && Date.parse(a.alert.opened_at) < Date.parse(alert.opened_at); });
  list.insertBefore(li, before || null);
  if (fresh) flash(li, 'new');
  renderAlertCount();
}
function removeAlert(alert) {
  const a = openAlerts.get(alert.alert_id);
  if (a) { a.li.remove(); openAlerts.delete(alert.alert_id); }
  renderAlertCount();
}
function renderAlertCount() {
  $('#alert-count').textContent = openAlerts.size;
  $('#alerts-empty').hidden = openAlerts.size > 0;
}

// ----- decisions -----
const seenDecisions = new Set();
function addDecision(d, fresh) {
  if (seenDecisions.has(d.decision_id)) return;
  seenDecisions.add(d.decision_id);
  const li = el('li');
  li.append(
    el('div', 'title', d.action + (d.agent_ids && d.agent_ids.length ? ' · ' + d.agent_ids.join(', ') : '')),
    el('div', 'meta', (d.reason || '') + ' · ' + new Date(d.ts).toLocaleTimeString()),
  );
  $('#decisions').prepend(li);
  while ($('#decisions').children.length > 20) $('#decisions').lastChild.remove();
  if (fresh) flash(li, 'new');
  $('#decisions-empty').hidden = true;
}

// ----- reports per second chart -----
const WINDOW = 60;
const buckets = new Map(); // second -> count
function countReport() {
  const sec = Math.floor(Date.now() / 1000);
  buckets.set(sec, (buckets.get(sec) || 0) + 1);
}
let lastDraw = 0;
function drawChart() {
  lastDraw = Date.now();
  const canvas = $('#chart');
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== w * dpr) { canvas.width = w * dpr; canvas.height = h * dpr; }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const now = Math.floor(Date.now() / 1000);
  const values = [];
  for (let s = now - WINDOW + 1; s <= now; s++) values.push(buckets.get(s) || 0);
  for (const s of buckets.keys()) if (s <= now - WINDOW) buckets.delete(s);
  const max = Math.max(1, ...values);
  ctx.strokeStyle = '#26313d';
  ctx.beginPath(); ctx.moveTo(0, h - 0.5); ctx.lineTo(w, h - 0.5); ctx.stroke();
  const bw = w / WINDOW;
  ctx.fillStyle = '#388bfd';
  values.forEach((v, i) => {
    const bh = (v / max) * (h - 16);
    ctx.fillRect(i * bw + 1, h - bh, Math.max(1, bw - 2), bh);
  });
  ctx.fillStyle = '#8b98a5';
  ctx.font = '11px system-ui, sans-serif';
  ctx.fillText('max ' + max + '/s', 4, 12);
  $('#rate').textContent = values[values.length - 1] + '/s';
}
setInterval(drawChart, 1000);
window.addEventListener('resize', drawChart);

// ----- first paint from the HTTP API, then live events -----
async function loadAgents() {
  const { agents: list } = await getJson('/api/v1/agents');
  for (const a of list) upsertAgent(a, false);
}
async function loadAlerts() {
  const { open } = await getJson('/api/v1/alerts');
  const ids = new Set(open.map((a) => a.alert_id));
  for (const id of [...openAlerts.keys()]) if (!ids.has(id)) removeAlert({ alert_id: id });
  for (const a of open) addAlert(a, false);
  renderAlertCount();
}
async function loadDecisions() {
  const page = await getJson('/api/v1/channels/decisions/history?limit=20');
  for (const e of page.events) if (e.type === 'decision_made') addDecision(e.data, false);
}
const refetch = (what) => () => what().catch((e) => console.warn('refetch failed', e));

client.subscribe('agents', (e) => {
  if (e.type !== 'agent_status_changed') return;
  const d = e.data;
  upsertAgent({ agent_id: d.agent_id, status: d.new_status, health: d.health, last_seen: d.ts });
  if (d.new_status === 'offline' && d.old_status !== 'offline') toast('offline', `${d.agent_id} went offline`, d.message || '');
}, { onGap: refetch(loadAgents) });

client.subscribe('alerts', (e) => {
  if (e.type === 'alert_triggered') {
    const fresh = !openAlerts.has(e.data.alert_id);
    addAlert(e.data, true);
    if (fresh) toast('alert', `${e.data.level} alert on ${e.data.agent_id}`, `${e.data.check}${e.data.message ? ': ' + e.data.message : ''}`);
  } else if (e.type === 'alert_resolved') removeAlert(e.data);
}, { onGap: refetch(loadAlerts) });

client.subscribe('reports', (e) => {
  if (e.type !== 'report_received') return;
  const r = e.data;
  countReport();
  if (Date.now() - lastDraw > 250) drawChart();
  const checks = r.checks || [];
  upsertAgent({ agent_id: r.agent_id, status: 'online', health: healthOf(checks), last_seen: r.ts, last_report_id: r.report_id, checks });
}, { onGap: refetch(loadAgents) });

client.subscribe('decisions', (e) => {
  if (e.type === 'decision_made') addDecision(e.data, true);
}, { onGap: refetch(loadDecisions) });

Promise.all([loadAgents(), loadAlerts(), loadDecisions()])
  .catch((e) => toast('offline', 'Could not load the current state', e.message));
renderAlertCount();
drawChart();
