import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { PulseClient, backoffDelay, compareOffsets, comparePositions, isNewer, parsePosition, shouldReconnect } from '../../client/pulse-client.js';
import { FakeClock, fakeSocketFactory, fakeWindow, flush } from './fakes.js';

function setup(extra = {}) {
  const clock = new FakeClock();
  const { FakeWebSocket, sockets } = fakeSocketFactory();
  const win = fakeWindow();
  const states = [];
  let r = 0.5;
  const client = new PulseClient({
    WebSocket: FakeWebSocket, EventSource: null, fetch: null, clock, window: win,
    random: () => r, backoff: { initialMs: 100, maxMs: 1000 }, ...extra,
  });
  client.on('state', (s) => states.push(s));
  return { client, clock, sockets, win, states, setRandom: (v) => { r = v; }, last: () => sockets[sockets.length - 1] };
}

test('derives wss from an https page and sends the token in an auth message', async () => {
  const { client, last } = setup({ token: 'jwt' });
  await flush();
  assert.equal(last().url, 'wss://pulse.example:8443/ws');
  last().open();
  assert.deepEqual(last().sent[0], { type: 'auth', token: 'jwt' });
  client.destroy();
});

test('token query fallback', async () => {
  const { client, last } = setup({ url: 'ws://h:1/ws', token: 'a b', tokenInQuery: true });
  await flush();
  assert.equal(last().url, 'ws://h:1/ws?token=a%20b');
  last().open();
  assert.equal(last().sent.length, 0);
  client.destroy();
});

test('backoff is full jitter, exponential and capped', () => {
  const cfg = { initialMs: 100, maxMs: 1000, factor: 2 };
  assert.equal(backoffDelay(0, cfg, () => 0.999999), 99);
  assert.equal(backoffDelay(3, cfg, () => 0.5), 400);
  assert.equal(backoffDelay(4, cfg, () => 0.999999), 999);
  assert.equal(backoffDelay(50, cfg, () => 0.999999), 999);
  assert.equal(backoffDelay(5000, cfg, () => 0.5), 500);
  assert.equal(backoffDelay(7, cfg, () => 0), 0);
});

test('reconnects forever with capped jittered delays, resetting after a live connection', async () => {
  const { client, clock, sockets, states, setRandom, last } = setup();
  await flush();
  assert.equal(client.state, 'connecting');
  setRandom(0.999);
  for (let i = 0; i < 40; i++) {
    const before = sockets.length;
    last().fail();
    const expected = Math.floor(0.999 * Math.min(1000, 100 * 2 ** i));
    const pending = clock.pending();
    assert.equal(pending[0], expected, `attempt ${i}`);
    await clock.tick(expected);
    assert.equal(sockets.length, before + 1, `reconnected after attempt ${i}`);
  }
  assert.equal(client.state, 'reconnecting');
  last().open();
  last().welcome();
  assert.equal(client.state, 'live');
  last().serverClose(1011);
  assert.equal(clock.pending()[0], Math.floor(0.999 * 1000), 'a connection dropped at once keeps backing off');
  await clock.tick(1000);
  last().open();
  last().welcome(10000);
  await clock.tick(5000);
  last().serverClose(1011);
  assert.equal(clock.pending()[0], Math.floor(0.999 * 100), 'backoff starts over after a stable connection');
  assert.deepEqual(states.slice(-2), ['live', 'reconnecting']);
  client.destroy();
});

