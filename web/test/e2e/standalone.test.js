// The dashboard served by standalone `pulse` with its demo fleet.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startStandalone, webDir } from '../harness.js';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const LONG = { timeout: 60000 };
let pulse, browser;

before(async () => {
  pulse = await startStandalone({ agents: 12 });
  browser = await chromium.launch({
    executablePath: CHROMIUM, headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});
after(async () => {
  await browser?.close();
  await pulse?.close();
});

test('standalone: the dashboard goes live and shows the demo fleet', async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  try {
    await page.goto(pulse.base + '/');
    await page.waitForFunction(() => document.querySelector('#badge').dataset.state === 'live', null, LONG);
    await page.waitForFunction(() => document.querySelectorAll('#agents tbody tr').length >= 12, null, LONG);
    // Live reports keep arriving: the last-seen of the fleet stays fresh and the chart counts them.
    await page.waitForFunction(() => window.pulse.client.lastId('reports') !== null, null, LONG);
    const first = await page.evaluate(() => window.pulse.client.lastId('reports'));
    await page.waitForFunction((id) => window.pulse.client.lastId('reports') !== id, first, LONG);
    mkdirSync(path.join(webDir, 'test-results'), { recursive: true });
    await page.screenshot({ path: path.join(webDir, 'test-results', 'dashboard-standalone.png'), fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
  }
});
