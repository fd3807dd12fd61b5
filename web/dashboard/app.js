// The Pulse live dashboard: first paint from the HTTP API, then live events
// through the browser client. No build step, no dependencies.
import { PulseClient } from './pulse-client.js';

const $ = (sel) => document.querySelector(sel);

// ----- token: `?token=X` remembers X, `?token=` forgets it -----
const TOKEN_KEY = 'pulse.token';
const params = new URLSearchParams(location.search);
if (params.has('token')) {
  const given = params.get('token');
  if (given) localStorage.setItem(TOKEN_KEY, given);
  else localStorage.removeItem(TOKEN_KEY);
  // Keep the token out of the address bar (history, bookmarks, screenshots).
  params.delete('token');
  const rest = params.toString();
  history.replaceState(null, '', location.pathname + (rest ? '?' + rest : '') + location.hash);
}
const token = localStorage.getItem(TOKEN_KEY) || null;
const authHeaders = token ? { Authorization: 'Bearer ' + token } : {};

const client = new PulseClient({ token });
// For the console and the tests: the client and a few counters.
window.pulse = { client, stats: { reports: 0, draws: 0 } };

function forgetToken() {
  localStorage.removeItem(TOKEN_KEY);
  location.reload();
}
const forgetButton = $('#forget-token');
forgetButton.hidden = !token;
forgetButton.addEventListener('click', forgetToken);
$('#auth-forget').addEventListener('click', forgetToken);

// ----- auth failures: a refused token must never look like "Live" -----
// `authError` is the last 401/403 from the API or the stream, or null.
let authError = null;
function authFailed(what, status) {
  authError = { what, status };
  renderAuth();
  renderBadge();
}
function authOk() {
  if (!authError || client.fatal) return;
  authError = null;
  renderAuth();
  renderBadge();
}
function renderAuth() {
  const banner = $('#auth-banner');
  banner.hidden = !authError;
  if (!authError) return;
  const why = `${authError.what} answered ${authError.status}`;
  $('#auth-text').textContent = token
    ? `The server refused the saved token (${why}).`
    : `This server needs a token (${why}): open the page with ?token=… .`;
  $('#auth-forget').hidden = !token;
}
client.on('state', () => {
  const f = client.fatal;
  if (f && (f.code === 4401 || f.code === 4403)) authFailed('the event stream', f.code + (f.reason ? ' ' + f.reason : ''));
});

