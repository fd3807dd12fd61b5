// Pulse browser client: a dependency-free ES module, no build step.
//
// This file is the single source of the client. The dashboard serves it from
// here (the gateway serves `web/dashboard` at `/`), and `web/client/pulse-client.js`
// re-exports it for applications and bundlers.
//
// Protocol: proto-docs/asyncapi.yaml and proto-docs/close-codes.md.

/** Frame types the server uses for control messages; everything else is an event. */
export const CONTROL_TYPES = new Set(['welcome', 'subscribed', 'unsubscribed', 'snapshot', 'pong', 'error']);

/** Close codes after which the client waits for a new token or a manual `connect()`. */
export function shouldReconnect(code) {
  if (code === 1002 || code === 1007 || code === 1008 || code === 1009) return false;
  if (code >= 4400 && code < 4500) return false;
  return true;
}

const POSITION = /^(?:([0-9a-z]{1,16}):)?(\d+)-(\d+)$/;

/**
 * Parses a stream position: `<epoch>:<ms>-<seq>` or the legacy `<ms>-<seq>`
 * (unknown epoch). Returns `{epoch, ms, seq}` (`epoch` null for the legacy
 * form; `ms` and `seq` as digit strings, so any size compares exactly) or
 * null when `p` is not a position.
 */
export function parsePosition(p) {
  const m = typeof p === 'string' ? POSITION.exec(p) : null;
  if (!m) return null;
  return { epoch: m[1] || null, ms: trimZeros(m[2]), seq: trimZeros(m[3]) };
}

/** Formats a position (the inverse of `parsePosition`). */
export function formatPosition({ epoch = null, ms, seq = 0 }) {
  return (epoch ? epoch + ':' : '') + ms + '-' + seq;
}

function trimZeros(digits) {
  return digits.replace(/^0+(?=\d)/, '');
}

function compareDigits(a, b) {
  if (a.length !== b.length) return a.length - b.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Compares two positions of one channel: negative, zero or positive, or
 * `null` when they are not comparable (different epochs, or either is not a
 * position). Two legacy positions share the unknown epoch and compare.
 */
export function comparePositions(a, b) {
  const pa = parsePosition(a);
  const pb = parsePosition(b);
  if (!pa || !pb || pa.epoch !== pb.epoch) return null;
  return compareDigits(pa.ms, pb.ms) || compareDigits(pa.seq, pb.seq);
}

/**
 * Compares the `<ms>-<seq>` parts of two positions, ignoring any epoch
 * (kept for callers of the legacy form; prefer `comparePositions`).
 */
export function compareOffsets(a, b) {
  const strip = (p) => { const x = parsePosition(p); return x ? { ...x, epoch: null } : null; };
  const pa = strip(a);
  const pb = strip(b);
  if (!pa || !pb) return 0;
  return compareDigits(pa.ms, pb.ms) || compareDigits(pa.seq, pb.seq);
}

/**
 * Whether an event at `id` is new after the remembered position `last`:
 * true unless both are positions of the same epoch and `id <= last`. An
 * event of another epoch is new, so an old or unknown position never
 * blocks a stream that started over.
 */
export function isNewer(id, last) {
  if (!last) return true;
  const c = comparePositions(id, last);
  return c === null || c > 0;
}

/** Full-jitter exponential backoff: a random delay in [0, min(max, initial * factor^attempt)). */
export function backoffDelay(attempt, { initialMs = 500, maxMs = 30000, factor = 2 } = {}, random = Math.random) {
  const ceiling = Math.min(maxMs, initialMs * Math.pow(factor, Math.min(attempt, 60)));
  return Math.floor(random() * ceiling);
}

const defaultClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id),
};

/**
 * A connection to a Pulse gateway that reconnects forever, resumes every
 * subscription and tells the application about its state.
 */