test('resumes every subscription from its last id and reports gaps', async () => {
  const { client, clock, last } = setup();
  await flush();
  const got = [];
  const gaps = [];
  client.subscribe('alerts', (e) => got.push(e.id), { onGap: (c) => gaps.push(c) });
  client.subscribe('agents', (e) => got.push(e.id));
  last().open();
  last().welcome();
  assert.deepEqual(last().sent, [{ type: 'subscribe', channel: 'alerts' }, { type: 'subscribe', channel: 'agents' }]);
  last().receive({ type: 'subscribed', channel: 'alerts', offset: '5-0', recovered: true });
  last().receive({ type: 'subscribed', channel: 'agents', offset: '7-0', recovered: true });
  last().receive({ type: 'alert_triggered', channel: 'alerts', id: '10-0', data: {} });
  last().receive({ type: 'alert_triggered', channel: 'alerts', id: '10-1', data: {} });
  last().receive({ type: 'alert_triggered', channel: 'alerts', id: '10-1', data: {} }); // duplicate dropped
  assert.deepEqual(got, ['10-0', '10-1']);
  last().serverClose(4000, 'slow consumer');
  await clock.tick(1000);
  last().open();
  last().welcome();
  assert.deepEqual(last().sent, [
    { type: 'subscribe', channel: 'alerts', since: '10-1' },
    { type: 'subscribe', channel: 'agents', since: '7-0' },
  ]);
  last().receive({ type: 'subscribed', channel: 'alerts', offset: '20-0', recovered: false });
  assert.deepEqual(gaps, ['alerts']);
  assert.equal(client.lastId('alerts'), '20-0');
  client.destroy();
});

test('unsubscribe sends unsubscribe when the last handler leaves', async () => {
  const { client, last } = setup();
  await flush();
  last().open();
  last().welcome();
  const a = client.subscribe('reports', () => {});
  const b = client.subscribe('reports', () => {});
  assert.equal(last().sent.length, 1);
  a();
  assert.equal(last().sent.length, 1);
  b();
  assert.deepEqual(last().sent[1], { type: 'unsubscribe', channel: 'reports' });
  client.destroy();
});

test('detects a silent server from the heartbeat and reconnects; pings keep it alive', async () => {
  const { client, clock, sockets, last } = setup();
  await flush();
  last().open();
  last().welcome(1000);
  const ws = last();
  await clock.tick(1000);
  assert.deepEqual(ws.sent.at(-1), { type: 'ping' });
  ws.receive({ type: 'pong' });
  await clock.tick(1000);
  ws.receive({ type: 'pong' });
  await clock.tick(1000);
  assert.equal(client.state, 'live', 'frames keep the connection alive');
  // now silence
  await clock.tick(3000);
  assert.equal(client.state, 'reconnecting');
  assert.ok(ws.closedByClient, 'the dead socket was closed');
  await clock.tick(200);
  assert.equal(sockets.length, 2);
  client.destroy();
});

test('close-code policy', async () => {
  for (const code of [1008, 1009, 4401, 4403]) {
    const { client, clock, sockets, last } = setup();
    await flush();
    last().open();
    last().welcome();
    last().serverClose(code);
    assert.equal(client.state, 'offline', `code ${code}`);
    await clock.tick(60000);
    assert.equal(sockets.length, 1, `no reconnect after ${code}`);
    client.setToken('fresh');
    await flush();
    assert.equal(sockets.length, 2, `a new token reconnects after ${code}`);
    client.destroy();
  }
  for (const code of [1000, 1001, 1006, 1011, 1013, 4000, 4001]) assert.ok(shouldReconnect(code), String(code));
  // 1012: reconnect at once (within a small jitter), not after the backoff.
  const { client, clock, sockets, last, setRandom } = setup({ backoff: { initialMs: 10000, maxMs: 30000 } });
  setRandom(0.999);
  await flush();
  last().open();
  last().welcome();
  last().serverClose(1012, 'draining');
  await clock.tick(250);
  assert.equal(sockets.length, 2);
  client.destroy();
});

test('4401 with getToken fetches a new token and reconnects', async () => {
  let n = 0;
  const { client, clock, sockets, last } = setup({ getToken: async () => 'tok' + ++n });
  await flush();
  last().open();
  assert.deepEqual(last().sent[0], { type: 'auth', token: 'tok1' });
  last().welcome();
  last().serverClose(4401, 'token expired');
  await clock.tick(1000);
  assert.equal(sockets.length, 2);
  last().open();
  assert.deepEqual(last().sent[0], { type: 'auth', token: 'tok2' });
  client.destroy();
});

