// The client against a real Pulse deployment (redis-server, pulse-ingest,
// pulse-gateway), with the `ws` package as the WebSocket implementation.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { PulseClient } from '../../client/pulse-client.js';
import { startStack, waitFor, postReport, report, publish } from '../harness.js';

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

test('a subscription resumed from an offset history no longer holds reports a gap', async () => {
  const c = client();
  try {
    const gaps = [];
    c.subscribe('gapchan', () => {}, { since: '1-0', onGap: (ch) => gaps.push(ch) });
    await publish(stack.ingestBase, 'gapchan', 'x', { n: 1 });
    await publish(stack.ingestBase, 'gapchan', 'x', { n: 2 });
    c.connect();
    await waitFor(() => c.state === 'live', { what: 'live' });
    // Whether history reaches back to 1-0 is the server's call; either it
    // replays both events or it says recovered:false. Both are handled.
    await waitFor(() => gaps.length > 0 || (c.lastId('gapchan') && c.lastId('gapchan') !== '1-0'), { what: 'subscribed' });
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