export class PulseClient {
  constructor(options = {}) {
    const g = typeof globalThis !== 'undefined' ? globalThis : {};
    this.options = options;
    this._window = options.window !== undefined ? options.window : (typeof window !== 'undefined' ? window : null);
    const loc = options.location || (this._window && this._window.location) || null;
    this.url = options.url || deriveWsUrl(loc);
    this.httpBase = options.httpBase || deriveHttpBase(this.url);
    this.apiBase = options.apiBase || this.httpBase;
    this.token = options.token || null;
    this.getToken = options.getToken || null;
    this.tokenInQuery = !!options.tokenInQuery;
    this.WebSocket = options.WebSocket || g.WebSocket || null;
    this.EventSource = options.EventSource === undefined ? (g.EventSource || null) : options.EventSource;
    this.fetch = options.fetch || (g.fetch ? g.fetch.bind(g) : null);
    this.clock = options.clock || defaultClock;
    this.random = options.random || Math.random;
    this.backoff = { initialMs: 500, maxMs: 30000, factor: 2, ...(options.backoff || {}) };
    this.heartbeatIntervalMs = options.heartbeatIntervalMs || 15000;
    this.connectTimeoutMs = options.connectTimeoutMs || 10000;
    this.stableAfterMs = options.stableAfterMs ?? 5000;
    this.sseAfterAttempts = options.sseAfterAttempts ?? 3;
    this.pollAfterAttempts = options.pollAfterAttempts ?? 6;
    this.pollIntervalMs = options.pollIntervalMs || 5000;
    this.transports = options.transports || ['ws', 'sse', 'poll'];
    // While live on SSE or polling, WebSocket is tried again after these
    // delays (doubling, with jitter) and taken back as soon as it answers.
    this.wsProbe = { initialMs: 5000, maxMs: 60000, ...(options.wsProbe || {}) };

    this.state = 'idle';
    this.transport = null;
    this.attempt = 0; // consecutive failures since the last live connection
    this.fatal = null; // {code, reason} after a close that forbids reconnecting
    this._subs = new Map(); // channel -> {handlers:Set, gapHandlers:Set, lastId}
    this._listeners = new Map();
    this._conn = null; // current transport handle
    this._timer = null; // reconnect / connect-timeout timer
    this._hb = null; // heartbeat timer
    this._poll = null;
    this._lastHeard = 0;
    this._liveSince = 0;
    this._wsFailures = 0; // WebSocket attempts that never opened
    this._sseFailures = 0;
    this._stopped = true;
    this._waiting = false;
    this._gen = 0; // increments per connection attempt; stale callbacks compare it
    this._probeTimer = null; // next WebSocket probe while on a fallback transport
    this._probeConn = null; // the probe socket in flight
    this._probeAttempt = 0;

    this._onOnline = () => this._online();
    this._onOffline = () => this._browserOffline();
    if (this._window && this._window.addEventListener) {
      this._window.addEventListener('online', this._onOnline);
      this._window.addEventListener('offline', this._onOffline);
    }
    if (options.autoConnect !== false) this.connect();
  }

  // ----- public API -----