test('reconnects at once when the browser comes back online', async () => {
  const { client, clock, sockets, win, last } = setup({ backoff: { initialMs: 60000, maxMs: 60000 } });
  await flush();
  last().open();
  last().welcome();
  win.navigator.onLine = false;
  last().fail();
  await clock.tick(120000);
  assert.equal(sockets.length, 1, 'waits for online while the browser is offline');
  win.navigator.onLine = true;
  win.dispatch('online');
  await flush();
  assert.equal(sockets.length, 2);
  assert.equal(client.state, 'reconnecting');
  client.destroy();
});

test('falls back to SSE after failed WebSocket attempts, then to polling', async () => {
  const clock = new FakeClock();
  const { FakeWebSocket, sockets } = fakeSocketFactory();
  const sources = [];
  class FakeEventSource {
    constructor(url) { this.url = url; sources.push(this); }
    close() { this.closed = true; }
  }
  const fetches = [];
  const fetch = async (url) => {
    fetches.push(url);
    const after = new URL(url).searchParams.get('after');
    return { ok: true, status: 200, json: async () => after
      ? { channel: 'alerts', events: [{ type: 'x', channel: 'alerts', id: '9-0', data: {} }], truncated: false, next: '9-0' }
      : { channel: 'alerts', events: [], truncated: false, next: '8-0' } };
  };
  const client = new PulseClient({ url: 'ws://h:9/ws', apiBase: 'http://api:1', WebSocket: FakeWebSocket, EventSource: FakeEventSource, fetch, clock, window: null,
    random: () => 0.5, backoff: { initialMs: 10, maxMs: 10 }, sseAfterAttempts: 2, pollAfterAttempts: 3, pollIntervalMs: 1000 });
  const got = [];
  client.subscribe('alerts', (e) => got.push(e.id));
  client.subscribe('agents', () => {});
  await flush();
  sockets[0].fail();
  await clock.tick(10);
  sockets[1].fail();
  await clock.tick(10);
  assert.equal(sockets.length, 2);
  assert.equal(sources.length, 1);
  assert.equal(client.transport, 'sse');
  assert.equal(sources[0].url, 'http://h:9/sse?channels=alerts,agents');
  sources[0].onopen();
  sources[0].onmessage({ data: JSON.stringify({ type: 'welcome', heartbeat_interval_ms: 1000 }) });
  sources[0].onmessage({ data: JSON.stringify({ type: 'alert_triggered', channel: 'alerts', id: '3-0', data: {} }) });
  assert.equal(client.state, 'live');
  assert.deepEqual(got, ['3-0']);
  sources[0].onerror();
  await clock.tick(10);
  assert.equal(sources[1].url, 'http://h:9/sse?channels=alerts,agents&last_event_id=' + encodeURIComponent('alerts@3-0'));
  sources[1].onerror(); // never opened
  await clock.tick(10);
  assert.equal(client.transport, 'poll');
  await clock.tick(1);
  assert.ok(fetches[0].startsWith('http://api:1/api/v1/channels/alerts/history?after=3-0'));
  assert.deepEqual(got, ['3-0', '9-0']);
  assert.equal(client.state, 'live');
  client.destroy();
});

test('offsets compare numerically', () => {
  assert.ok(compareOffsets('10-0', '9-5') > 0);
  assert.ok(compareOffsets('10-2', '10-10') < 0);
  assert.equal(compareOffsets('5-1', '5-1'), 0);
});

test('positions: epoch form and legacy form parse; different epochs do not compare', () => {
  assert.deepEqual(parsePosition('k3f9x2ab:1763800000000-0'), { epoch: 'k3f9x2ab', ms: '1763800000000', seq: '0' });
  assert.deepEqual(parsePosition('1763800000000-12'), { epoch: null, ms: '1763800000000', seq: '12' });
  assert.equal(parsePosition('ABC:1-0'), null, 'epochs are [0-9a-z]');
  assert.equal(parsePosition('toolongepoch12345:1-0'), null, 'epochs are at most 16 characters');
  assert.equal(parsePosition('1-0-0'), null);
  assert.equal(parsePosition(undefined), null);
  assert.ok(comparePositions('e1:10-0', 'e1:9-5') > 0);
  assert.ok(comparePositions('e1:10-2', 'e1:10-10') < 0);
  assert.equal(comparePositions('e1:5-1', 'e1:5-1'), 0);
  assert.ok(comparePositions('99999999999999999999-0', '99999999999999999998-7') > 0, 'exact beyond 2^53');
  assert.equal(comparePositions('e1:10-0', 'e2:9-0'), null);
  assert.equal(comparePositions('e1:10-0', '9-0'), null, 'a legacy position is of an unknown epoch');
  assert.ok(comparePositions('10-0', '9-0') > 0, 'legacy positions compare with each other');
  assert.ok(compareOffsets('e1:10-0', 'e2:9-0') > 0, 'compareOffsets ignores epochs (legacy callers)');
  assert.equal(isNewer('e2:1-0', 'e1:50-0'), true);
  assert.equal(isNewer('e1:50-0', 'e1:50-0'), false);
  assert.equal(isNewer('e1:1-0', null), true);
});

