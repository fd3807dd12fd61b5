// The dashboard end to end in real headless Chromium against a real Pulse
// deployment (redis-server, pulse-ingest, pulse-gateway behind a proxy).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startStack, postReport, report, publish, webDir, freePort } from '../harness.js';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const LONG = { timeout: 60000 };
let stack, browser;

before(async () => {
  stack = await startStack();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    // playwright-core gives every launch a fresh temporary profile (user-data-dir).
  });
});
after(async () => {
  await browser?.close();
  await stack?.stop();
});

test('dashboard: live badge, reports, alerts, gateway restart without loss, screenshot', async () => {
  // Some state before the page opens: the first paint comes from the HTTP API.
  await postReport(stack.ingestBase, report('db-1', [{ name: 'disk:/', level: 'L2', status: 'warn', message: '81% used' }]));
  await publish(stack.ingestBase, 'decisions', 'decision_made', {
    decision_id: 'dec-1', action: 'drain', reason: 'disk pressure', agent_ids: ['db-1'], ts: new Date().toISOString(), details: {},
  });

  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  try {
    await page.goto(stack.base + '/');
    const badge = page.locator('#badge');
    await page.waitForFunction(() => document.querySelector('#badge').dataset.state === 'live', null, LONG);
    assert.equal(await badge.textContent(), 'Live');
    await page.locator('tr[data-agent="db-1"]').waitFor(LONG);
    assert.match(await page.locator('tr[data-agent="db-1"]').textContent(), /degraded/);
    await page.locator('#decisions li', { hasText: 'drain' }).waitFor(LONG);

    // Subscribed (the client knows a position on each channel) before posting.
    await page.waitForFunction(() => ['agents', 'alerts', 'reports', 'decisions'].every((c) => window.pulse.client.lastId(c)), null, LONG);

    // A report posted over HTTP appears.
    await postReport(stack.ingestBase, report('web-1'));
    await page.locator('tr[data-agent="web-1"]', { hasText: 'healthy' }).waitFor(LONG);

    // An L3 failure raises an alert, shown with a toast.
    await postReport(stack.ingestBase, report('web-1', [{ name: 'disk:/', level: 'L3', status: 'fail', message: '97% used' }]));
    await page.locator('#alerts li', { hasText: 'web-1' }).waitFor(LONG);
    assert.match(await page.locator('#alerts li').first().textContent(), /L3 · web-1 · disk:\//);
    await page.locator('.toast', { hasText: 'L3 alert on web-1' }).waitFor(LONG);
    await page.locator('tr[data-agent="web-1"]', { hasText: 'critical' }).waitFor(LONG);

    // Stop the gateway; Redis and ingest keep running.
    await stack.gatewayStop();
    await page.waitForFunction(() => ['reconnecting', 'disconnected', 'offline'].includes(document.querySelector('#badge').dataset.state), null, LONG);
    assert.match(await badge.textContent(), /Reconnecting|Disconnected/);
    // Events published while the gateway is away.
    await postReport(stack.ingestBase, report('cache-1', [{ name: 'mem', level: 'L3', status: 'fail', message: 'oom risk' }]));
    await publish(stack.ingestBase, 'decisions', 'decision_made', {
      decision_id: 'dec-2', action: 'restart', reason: 'while away', agent_ids: ['cache-1'], ts: new Date().toISOString(), details: {},
    });
    await page.waitForFunction(() => document.querySelector('#badge').dataset.state === 'disconnected', null, LONG);

    await stack.gatewayStart();
    await page.waitForFunction(() => document.querySelector('#badge').dataset.state === 'live', null, { timeout: 90000 });
    assert.equal(await badge.textContent(), 'Live');
    await page.locator('#alerts li', { hasText: 'cache-1' }).waitFor(LONG);
    await page.locator('#decisions li', { hasText: 'restart' }).waitFor(LONG);
    await page.locator('tr[data-agent="cache-1"]').waitFor(LONG);
    // Shown once: a later event proves the stream is past them, then count.
    await postReport(stack.ingestBase, report('web-2'));
    await page.locator('tr[data-agent="web-2"]').waitFor(LONG);
    assert.equal(await page.locator('#alerts li', { hasText: 'cache-1' }).count(), 1);
    assert.equal(await page.locator('#decisions li', { hasText: 'restart' }).count(), 1);
    assert.equal(await page.locator('.toast', { hasText: 'L3 alert on cache-1' }).count(), 1);
    assert.equal(await page.locator('tr[data-agent="cache-1"]').count(), 1);
    assert.equal(await page.locator('#alerts li').count(), 2);

    mkdirSync(path.join(webDir, 'test-results'), { recursive: true });
    await page.screenshot({ path: path.join(webDir, 'test-results', 'dashboard.png'), fullPage: true });

    // A narrow screen: one column, no horizontal overflow of the page.
    await page.setViewportSize({ width: 380, height: 800 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `page overflows a narrow screen by ${overflow}px`);
    await page.screenshot({ path: path.join(webDir, 'test-results', 'dashboard-narrow.png'), fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
  }
});

test('the client in the browser over SSE (real EventSource) resumes after a gateway restart', async () => {
  const page = await browser.newPage();
  try {
    await page.goto(stack.base + '/pulse-client.js'); // same origin, nothing running
    await page.evaluate(async () => {
      const { PulseClient } = await import('/pulse-client.js');
      window.got = [];
      window.c = new PulseClient({ transports: ['sse'], backoff: { initialMs: 100, maxMs: 1000 } });
      window.c.subscribe('sse-test', (e) => window.got.push(e.data.n));
    });
    await page.waitForFunction(() => window.c.state === 'live' && window.c.transport === 'sse' && window.c.lastId('sse-test'), null, LONG);
    await publish(stack.ingestBase, 'sse-test', 'x', { n: 1 });
    await page.waitForFunction(() => window.got.length === 1, null, LONG);
    await stack.gatewayStop();
    await page.waitForFunction(() => window.c.state === 'reconnecting', null, LONG);
    await publish(stack.ingestBase, 'sse-test', 'x', { n: 2 });
    await stack.gatewayStart();
    await page.waitForFunction(() => window.c.state === 'live', null, { timeout: 90000 });
    await publish(stack.ingestBase, 'sse-test', 'x', { n: 3 });
    await page.waitForFunction(() => window.got.length >= 3, null, LONG);
    assert.deepEqual(await page.evaluate(() => window.got), [1, 2, 3]);
    await page.evaluate(() => window.c.destroy());
  } finally {
    await page.close();
  }
});

test('the client in the browser falls back to SSE when WebSocket cannot connect', async () => {
  const page = await browser.newPage();
  try {
    await page.goto(stack.base + '/pulse-client.js');
    const deadPort = await freePort();
    await page.evaluate(async ({ base, deadPort }) => {
      const { PulseClient } = await import('/pulse-client.js');
      window.got = [];
      // WebSocket to a port nobody listens on: blocked, as by a proxy that refuses upgrades.
      window.c = new PulseClient({ url: `ws://127.0.0.1:${deadPort}/ws`, httpBase: base, backoff: { initialMs: 50, maxMs: 200 }, sseAfterAttempts: 3 });
      window.c.subscribe('fallback', (e) => window.got.push(e.data.n));
    }, { base: stack.base, deadPort });
    await page.waitForFunction(() => window.c.state === 'live' && window.c.transport === 'sse' && window.c.lastId('fallback'), null, LONG);
    await publish(stack.ingestBase, 'fallback', 'x', { n: 1 });
    await page.waitForFunction(() => window.got.length === 1, null, LONG);
    await page.evaluate(() => window.c.destroy());
  } finally {
    await page.close();
  }
});
