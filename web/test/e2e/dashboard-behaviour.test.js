// What a person watching the dashboard expects, in headless Chromium against
// real standalone `pulse` processes: rows flash only on a real change, the
// rate chart plots completed seconds, an offline agent keeps the time of its
// last report, the client returns to WebSocket after a server restart, a
// refused token is said so and can be forgotten, and the page has an icon.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startStandalone, webDir } from '../harness.js';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const LONG = { timeout: 60000 };
const KEY = 'test-agent-key';
const QUIET_CONFIG = `[checker]
timeout = "2s"
scan_interval = "500ms"
[[ingest.api_keys]]
name = "test-agents"
key = "${KEY}"
role = "agent"
`;
let fleet, quiet, browser;

before(async () => {
  // The demo fleet (30 agents, as `cargo run --release` shows it), and a
  // quiet Pulse whose only reports are the tests' own.
  fleet = await startStandalone({ agents: 30 });
  quiet = await startStandalone({ demo: false, config: QUIET_CONFIG });
  browser = await chromium.launch({
    executablePath: CHROMIUM, headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});
after(async () => {
  await browser?.close();
  await fleet?.close();
  await quiet?.close();
});

let seq = 0;
async function post(base, key, agentId, checks = [{ name: 'load', level: 'L1', status: 'ok' }]) {
  const body = { report_id: `${agentId}-${Date.now()}-${seq++}`, agent_id: agentId, ts: new Date().toISOString(), checks };
  const res = await fetch(`${base}/api/v1/reports`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 202, await res.text());
  return body.report_id;
}

async function openLive(base, path = '/') {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  await page.goto(base + path);
  await page.waitForFunction(() => window.pulse.client.state === 'live'
    && ['agents', 'reports'].every((c) => window.pulse.client.lastId(c)), null, LONG);
  return { page, errors };
}

/** Running animations of an agent's row (its cells included). */
const rowAnimations = (page, agent) => page.evaluate((a) => document.querySelector(`tr[data-agent="${a}"]`).getAnimations({ subtree: true }).length, agent);

/** Waits until the row shows `reportId`, then counts its running animations in the same frame. */
async function animationsOnceShown(page, agent, reportId) {
  const handle = await page.waitForFunction(({ a, id }) => {
    const row = document.querySelector(`tr[data-agent="${a}"]`);
    return row && row.dataset.report === id ? { n: row.getAnimations({ subtree: true }).length } : null;
  }, { a: agent, id: reportId }, LONG);
  return (await handle.jsonValue()).n;
}

test('a row flashes on a real status change only, not on every later report', async () => {
  const { page, errors } = await openLive(fleet.base);
  try {
    const agent = 'flash-1';
    await animationsOnceShown(page, agent, await post(fleet.base, 'demo-agent-key', agent, [{ name: 'disk:/', level: 'L2', status: 'warn', message: '81%' }]));
    await page.waitForFunction((a) => document.querySelector(`tr[data-agent="${a}"]`).getAnimations({ subtree: true }).length === 0, agent, LONG);
    // degraded -> healthy: a real change flashes.
    assert.ok(await animationsOnceShown(page, agent, await post(fleet.base, 'demo-agent-key', agent)) > 0, 'a real change flashes');
    await page.waitForFunction((a) => document.querySelector(`tr[data-agent="${a}"]`).getAnimations({ subtree: true }).length === 0, agent, LONG);
    // The same state again: no flash, however many reports.
    for (let i = 0; i < 3; i++) {
      assert.equal(await animationsOnceShown(page, agent, await post(fleet.base, 'demo-agent-key', agent)), 0, `report ${i} without a change flashed`);
    }
    assert.equal(await rowAnimations(page, agent), 0);

    // The whole fleet: every row that animates changed recently (the animation lasts 2.5 s).
    await page.evaluate(() => {
      window.stale = new Set();
      window.samples = 0;
      window.sampler = setInterval(() => {
        window.samples++;
        for (const row of document.querySelectorAll('#agents tbody tr')) {
          if (row.getAnimations({ subtree: true }).length && Date.now() - Number(row.dataset.changedAt || 0) > 4000) window.stale.add(row.dataset.agent);
        }
      }, 100);
    });
    // 30 agents every 2 s: wait for a few rounds of reports.
    const start = await page.evaluate(() => window.pulse.stats.reports);
    await page.waitForFunction((n) => window.pulse.stats.reports >= n + 120, start, LONG);
    const stale = await page.evaluate(() => { clearInterval(window.sampler); return [...window.stale]; });
    assert.ok(await page.evaluate(() => window.samples) > 20);
    assert.deepEqual(stale, [], 'rows animating without a recent change');
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
  }
});

test('reports per second plots completed seconds only', async () => {
  const page = await browser.newPage();
  try {
    // Date.now() fixed inside one second; timers keep running.
    const second = Math.floor(Date.now() / 1000) * 1000;
    await page.clock.setFixedTime(second + 300);
    await page.goto(quiet.base + '/');
    await page.waitForFunction(() => window.pulse.client.state === 'live' && window.pulse.client.lastId('reports'), null, LONG);
    const ids = [];
    for (let i = 0; i < 7; i++) ids.push(await post(quiet.base, KEY, `rate-${i}`));
    await page.waitForFunction((n) => window.pulse.stats.reports === n, ids.length, LONG);
    const draws = await page.evaluate(() => window.pulse.stats.draws);
    await page.waitForFunction((d) => window.pulse.stats.draws > d, draws, LONG);
    // The 7 reports are in the current, unfinished second: not plotted yet.
    assert.equal(await page.evaluate(() => window.pulse.chart.values.reduce((a, b) => a + b, 0)), 0);
    assert.equal(await page.textContent('#rate'), '0/s');
    // That second completes: it is plotted, whole.
    await page.clock.setFixedTime(second + 1300);
    await page.waitForFunction(() => window.pulse.chart.values.at(-1) === 7, null, LONG);
    assert.equal(await page.textContent('#rate'), '7/s');
    assert.equal(await page.evaluate(() => window.pulse.chart.values.reduce((a, b) => a + b, 0)), 7);
  } finally {
    await page.close();
  }
});

test("an offline agent's last seen is its last report, not the offline event", async () => {
  const { page, errors } = await openLive(quiet.base);
  try {
    await page.evaluate(() => {
      window.reportTs = null;
      window.pulse.client.subscribe('reports', (e) => { if (e.data.agent_id === 'quiet-1') window.reportTs = e.ts; });
    });
    await post(quiet.base, KEY, 'quiet-1');
    await page.waitForFunction(() => window.reportTs, null, LONG);
    const reportTs = await page.evaluate(() => window.reportTs);
    // No more reports: the checker turns it offline after 2 s.
    await page.locator('tr[data-agent="quiet-1"] td.status', { hasText: 'offline' }).waitFor(LONG);
    const seen = await page.getAttribute('tr[data-agent="quiet-1"] td.seen', 'data-ts');
    assert.equal(seen, reportTs);
    // The API (the first paint after a reload) agrees within Pulse's own handling time.
    const api = await (await fetch(`${quiet.base}/api/v1/agents/quiet-1`)).json();
    assert.equal(api.status, 'offline');
    assert.ok(Math.abs(Date.parse(api.last_seen) - Date.parse(seen)) < 1000, `${api.last_seen} vs ${seen}`);
    await page.reload();
    await page.locator('tr[data-agent="quiet-1"] td.status', { hasText: 'offline' }).waitFor(LONG);
    assert.equal(await page.getAttribute('tr[data-agent="quiet-1"] td.seen', 'data-ts'), api.last_seen);
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
  }
});

test('the page has an SVG favicon', async () => {
  const { page } = await openLive(fleet.base);
  try {
    const href = await page.evaluate(() => document.querySelector('link[rel="icon"]').href);
    const res = await fetch(href);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^image\/svg\+xml/);
    assert.match(await res.text(), /<svg[\s>]/);
  } finally {
    await page.close();
  }
});

test('?token= is remembered, a refusal is shown, and ?token= (empty) forgets it', async () => {
  const page = await browser.newPage();
  const refused = [];
  page.on('response', (r) => { if (r.url().includes('/api/') && [401, 403].includes(r.status())) refused.push(r.status()); });
  try {
    await page.goto(fleet.base + '/?token=stale-token');
    assert.equal(await page.evaluate(() => localStorage.getItem('pulse.token')), 'stale-token');
    assert.equal(new URL(page.url()).search, '', 'the token leaves the address bar');
    await page.locator('#forget-token').waitFor({ state: 'visible', ...LONG });
    // Whatever this server does with a token it does not need, a 401/403
    // from the API is never hidden behind a "Live" badge.
    await page.waitForFunction(() => window.pulse.client.state === 'live' || document.querySelector('#badge').dataset.state === 'unauthorized', null, LONG);
    await page.waitForLoadState('networkidle');
    if (refused.length) {
      assert.equal(await page.isVisible('#auth-banner'), true);
      assert.equal(await page.textContent('#badge'), 'Token refused');
    }
    await page.goto(fleet.base + '/?token=');
    assert.equal(await page.evaluate(() => localStorage.getItem('pulse.token')), null);
    await page.waitForFunction(() => document.querySelector('#badge').textContent === 'Live', null, LONG);
    await page.waitForFunction(() => document.querySelectorAll('#agents tbody tr').length >= 30, null, LONG);
    assert.equal(await page.isVisible('#auth-banner'), false);
    assert.equal(await page.isVisible('#forget-token'), false);
  } finally {
    await page.close();
  }
});

test('a server that requires a token: the refusal is said, and the token can be forgotten', async () => {
  const secured = await startStandalone({ demo: false, env: { PULSE__AUTH__ANONYMOUS: 'false', PULSE__AUTH__SECRET: 'e2e-secret-0123456789abcdef0123456789' } });
  const page = await browser.newPage();
  try {
    await page.goto(secured.base + '/?token=not-a-jwt');
    await page.waitForFunction(() => document.querySelector('#badge').dataset.state === 'unauthorized', null, LONG);
    assert.equal(await page.textContent('#badge'), 'Token refused');
    await page.locator('#auth-banner').waitFor({ state: 'visible', ...LONG });
    assert.match(await page.textContent('#auth-text'), /refused the saved token \(.* (401|4401|4403)\b/);
    mkdirSync(path.join(webDir, 'test-results'), { recursive: true });
    await page.screenshot({ path: path.join(webDir, 'test-results', 'dashboard-token-refused.png') });
    await page.click('#auth-forget');
    await page.waitForFunction(() => localStorage.getItem('pulse.token') === null && document.querySelector('#auth-banner') && !document.querySelector('#auth-banner').hidden, null, LONG);
    assert.match(await page.textContent('#auth-text'), /needs a token/);
    assert.equal(await page.textContent('#badge'), 'Sign-in required');
    assert.equal(await page.isVisible('#forget-token'), false);
  } finally {
    await page.close();
    await secured.close();
  }
});

// Last: it restarts the quiet server.
test('after a server restart the client comes back to WebSocket by itself', async () => {
  const { page, errors } = await openLive(quiet.base);
  try {
    assert.equal(await page.evaluate(() => window.pulse.client.transport), 'ws');
    await page.evaluate(() => {
      window.liveOn = [];
      window.pulse.client.on('state', (s) => { if (s === 'live') window.liveOn.push(window.pulse.client.transport); });
    });
    await quiet.stop();
    // Down long enough for the client to give up on WebSocket (as in a ~12 s restart).
    await page.waitForFunction(() => ['sse', 'poll'].includes(window.pulse.client.transport), null, LONG);
    await quiet.start();
    await page.waitForFunction(() => window.pulse.client.state === 'live', null, { timeout: 90000 });
    // Back on a fallback first, then on WebSocket without a reload.
    await page.waitForFunction(() => window.pulse.client.state === 'live' && window.pulse.client.transport === 'ws', null, { timeout: 90000 });
    assert.equal(await page.textContent('#badge'), 'Live');
    const liveOn = await page.evaluate(() => window.liveOn);
    assert.equal(liveOn.at(-1), 'ws');
    assert.ok(liveOn.some((t) => t !== 'ws'), `went live on a fallback first: ${liveOn}`);
    // And the stream works: a new report shows up.
    const id = await post(quiet.base, KEY, 'after-restart');
    await page.waitForFunction((rid) => document.querySelector('tr[data-agent="after-restart"]')?.dataset.report === rid, id, LONG);
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
  }
});