/** A live client on one fake socket with `channel` subscribed; returns what it delivers. */
async function liveOn(channel, subscribeOptions = {}) {
  const ctx = setup();
  await flush();
  const got = [];
  const gaps = [];
  ctx.client.subscribe(channel, (e) => got.push(e.id), { onGap: (c) => gaps.push(c), ...subscribeOptions });
  ctx.last().open();
  ctx.last().welcome();
  return { ...ctx, got, gaps };
}

test('an event of a new epoch with a lower ms is delivered and remembered', async () => {
  const { client, last, got } = await liveOn('alerts');
  last().receive({ type: 'subscribed', channel: 'alerts', offset: 'aaa:1763800000000-0', recovered: true });
  last().receive({ type: 'x', channel: 'alerts', id: 'aaa:1763800000500-0', data: {} });
  // The history was lost and started over (e.g. Redis restarted empty):
  // the new epoch's first positions are lower.
  last().receive({ type: 'x', channel: 'alerts', id: 'bbb:1-0', data: {} });
  last().receive({ type: 'x', channel: 'alerts', id: 'bbb:1-0', data: {} }); // duplicate in the new epoch
  last().receive({ type: 'x', channel: 'alerts', id: 'bbb:2-0', data: {} });
  assert.deepEqual(got, ['aaa:1763800000500-0', 'bbb:1-0', 'bbb:2-0']);
  assert.equal(client.lastId('alerts'), 'bbb:2-0');
  client.destroy();
});

test('a future since is replaced by the head from subscribed{recovered:false}: live events flow', async () => {
  const { client, last, got, gaps } = await liveOn('alerts', { since: 'e1:9999999999999-0' });
  assert.deepEqual(last().sent, [{ type: 'subscribe', channel: 'alerts', since: 'e1:9999999999999-0' }]);
  last().receive({ type: 'subscribed', channel: 'alerts', offset: 'e1:1763800000000-4', recovered: false });
  assert.deepEqual(gaps, ['alerts'], 'recovered:false fires the gap handler');
  assert.equal(client.lastId('alerts'), 'e1:1763800000000-4', 'the head replaces the future position');
  for (let i = 5; i < 8; i++) last().receive({ type: 'x', channel: 'alerts', id: `e1:1763800000000-${i}`, data: {} });
  assert.deepEqual(got, ['e1:1763800000000-5', 'e1:1763800000000-6', 'e1:1763800000000-7']);
  client.destroy();
});

test('the same with legacy positions (a server without epochs)', async () => {
  const { client, last, got, gaps } = await liveOn('alerts', { since: '9999999999999-0' });
  last().receive({ type: 'subscribed', channel: 'alerts', offset: '1763800000000-4', recovered: false });
  for (let i = 5; i < 8; i++) last().receive({ type: 'x', channel: 'alerts', id: `1763800000000-${i}`, data: {} });
  last().receive({ type: 'x', channel: 'alerts', id: '1763800000000-6', data: {} }); // already seen
  assert.deepEqual(got, ['1763800000000-5', '1763800000000-6', '1763800000000-7']);
  assert.deepEqual(gaps, ['alerts']);
  client.destroy();
});

