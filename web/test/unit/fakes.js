// Fakes for client unit tests: a manual clock and a scriptable WebSocket.

export class FakeClock {
  constructor() { this.t = 0; this.timers = new Map(); this.next = 1; }
  now() { return this.t; }
  setTimeout(fn, ms) { const id = this.next++; this.timers.set(id, { at: this.t + Math.max(0, ms), fn }); return id; }
  clearTimeout(id) { this.timers.delete(id); }
  pending() { return [...this.timers.values()].map((t) => t.at - this.t).sort((a, b) => a - b); }
  /** Advances time, firing due timers in order (including ones they schedule). */
  async tick(ms) {
    const end = this.t + ms;
    for (;;) {
      let best = null;
      for (const [id, t] of this.timers) if (t.at <= end && (!best || t.at < best[1].at)) best = [id, t];
      if (!best) break;
      this.timers.delete(best[0]);
      this.t = best[1].at;
      best[1].fn();
      await flush();
    }
    this.t = end;
    await flush();
  }
}

export async function flush() { for (let i = 0; i < 5; i++) await Promise.resolve(); }

export function fakeSocketFactory() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) { this.url = url; this.readyState = 0; this.sent = []; sockets.push(this); }
    send(data) { if (this.readyState !== 1) throw new Error('not open'); this.sent.push(JSON.parse(data)); }
    close(code = 1000) { this.readyState = 3; this.closedByClient = code; }
    // test side
    open() { this.readyState = 1; this.onopen && this.onopen({}); }
    welcome(hb = 1000) { this.receive({ type: 'welcome', connection_id: 'c', heartbeat_interval_ms: hb, client_timeout_ms: hb * 3, authenticated: true }); }
    receive(msg) { this.onmessage && this.onmessage({ data: JSON.stringify(msg) }); }
    serverClose(code, reason = '') { this.readyState = 3; this.onclose && this.onclose({ code, reason }); }
    fail() { this.readyState = 3; this.onerror && this.onerror({}); this.onclose && this.onclose({ code: 1006, reason: '' }); }
  }
  return { FakeWebSocket, sockets };
}

export function fakeWindow() {
  const listeners = {};
  return {
    navigator: { onLine: true },
    location: { protocol: 'https:', host: 'pulse.example:8443' },
    addEventListener(ev, fn) { (listeners[ev] ||= new Set()).add(fn); },
    removeEventListener(ev, fn) { listeners[ev]?.delete(fn); },
    dispatch(ev) { for (const fn of listeners[ev] || []) fn({ type: ev }); },
  };
}