  /** Listens to `state`, `gap`, `error`, `welcome`, `transport`, `close`, `message`. Returns an off function. */
  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this._listeners.get(event)?.delete(fn);
  }

  /**
   * Receives the events of `channel`. `options.onGap(channel)` is called when
   * the server could not replay what was missed: refetch the state.
   * `options.since` resumes after that offset. Returns an unsubscribe function.
   */
  subscribe(channel, handler, options = {}) {
    let sub = this._subs.get(channel);
    const fresh = !sub;
    if (!sub) {
      sub = { handlers: new Set(), gapHandlers: new Set(), lastId: options.since || null };
      this._subs.set(channel, sub);
    }
    const entry = { handler };
    sub.handlers.add(entry);
    if (options.onGap) sub.gapHandlers.add(options.onGap);
    if (fresh) this._subscribeOnTransport(channel);
    return () => {
      if (!sub.handlers.delete(entry)) return;
      if (options.onGap) sub.gapHandlers.delete(options.onGap);
      if (sub.handlers.size === 0 && this._subs.get(channel) === sub) {
        this._subs.delete(channel);
        this._unsubscribeOnTransport(channel);
      }
    };
  }

  /** The last offset received on a channel, or null. */
  lastId(channel) {
    return this._subs.get(channel)?.lastId || null;
  }

  /** Asks the server for a `snapshot` of the channel (WebSocket only); it arrives as a `snapshot` message event. */
  refresh(channel) {
    return this._send({ type: 'refresh', channel });
  }

  /** Replaces the token; sent at once when connected, and reconnects if a previous token was refused. */
  setToken(token) {
    this.token = token;
    if (this.fatal) {
      this.fatal = null;
      this.connect();
    } else if (this.transport === 'ws' && this.state === 'live') {
      this._send({ type: 'auth', token });
    }
  }

  /** Starts (or restarts at once) connecting. */
  connect() {
    this._stopped = false;
    this.fatal = null;
    this._teardown();
    this.attempt = 0;
    this._open();
  }

  /** Closes and stops reconnecting. */
  close() {
    this._stopped = true;
    this._teardown();
    this._setState('offline', { reason: 'closed' });
  }

  /** Closes and removes the browser listeners. */
  destroy() {
    this.close();
    if (this._window && this._window.removeEventListener) {
      this._window.removeEventListener('online', this._onOnline);
      this._window.removeEventListener('offline', this._onOffline);
    }
    this._listeners.clear();
  }

  // ----- internals -----

  _emit(event, ...args) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try { fn(...args); } catch (e) { reportError(e); }
    }
  }

  _setState(state, info = {}) {
    if (this.state === state) return;
    this.state = state;
    this._emit('state', state, { transport: this.transport, attempt: this.attempt, ...info });
  }

  _clearTimers() {
    if (this._timer !== null) { this.clock.clearTimeout(this._timer); this._timer = null; }
    if (this._hb !== null) { this.clock.clearTimeout(this._hb); this._hb = null; }
    if (this._poll !== null) { this.clock.clearTimeout(this._poll); this._poll = null; }
    if (this._probeTimer !== null) { this.clock.clearTimeout(this._probeTimer); this._probeTimer = null; }
    if (this._probeConn) { this._probeConn.close(); this._probeConn = null; }
  }

  _teardown() {
    this._gen++;
    this._clearTimers();
    const conn = this._conn;
    this._conn = null;
    if (conn) {
      try { conn.close(); } catch { /* already closed */ }
    }
  }

  _chooseTransport() {
    const has = (t) => this.transports.includes(t);
    const ws = has('ws') && this.WebSocket;
    // SSE and polling carry a fixed set of channels: they wait for one.
    const sse = has('sse') && this.EventSource && this._subs.size > 0;
    const poll = has('poll') && this.fetch && this._subs.size > 0;
    if (ws && this._wsFailures < this.sseAfterAttempts) return 'ws';
    if (sse && this._sseFailures < this.pollAfterAttempts - this.sseAfterAttempts) return 'sse';
    if (poll) return 'poll';
    if (ws) return 'ws';
    if (sse) return 'sse';
    return null;
  }

  async _open() {
    if (this._stopped || this.fatal) return;
    const gen = ++this._gen;
    this._setState(this.attempt === 0 && this.state !== 'reconnecting' ? 'connecting' : 'reconnecting');
    if (this.getToken) {
      try {
        const token = await this.getToken();
        if (gen !== this._gen) return;
        if (token) this.token = token;
      } catch (e) {
        if (gen !== this._gen) return;
        this._failed(gen, { reason: 'getToken failed: ' + (e && e.message) });
        return;
      }
    }
    const transport = this._chooseTransport();
    if (!transport) {
      // Nothing to open yet (SSE or polling without a subscription):
      // the first subscribe() opens it.
      this._waiting = true;
      return;
    }
    this._waiting = false;
    if (this.transport !== transport) {
      this.transport = transport;
      this._emit('transport', transport);
    }
    if (transport === 'ws') this._openWs(gen);
    else if (transport === 'sse') this._openSse(gen);
    else this._startPoll(gen);
  }

  _withToken(url) {
    if (!this.token) return url;
    return url + (url.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(this.token);
  }

  _openWs(gen) {
    let ws;
    let opened = false;
    try {
      ws = new this.WebSocket(this.tokenInQuery ? this._withToken(this.url) : this.url);
    } catch (e) {
      this._wsFailures++;
      this._failed(gen, { reason: String(e && e.message) });
      return;
    }
    const conn = {
      ws,
      close: () => {
        // Keep an error handler: closing a socket that is still connecting
        // reports an error (Node's `ws` throws one that nobody listens to).
        ws.onopen = ws.onmessage = ws.onclose = null;
        ws.onerror = () => {};
        try { ws.close(1000); } catch { /* ignore */ }
      },
    };
    this._conn = conn;
    this._timer = this.clock.setTimeout(() => {
      if (gen !== this._gen) return;
      this._wsFailures++;
      this._failed(gen, { reason: 'connect timeout' });
    }, this.connectTimeoutMs);
    ws.onopen = () => {
      if (gen !== this._gen) return;
      opened = true;
      this._lastHeard = this.clock.now();
      if (this.token && !this.tokenInQuery) ws.send(JSON.stringify({ type: 'auth', token: this.token }));
    };
    ws.onmessage = (ev) => {
      if (gen !== this._gen) return;
      this._lastHeard = this.clock.now();
      const text = typeof ev.data === 'string' ? ev.data : String(ev.data);
      let msg;
      try { msg = JSON.parse(text); } catch { return; }
      this._handleFrame(msg, gen);
    };
    ws.onerror = () => { /* onclose follows */ };
    ws.onclose = (ev) => {
      if (gen !== this._gen) return;
      const code = ev && ev.code ? ev.code : 1006;
      const reason = (ev && ev.reason) || '';
      this._emit('close', { code, reason });
      if (!opened) this._wsFailures++;
      // 4401 (token expired) is retried only when the client can get a new
      // token itself; otherwise it waits for setToken() or connect().
      if (!shouldReconnect(code) && !(code === 4401 && this.getToken)) {
        this._teardown();
        this.fatal = { code, reason };
        this._setState('offline', { code, reason });
        return;
      }
      // 1012: the instance is draining; another one answers at once.
      this._failed(gen, { code, reason, immediate: code === 1012 });
    };
  }

  _handleFrame(msg, gen) {
    if (!msg || typeof msg.type !== 'string') return;
    this._emit('message', msg);
    switch (msg.type) {
      case 'welcome':
        if (msg.heartbeat_interval_ms > 0) this.heartbeatIntervalMs = msg.heartbeat_interval_ms;
        if (this._timer !== null) { this.clock.clearTimeout(this._timer); this._timer = null; }
        // The backoff starts over only once this connection proves stable
        // (see _failed), so a server that accepts and drops at once is not
        // hammered.
        this._liveSince = this.clock.now();
        this._emit('welcome', msg);
        if (this.transport === 'ws') {
          this._wsFailures = 0;
          this._probeAttempt = 0;
          for (const [channel, sub] of this._subs) this._sendSubscribe(channel, sub);
          this._scheduleHeartbeat(gen);
        } else {
          this._sseFailures = 0;
          this._scheduleWsProbe(gen);
        }
        this._setState('live');
        break;
      case 'subscribed': {
        const sub = this._subs.get(msg.channel);
        if (!sub) break;
        // `offset` is where the stream continues: it replaces the remembered
        // position even when lower (a new epoch, or a `since` the channel
        // never issued), so nothing stale or from the future filters live events.
        if (typeof msg.offset === 'string' && msg.offset) sub.lastId = msg.offset;
        if (msg.recovered === false) this._gap(msg.channel, sub);
        break;
      }
      case 'error':
        this._emit('error', msg);
        break;
      case 'pong': case 'unsubscribed': case 'snapshot':
        break;
      default:
        if (typeof msg.channel === 'string') this._deliver(msg);
    }
  }

  _deliver(event) {
    const sub = this._subs.get(event.channel);
    if (!sub) return;
    if (event.id) {
      if (!isNewer(event.id, sub.lastId)) return; // already seen in this epoch
      sub.lastId = event.id;
    }
    for (const entry of [...sub.handlers]) {
      try { entry.handler(event); } catch (e) { reportError(e); }
    }
  }

  _gap(channel, sub) {
    this._emit('gap', channel);
    for (const fn of [...sub.gapHandlers]) {
      try { fn(channel); } catch (e) { reportError(e); }
    }
  }

  _scheduleHeartbeat(gen) {
    const interval = this.heartbeatIntervalMs;
    this._hb = this.clock.setTimeout(() => {
      this._hb = null;
      if (gen !== this._gen) return;
      if (this.clock.now() - this._lastHeard > 2 * interval) {
        this._emit('close', { code: 4001, reason: 'server silent' });
        this._failed(gen, { reason: 'server silent for ' + (this.clock.now() - this._lastHeard) + ' ms' });
        return;
      }
      this._send({ type: 'ping' });
      this._scheduleHeartbeat(gen);
    }, interval);
  }

  _send(msg) {
    const conn = this._conn;
    if (!conn || !conn.ws || this.transport !== 'ws' || conn.ws.readyState !== 1) return false;
    conn.ws.send(JSON.stringify(msg));
    return true;
  }

  _sendSubscribe(channel, sub) {
    const msg = { type: 'subscribe', channel };
    if (sub.lastId) msg.since = sub.lastId;
    this._send(msg);
  }

  _subscribeOnTransport(channel) {
    if (this._stopped || this.fatal) return;
    if (this._waiting) { this._teardown(); this._open(); return; }
    if (this.transport === 'ws') {
      if (this.state === 'live') this._sendSubscribe(channel, this._subs.get(channel));
    } else if (this.transport === 'sse' || this.transport === 'poll') {
      // Reopen the stream with the new channel list (positions kept).
      if (this.state === 'live') { this._teardown(); this._open(); }
    }
  }

  _unsubscribeOnTransport(channel) {
    if (this.transport === 'ws') this._send({ type: 'unsubscribe', channel });
    else if (this.transport === 'sse' && this.state === 'live' && this._subs.size > 0) { this._teardown(); this._open(); }
  }

  _sseUrl() {
    const base = this.httpBase + '/sse?channels=' + [...this._subs.keys()].map(encodeURIComponent).join(',');
    const positions = [...this._subs].filter(([, s]) => s.lastId).map(([c, s]) => c + '@' + s.lastId).join(',');
    const url = positions ? base + '&last_event_id=' + encodeURIComponent(positions) : base;
    return this._withToken(url);
  }

  _openSse(gen) {
    let es;
    let opened = false;
    try {
      es = new this.EventSource(this._sseUrl());
    } catch (e) {
      this._sseFailures++;
      this._failed(gen, { reason: String(e && e.message) });
      return;
    }
    this._conn = { es, close: () => { es.onopen = es.onmessage = es.onerror = null; es.close(); } };
    es.onopen = () => { if (gen === this._gen) opened = true; };
    es.onmessage = (ev) => {
      if (gen !== this._gen) return;
      this._lastHeard = this.clock.now();
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      this._handleFrame(msg, gen);
    };
    es.onerror = () => {
      if (gen !== this._gen) return;
      // We resume ourselves (with our own positions and backoff) rather than
      // letting EventSource retry at a fixed rate.
      if (!opened) this._sseFailures++;
      this._failed(gen, { reason: 'event stream error' });
    };
  }

  _startPoll(gen) {
    const headers = this.token ? { Authorization: 'Bearer ' + this.token } : {};
    const pollOnce = async () => {
      try {
        for (const [channel, sub] of [...this._subs]) {
          let url = this.apiBase + '/api/v1/channels/' + encodeURIComponent(channel) + '/history';
          url += sub.lastId ? '?after=' + encodeURIComponent(sub.lastId) : '?limit=1';
          const res = await this.fetch(url, { headers });
          if (gen !== this._gen) return;
          if (res.status === 401 || res.status === 403) {
            this._teardown();
            this.fatal = { code: res.status === 401 ? 4401 : 4403, reason: 'HTTP ' + res.status };
            this._setState('offline', this.fatal);
            return;
          }
          if (!res.ok) throw new Error('HTTP ' + res.status);
          const page = await res.json();
          if (gen !== this._gen) return;
          if (!sub.lastId) { sub.lastId = page.next || null; continue; }
          // Truncated: `after` is older than history, of another epoch or
          // ahead of the head. The page has no events; `next` is the head.
          if (page.truncated) { sub.lastId = null; this._gap(channel, sub); }
          for (const event of page.events || []) this._deliver(event);
          // `next` is where the next page starts: the truth, like `offset`.
          if (typeof page.next === 'string' && page.next) sub.lastId = page.next;
        }
        if (gen !== this._gen) return;
        this.attempt = 0;
        this._setState('live');
        this._scheduleWsProbe(gen);
        this._poll = this.clock.setTimeout(() => { this._poll = null; if (gen === this._gen) pollOnce(); }, this.pollIntervalMs);
      } catch (e) {
        if (gen !== this._gen) return;
        this._failed(gen, { reason: 'poll failed: ' + (e && e.message) });
      }
    };
    this._conn = { close: () => {} };
    pollOnce();
  }

  /**
   * On a fallback transport, tries WebSocket again after a growing delay;
   * once a probe socket gets `welcome`, every failure count starts over and
   * the client reconnects over WebSocket (positions kept, so nothing is lost).
   */
  _scheduleWsProbe(gen) {
    if (this.transport === 'ws' || !this.transports.includes('ws') || !this.WebSocket) return;
    if (this._probeTimer !== null || this._probeConn) return;
    const ceiling = Math.min(this.wsProbe.maxMs, this.wsProbe.initialMs * Math.pow(2, Math.min(this._probeAttempt, 30)));
    const delay = Math.floor(ceiling / 2 + this.random() * ceiling / 2);
    this._probeTimer = this.clock.setTimeout(() => {
      this._probeTimer = null;
      if (gen === this._gen) this._probeWs(gen);
    }, delay);
  }

  _probeWs(gen) {
    let ws;
    try {
      ws = new this.WebSocket(this.tokenInQuery ? this._withToken(this.url) : this.url);
    } catch {
      this._probeAttempt++;
      this._scheduleWsProbe(gen);
      return;
    }
    let timer = null;
    const close = () => {
      if (timer !== null) { this.clock.clearTimeout(timer); timer = null; }
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.onerror = () => {};
      try { ws.close(1000); } catch { /* ignore */ }
    };
    const done = (ok) => {
      if (this._probeConn !== probe) return;
      this._probeConn = null;
      close();
      if (gen !== this._gen || this._stopped) return;
      if (!ok) { this._probeAttempt++; this._scheduleWsProbe(gen); return; }
      this._wsFailures = 0;
      this._sseFailures = 0;
      this._probeAttempt = 0;
      this.attempt = 0;
      this._teardown();
      this._open();
    };
    const probe = { close };
    this._probeConn = probe;
    timer = this.clock.setTimeout(() => { timer = null; done(false); }, this.connectTimeoutMs);
    ws.onopen = () => {
      if (this.token && !this.tokenInQuery) ws.send(JSON.stringify({ type: 'auth', token: this.token }));
    };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(typeof ev.data === 'string' ? ev.data : String(ev.data)); } catch { return; }
      if (msg && msg.type === 'welcome') done(true);
    };
    ws.onerror = () => { /* onclose follows */ };
    ws.onclose = () => done(false);
  }

  _failed(gen, info = {}) {
    if (gen !== this._gen || this._stopped) return;
    this._teardown();
    if (this._liveSince && this.clock.now() - this._liveSince >= this.stableAfterMs) this.attempt = 0;
    this._liveSince = 0;
    const online = !this._window || !this._window.navigator || this._window.navigator.onLine !== false;
    const delay = info.immediate ? Math.floor(this.random() * 250) : backoffDelay(this.attempt, this.backoff, this.random);
    this.attempt++;
    this._setState('reconnecting', { ...info, delay });
    this._emit('retry', { attempt: this.attempt, delay, ...info });
    if (!online) return; // the `online` event reconnects
    const g2 = this._gen;
    this._timer = this.clock.setTimeout(() => {
      this._timer = null;
      if (g2 === this._gen) this._open();
    }, delay);
  }

  _online() {
    if (this._stopped || this.fatal) return;
    if (this.state === 'live') return;
    this._teardown();
    this._open();
  }

  _browserOffline() {
    // Nothing to do: the connection fails (or goes silent) on its own, and
    // the `online` event reconnects at once.
  }
}

function reportError(e) {
  if (typeof globalThis.reportError === 'function') globalThis.reportError(e);
  else setTimeout(() => { throw e; });
}

function deriveWsUrl(loc) {
  if (!loc) return 'ws://localhost:8080/ws';
  const proto = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return proto + '//' + loc.host + '/ws';
}

function deriveHttpBase(wsUrl) {
  const u = new URL(wsUrl);
  const proto = u.protocol === 'wss:' ? 'https:' : 'http:';
  return proto + '//' + u.host;
}

/** Creates a client (same as `new PulseClient(options)`). */
export function createClient(options) {
  return new PulseClient(options);
}

export default PulseClient;
