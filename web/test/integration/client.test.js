// The client against a real Pulse deployment (redis-server, pulse-ingest,
// pulse-gateway), with the `ws` package as the WebSocket implementation.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { PulseClient } from '../../client/pulse-client.js';
import { startStack, waitFor, postReport, report, publish, publishBatch } from '../harness.js';

let stack;
before(async () => { stack = await startStack(); });
after(async () => { await stack?.stop(); });

function client(extra = {}) {
  return new PulseClient({ url: stack.gatewayWs, apiBase: stack.ingestBase, WebSocket, EventSource: null, window: null,
    backoff: { initialMs: 100, maxMs: 1000 }, ...extra });
}

test('goes live, learns the heartbeat interval and receives events of a posted report', async () => {
  const c = client();
  try {
    const reports = [];
    const statuses = [];
    c.subscribe('reports', (e) => reports.push(e));
    c.subscribe('agents', (e) => statuses.push(e));
    await waitFor(() => c.state === 'live', { what: 'live' });
    assert.equal(c.heartbeatIntervalMs, 2000);
    await waitFor(() => c.lastId('reports') && c.lastId('agents'), { what: 'subscribed' });
    await postReport(stack.ingestBase, report('int-agent-1'));
    await waitFor(() => reports.length === 1, { what: 'report event' });
    assert.equal(reports[0].type, 'report_received');
    assert.equal(reports[0].data.agent_id, 'int-agent-1');
    await waitFor(() => statuses.some((e) => e.data.agent_id === 'int-agent-1'), { what: 'agent status' });
  } finally { c.destroy(); }
});

test('survives a gateway restart and gets the events published while it was away exactly once', async () => {
  const c = client();
  try {
    const got = [];
    const states = [];
    c.on('state', (s) => states.push(s));
    c.subscribe('deploys', (e) => got.push(e.data.n));
    await waitFor(() => c.state === 'live' && c.lastId('deploys'), { what: 'live and subscribed' });
    await publish(stack.ingestBase, 'deploys', 'deploy.finished', { n: 1 });
    await waitFor(() => got.length === 1, { what: 'first event' });

    await stack.gatewayStop();
    await waitFor(() => c.state === 'reconnecting', { what: 'reconnecting' });
    for (let n = 2; n <= 4; n++) await publish(stack.ingestBase, 'deploys', 'deploy.finished', { n });
    // It keeps trying while the gateway is down.
    await waitFor(() => states.filter((s) => s === 'reconnecting').length >= 1 && c.attempt >= 3, { what: 'several attempts' });
    await stack.gatewayStart();
    await waitFor(() => c.state === 'live', { what: 'live again', timeout: 60000 });
    await publish(stack.ingestBase, 'deploys', 'deploy.finished', { n: 5 });
    await waitFor(() => got.length >= 5, { what: 'missed and new events' });
    await new Promise((r) => setTimeout(r, 300)); // room for a duplicate to show up
    assert.deepEqual(got, [1, 2, 3, 4, 5]);
  } finally { c.destroy(); }
});

test('a resume from an offset history no longer holds reports a gap, then goes on live', async () => {
  const first = await publish(stack.ingestBase, 'gapchan', 'x', { n: 0 });
  // Far more than the history keeps (ingest history_len = 50).
  for (let b = 0; b < 3; b++) {
    await publishBatch(stack.ingestBase, 'gapchan', 'x', Array.from({ length: 100 }, (_, i) => ({ n: 1 + b * 100 + i })));
  }
  const c = client();
  try {
    const gaps = [];
    const got = [];
    c.subscribe('gapchan', (e) => got.push(e.data.n), { since: first.id, onGap: (ch) => gaps.push(ch) });
    await waitFor(() => gaps.length === 1, { what: 'recovered:false' });
    assert.deepEqual(gaps, ['gapchan']);
    const n = got.length;
    await publish(stack.ingestBase, 'gapchan', 'x', { n: 999 });
    await waitFor(() => got.length === n + 1, { what: 'live event after the gap' });
    assert.equal(got.at(-1), 999);
  } finally { c.destroy(); }
});

test('polls the HTTP history endpoint as the last resort', async () => {
  await publish(stack.ingestBase, 'polled', 'x', { n: 0 }); // before: not delivered
  const c = client({ transports: ['poll'], pollIntervalMs: 200 });
  try {
    const got = [];
    c.subscribe('polled', (e) => got.push(e.data.n));
    await waitFor(() => c.state === 'live' && c.lastId('polled'), { what: 'first poll' });
    await publish(stack.ingestBase, 'polled', 'x', { n: 1 });
    await publish(stack.ingestBase, 'polled', 'x', { n: 2 });
    await waitFor(() => got.length >= 2, { what: 'polled events' });
    assert.deepEqual(got, [1, 2]);
    assert.equal(c.transport, 'poll');
  } finally { c.destroy(); }
});

test('an invalid subscribe gets an error frame and the connection stays live', async () => {
  const c = client();
  try {
    const errors = [];
    c.on('error', (e) => errors.push(e));
    await waitFor(() => c.state === 'live', { what: 'live' });
    c.subscribe('bad channel!', () => {});
    await waitFor(() => errors.length === 1, { what: 'error frame' });
    assert.equal(errors[0].code, 'invalid_channel');
    assert.equal(c.state, 'live');
  } finally { c.destroy(); }
});

test('notices a gateway that goes silent (process stopped, socket open) and reconnects', async () => {
  const c = client();
  try {
    const closes = [];
    c.on('close', (e) => closes.push(e));
    await waitFor(() => c.state === 'live', { what: 'live' });
    stack.gateway.child.kill('SIGSTOP');
    try {
      // heartbeat_interval is 2 s: silence is noticed after about 4-6 s.
      await waitFor(() => c.state === 'reconnecting', { what: 'silence detected', timeout: 30000 });
      assert.equal(closes.at(-1).reason, 'server silent');
    } finally {
      stack.gateway.child.kill('SIGCONT');
    }
    await waitFor(() => c.state === 'live', { what: 'live again', timeout: 60000 });
  } finally { c.destroy(); }
});

test('a draining gateway (SIGTERM, close 1012) is left at once and the client resumes on the next one', async () => {
  const c = client({ backoff: { initialMs: 60000, maxMs: 60000 } }); // only 1012 may reconnect quickly
  try {
    const got = [];
    const closes = [];
    c.on('close', (e) => closes.push(e.code));
    c.subscribe('drained', (e) => got.push(e.data.n));
    await waitFor(() => c.state === 'live' && c.lastId('drained'), { what: 'live' });
    await stack.gatewayStop('SIGTERM');
    // The process's exit can be seen before the client's close event.
    await waitFor(() => closes.length > 0, { what: 'the client closed' });
    assert.equal(closes[0], 1012, `closes: ${closes}`);
    await publish(stack.ingestBase, 'drained', 'x', { n: 1 });
    await stack.gatewayStart();
    // The first attempt after 1012 went out within 250 ms (to a gateway that
    // was gone); the next uses the backoff, so reconnect now, like `online` would.
    c.connect();
    await waitFor(() => got.length === 1, { what: 'resumed event' });
    assert.deepEqual(got, [1]);
  } finally { c.destroy(); }
});