// ----- connection badge: always the client's real state -----
const badge = $('#badge');
let retryAt = 0;
function renderBadge() {
  const s = client.state;
  let state = s;
  let text;
  if (authError) { state = 'unauthorized'; text = token ? 'Token refused' : 'Sign-in required'; }
  else if (s === 'live') text = 'Live' + (client.transport && client.transport !== 'ws' ? ' (' + client.transport.toUpperCase() + ')' : '');
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
// Drop a flash class once its animation ended, so that nothing replays it
// (a row's cells animate while their row has the class).
document.addEventListener('animationend', (e) => {
  const node = e.target.closest('.changed, .new');
  if (node && e.animationName === 'flash') node.classList.remove('changed', 'new');
});
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
  if (res.status === 401 || res.status === 403) {
    authFailed(path.split('?')[0], 'HTTP ' + res.status);
    throw new Error(path + ': HTTP ' + res.status);
  }
  if (!res.ok) throw new Error(path + ': HTTP ' + res.status);
  authOk();
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
const agents = new Map(); // agent_id -> {state, row, cells}
function upsertAgent(patch, changed = true) {
  let a = agents.get(patch.agent_id);
  if (!a) {
    const row = el('tr');
    row.dataset.agent = patch.agent_id;
    const cells = { agent: el('td', 'agent'), status: el('td', 'status'), health: el('td', 'health'), seen: el('td', 'seen'), checks: el('td', 'checks') };
    row.append(cells.agent, cells.status, cells.health, cells.seen, cells.checks);
    a = { state: { status: 'online', health: 'unknown', checks: [] }, row, cells };
    agents.set(patch.agent_id, a);
    insertSorted(row, patch.agent_id);
  }
  const before = a.state.status + '/' + a.state.health;
  Object.assign(a.state, patch);
  const s = a.state;
  // Flash only when the status or health really changed; the cells are
  // updated in place, so a later report does not restart the animation.
  changed = changed && before !== s.status + '/' + s.health;
  const failing = (s.checks || []).filter((c) => c.status !== 'ok').map((c) => c.name + (c.message ? ': ' + c.message : ''));
  a.cells.agent.textContent = s.agent_id;
  setPill(a.cells.status, s.status, 's-' + s.status);
  setPill(a.cells.health, s.health, 'h-' + s.health);
  renderSeen(a);
  a.cells.checks.textContent = failing.join(', ') || '—';
  if (s.last_report_id) a.row.dataset.report = s.last_report_id;
  if (changed) {
    a.row.dataset.changedAt = String(Date.now());
    flash(a.row, 'changed');
  }
  $('#agent-count').textContent = agents.size;
}
function setPill(td, text, pillClass) {
  const pill = td.firstChild || td.appendChild(el('span'));
  pill.className = 'pill ' + pillClass;
  pill.textContent = text;
}
function renderSeen(a) {
  const td = a.cells.seen;
  const ts = a.state.last_seen;
  td.textContent = ts ? ago(ts) : '';
  if (ts) { td.dataset.ts = ts; td.title = new Date(ts).toLocaleString(); }
}
function insertSorted(row, id) {
  const body = $('#agents tbody');
  const next = [...body.children].find((r) => r.dataset.agent > id);
  body.insertBefore(row, next || null);
}
setInterval(() => { for (const a of agents.values()) renderSeen(a); }, 5000);

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
function drawChart() {
  const canvas = $('#chart');
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== w * dpr) { canvas.width = w * dpr; canvas.height = h * dpr; }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  // Completed seconds only: the current one is still counting, and plotting
  // it would show a fraction of the real rate.
  const now = Math.floor(Date.now() / 1000);
  const values = [];
  for (let s = now - WINDOW; s < now; s++) values.push(buckets.get(s) || 0);
  for (const s of buckets.keys()) if (s < now - WINDOW) buckets.delete(s);
  window.pulse.chart = { values, second: now };
  window.pulse.stats.draws++;
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
// Redraw just after each second completes.
(function tick() {
  drawChart();
  setTimeout(tick, 1000 - (Date.now() % 1000) + 20);
})();
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
  // `ts` is when the status changed, not when the agent was last heard
  // from (an agent goes offline a timeout after its last report): keep the
  // last report's time, and read it from the API when it is not known yet.
  const known = agents.get(d.agent_id);
  upsertAgent({ agent_id: d.agent_id, status: d.new_status, health: d.health });
  if (!known || !known.state.last_seen) {
    getJson('/api/v1/agents/' + encodeURIComponent(d.agent_id))
      .then((a) => upsertAgent({ agent_id: d.agent_id, last_seen: a.last_seen }, false))
      .catch((err) => console.warn('agent read failed', err));
  }
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
  window.pulse.stats.reports++;
  const checks = r.checks || [];
  // Pulse's clock (as the API's `last_seen`), not the agent's.
  upsertAgent({ agent_id: r.agent_id, status: 'online', health: healthOf(checks), last_seen: e.ts || r.ts, last_report_id: r.report_id, checks });
}, { onGap: refetch(loadAgents) });

client.subscribe('decisions', (e) => {
  if (e.type === 'decision_made') addDecision(e.data, true);
}, { onGap: refetch(loadDecisions) });

Promise.all([loadAgents(), loadAlerts(), loadDecisions()])
  .catch((e) => toast('offline', 'Could not load the current state', e.message));
renderAlertCount();
