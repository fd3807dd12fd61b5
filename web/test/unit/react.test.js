import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createElement } from 'react';
import TestRenderer, { act } from 'react-test-renderer';
import { PulseClient } from '../../client/pulse-client.js';
import { PulseProvider, usePulse, useChannel, useChannelState } from '../../react/index.js';
import { FakeClock, fakeSocketFactory } from './fakes.js';

globalThis.IS_REACT_ACT_ENVIRONMENT = true;

test('hooks follow the connection state, deliver events, fold state and clean up on unmount', async () => {
  const clock = new FakeClock();
  const { FakeWebSocket, sockets } = fakeSocketFactory();
  const client = new PulseClient({ url: 'ws://h/ws', WebSocket: FakeWebSocket, EventSource: null, fetch: null, window: null, clock, random: () => 0.5 });
  const seen = [];
  let rendered = {};
  function App() {
    const { state } = usePulse();
    useChannel('reports', (e) => seen.push(e.id));
    const [count] = useChannelState('alerts', (n, e) => (e.type === 'alert_triggered' ? n + 1 : n), 0);
    rendered = { state, count };
    return null;
  }
  let root;
  await act(async () => { root = TestRenderer.create(createElement(PulseProvider, { client }, createElement(App))); });
  assert.equal(rendered.state, 'connecting');
  const ws = sockets[0];
  await act(async () => { ws.open(); ws.welcome(); });
  assert.equal(rendered.state, 'live');
  assert.deepEqual(ws.sent.map((m) => m.channel).sort(), ['alerts', 'reports']);
  await act(async () => {
    ws.receive({ type: 'report_received', channel: 'reports', id: '1-0', data: {} });
    ws.receive({ type: 'alert_triggered', channel: 'alerts', id: '2-0', data: {} });
    ws.receive({ type: 'alert_triggered', channel: 'alerts', id: '3-0', data: {} });
  });
  assert.deepEqual(seen, ['1-0']);
  assert.equal(rendered.count, 2);
  await act(async () => { ws.receive({ type: 'subscribed', channel: 'alerts', offset: '9-0', recovered: false }); });
  assert.equal(rendered.count, 0, 'a gap resets the folded state');
  await act(async () => { root.unmount(); });
  assert.deepEqual(ws.sent.filter((m) => m.type === 'unsubscribe').map((m) => m.channel).sort(), ['alerts', 'reports']);
  client.destroy();
});

test('useChannelState loads on mount, folds events held during a load, and refetches on a gap', async () => {
  const clock = new FakeClock();
  const { FakeWebSocket, sockets } = fakeSocketFactory();
  const client = new PulseClient({ url: 'ws://h/ws', WebSocket: FakeWebSocket, EventSource: null, fetch: null, window: null, clock, random: () => 0.5 });
  // A state loader the test resolves by hand (the HTTP read API in an app).
  const loads = [];
  const load = (channel) => new Promise((resolve) => loads.push({ channel, resolve }));
  const add = (ids, e) => (ids.includes(e.data.alert) ? ids : [...ids, e.data.alert]);
  let rendered;
  function App() {
    const [ids, , status] = useChannelState('alerts', add, ['from-server'], { load, since: 'e1:5-0' });
    rendered = { ids, loading: status.loading };
    return null;
  }
  let root;
  await act(async () => { root = TestRenderer.create(createElement(PulseProvider, { client }, createElement(App))); });
  assert.deepEqual(rendered, { ids: ['from-server'], loading: true }, 'the initial state shows until the load ends');
  assert.equal(loads.length, 1);
  const ws = sockets[0];
  await act(async () => { ws.open(); ws.welcome(); });
  assert.deepEqual(ws.sent, [{ type: 'subscribe', channel: 'alerts', since: 'e1:5-0' }], 'resumes from the position of the initial state');
  await act(async () => {
    ws.receive({ type: 'subscribed', channel: 'alerts', offset: 'e1:6-0', recovered: true });
    ws.receive({ type: 'alert_triggered', channel: 'alerts', id: 'e1:7-0', data: { alert: 'b' } });
  });
  assert.deepEqual(rendered.ids, ['from-server'], 'held while loading');
  await act(async () => { loads[0].resolve(['a']); });
  assert.deepEqual(rendered, { ids: ['a', 'b'], loading: false }, 'the held event is folded onto the loaded state');

  // recovered:false (say, another epoch): the hook reloads and keeps going live.
  await act(async () => { ws.receive({ type: 'subscribed', channel: 'alerts', offset: 'e2:1-0', recovered: false }); });
  assert.equal(loads.length, 2);
  assert.equal(rendered.loading, true);
  await act(async () => { ws.receive({ type: 'alert_triggered', channel: 'alerts', id: 'e2:2-0', data: { alert: 'd' } }); });
  await act(async () => { loads[1].resolve(['c']); });
  assert.deepEqual(rendered, { ids: ['c', 'd'], loading: false });
  // A mid-stream recovered:false does the same.
  await act(async () => { ws.receive({ type: 'subscribed', channel: 'alerts', offset: 'e2:9-0', recovered: false }); });
  assert.equal(loads.length, 3);
  await act(async () => { loads[2].resolve(['e']); });
  await act(async () => { ws.receive({ type: 'alert_triggered', channel: 'alerts', id: 'e2:10-0', data: { alert: 'f' } }); });
  assert.deepEqual(rendered, { ids: ['e', 'f'], loading: false });
  await act(async () => { root.unmount(); });
  client.destroy();
});

test('useChannel passes onGap and since through', async () => {
  const clock = new FakeClock();
  const { FakeWebSocket, sockets } = fakeSocketFactory();
  const client = new PulseClient({ url: 'ws://h/ws', WebSocket: FakeWebSocket, EventSource: null, fetch: null, window: null, clock, random: () => 0.5 });
  const gaps = [];
  const seen = [];
  function App() {
    useChannel('agents', (e) => seen.push(e.id), { onGap: (c) => gaps.push(c), since: '99999999999999-0' });
    return null;
  }
  let root;
  await act(async () => { root = TestRenderer.create(createElement(PulseProvider, { client }, createElement(App))); });
  const ws = sockets[0];
  await act(async () => { ws.open(); ws.welcome(); });
  assert.deepEqual(ws.sent, [{ type: 'subscribe', channel: 'agents', since: '99999999999999-0' }]);
  await act(async () => {
    ws.receive({ type: 'subscribed', channel: 'agents', offset: '1763800000000-0', recovered: false });
    ws.receive({ type: 'agent_status_changed', channel: 'agents', id: '1763800000001-0', data: {} });
  });
  assert.deepEqual(gaps, ['agents']);
  assert.deepEqual(seen, ['1763800000001-0']);
  await act(async () => { root.unmount(); });
  client.destroy();
});
