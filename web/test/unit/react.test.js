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