test('a mid-stream recovered:false fires the gap handlers and moves the position', async () => {
  const { client, last, got, gaps } = await liveOn('alerts');
  const seen = [];
  client.on('gap', (c) => seen.push(c));
  last().receive({ type: 'subscribed', channel: 'alerts', offset: 'e1:10-0', recovered: true });
  last().receive({ type: 'x', channel: 'alerts', id: 'e1:11-0', data: {} });
  last().receive({ type: 'subscribed', channel: 'alerts', offset: 'e1:20-0', recovered: false });
  last().receive({ type: 'x', channel: 'alerts', id: 'e1:21-0', data: {} });
  // An event a backend published with the type "gap" is an event, not a notice.
  last().receive({ type: 'gap', channel: 'alerts', id: 'e1:22-0', data: {} });
  assert.deepEqual(got, ['e1:11-0', 'e1:21-0', 'e1:22-0']);
  assert.deepEqual(gaps, ['alerts']);
  assert.deepEqual(seen, ['alerts']);
  client.destroy();
});

test('resubscribes after a reconnect with the position of the current epoch', async () => {
  const { client, clock, last } = await liveOn('alerts');
  last().receive({ type: 'subscribed', channel: 'alerts', offset: 'e1:10-0', recovered: true });
  last().receive({ type: 'x', channel: 'alerts', id: 'e2:3-0', data: {} });
  last().serverClose(1011);
  await clock.tick(1000);
  last().open();
  last().welcome();
  assert.deepEqual(last().sent, [{ type: 'subscribe', channel: 'alerts', since: 'e2:3-0' }]);
  client.destroy();
});

function pollSetup(pages) {
  const clock = new FakeClock();
  const fetches = [];
  const fetch = async (url) => {
    fetches.push(url);
    const page = pages.shift();
    if (!page) throw new Error('no more pages');
    return { ok: true, status: 200, json: async () => page };
  };
  const client = new PulseClient({ url: 'ws://h:9/ws', apiBase: 'http://api:1', WebSocket: null, EventSource: null, fetch, clock, window: null,
    random: () => 0.5, transports: ['poll'], pollIntervalMs: 1000 });
  return { client, clock, fetches };
}

test('polling: truncated fires the gap handler, events of the new epoch are delivered, next replaces the position', async () => {
  const { client, clock, fetches } = pollSetup([
    { events: [], truncated: false, next: 'e1:50-0' },
    // The history started over: `after=e1:50-0` is from a dead epoch.
    { events: [{ type: 'x', channel: 'alerts', id: 'e2:1-0', data: {} }, { type: 'x', channel: 'alerts', id: 'e2:2-0', data: {} }], truncated: true, next: 'e2:2-0' },
    { events: [{ type: 'x', channel: 'alerts', id: 'e2:3-0', data: {} }], truncated: false, next: 'e2:3-0' },
    // A future `after` (say, a stale bookmark): the head comes back.
    { events: [], truncated: true, next: 'e2:1-0' },
    { events: [{ type: 'x', channel: 'alerts', id: 'e2:2-0', data: {} }], truncated: false, next: 'e2:2-0' },
  ]);
  const got = [];
  const gaps = [];
  client.subscribe('alerts', (e) => got.push(e.id), { onGap: (c) => gaps.push(c) });
  await flush();
  for (let i = 0; i < 4; i++) await clock.tick(1000);
  assert.deepEqual(fetches.map((u) => new URL(u).searchParams.get('after')), [null, 'e1:50-0', 'e2:2-0', 'e2:3-0', 'e2:1-0']);
  assert.deepEqual(got, ['e2:1-0', 'e2:2-0', 'e2:3-0', 'e2:2-0']);
  assert.deepEqual(gaps, ['alerts', 'alerts']);
  client.destroy();
});

test('returns to WebSocket by itself after falling back to SSE, with fresh failure counts', async () => {
  const clock = new FakeClock();
  const { FakeWebSocket, sockets } = fakeSocketFactory();
  const sources = [];
  class FakeEventSource {
    constructor(url) { this.url = url; sources.push(this); }
    close() { this.closed = true; }
  }
  const client = new PulseClient({ url: 'ws://h:9/ws', WebSocket: FakeWebSocket, EventSource: FakeEventSource, fetch: null, clock, window: null,
    random: () => 0.5, backoff: { initialMs: 10, maxMs: 10 }, sseAfterAttempts: 2, wsProbe: { initialMs: 1000, maxMs: 4000 } });
  const got = [];
  client.subscribe('alerts', (e) => got.push(e.id));
  await flush();
  sockets[0].fail();
  await clock.tick(10);
  sockets[1].fail();
  await clock.tick(10);
  assert.equal(client.transport, 'sse');
  sources[0].onopen();
  sources[0].onmessage({ data: JSON.stringify({ type: 'welcome', heartbeat_interval_ms: 1000 }) });
  sources[0].onmessage({ data: JSON.stringify({ type: 'x', channel: 'alerts', id: 'e1:3-0', data: {} }) });
  assert.equal(client.state, 'live');
  // First probe after 0.5-1 × initialMs: WebSocket still refused.
  await clock.tick(1000);
  assert.equal(sockets.length, 3, 'a probe socket');
  sockets[2].fail();
  assert.equal(client.transport, 'sse', 'a failed probe leaves SSE alone');
  assert.equal(sources[0].closed, undefined);
  // The next probe waits longer (doubled ceiling), then the server answers.
  await clock.tick(1000);
  assert.equal(sockets.length, 3, 'backs off between probes');
  await clock.tick(1000);
  assert.equal(sockets.length, 4);
  sockets[3].open();
  sockets[3].welcome();
  await flush();
  assert.ok(sockets[3].closedByClient, 'the probe socket is closed');
  assert.ok(sources[0].closed, 'SSE is closed');
  assert.equal(client.transport, 'ws');
  assert.equal(sockets.length, 5);
  sockets[4].open();
  sockets[4].welcome();
  assert.equal(client.state, 'live');
  assert.deepEqual(sockets[4].sent, [{ type: 'subscribe', channel: 'alerts', since: 'e1:3-0' }]);
  // Failure counts started over: one WebSocket failure reconnects over WebSocket, not SSE.
  sockets[4].serverClose(1011);
  await clock.tick(10);
  assert.equal(client.transport, 'ws');
  assert.equal(sockets.length, 6);
  assert.equal(sources.length, 1);
  client.destroy();
});

test('returns to WebSocket from polling too', async () => {
  const clock = new FakeClock();
  const { FakeWebSocket, sockets } = fakeSocketFactory();
  const fetch = async () => ({ ok: true, status: 200, json: async () => ({ events: [], truncated: false, next: 'e1:1-0' }) });
  const client = new PulseClient({ url: 'ws://h:9/ws', WebSocket: FakeWebSocket, EventSource: null, fetch, clock, window: null,
    random: () => 0.5, backoff: { initialMs: 10, maxMs: 10 }, sseAfterAttempts: 1, pollAfterAttempts: 1, pollIntervalMs: 500, wsProbe: { initialMs: 2000 } });
  client.subscribe('alerts', () => {});
  await flush();
  sockets[0].fail();
  await clock.tick(10);
  assert.equal(client.transport, 'poll');
  assert.equal(client.state, 'live');
  await clock.tick(1500);
  assert.equal(sockets.length, 2, 'probe');
  sockets[1].open();
  sockets[1].welcome();
  await flush();
  assert.equal(client.transport, 'ws');
  sockets[2].open();
  sockets[2].welcome();
  assert.equal(client.state, 'live');
  client.destroy();
});

test('shouldReconnect answers as the close-code table of proto-docs', () => {
  const table = readFileSync(new URL('../../../proto-docs/close-codes.md', import.meta.url), 'utf8');
  const rows = table.split('\n')
    .map((line) => line.split('|').map((cell) => cell.trim()))
    .filter((cells) => /^\d{4}$/.test(cells[1] ?? '') && cells.length > 6)
    .map((cells) => [Number(cells[1]), cells[5]]);
  assert.ok(rows.length >= 12, `table not found: ${JSON.stringify(rows)}`);
  for (const [code, reconnect] of rows) {
    assert.ok(['yes', 'no', 'with a new token'].includes(reconnect), `${code}: ${reconnect}`);
    assert.equal(shouldReconnect(code), reconnect === 'yes', `close code ${code}`);
  }
});
