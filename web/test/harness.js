// Starts real Pulse processes for tests: a private redis-server, pulse-ingest
// and pulse-gateway on free ports, and a small reverse proxy (the load
// balancer of a deployment) that serves /api/* from ingest and everything
// else (/, /ws, /sse) from the gateway, so the dashboard has one origin.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const webDir = path.resolve(here, '..');
export const repoDir = path.resolve(webDir, '..');
export const targetDir = path.resolve(webDir, process.env.CARGO_TARGET_DIR || '../target');
export const binDir = path.join(targetDir, 'debug');

export const AGENT_KEY = 'test-agent-key';
export const PUBLISHER_KEY = 'test-publisher-key';

/** Builds the server binaries with cargo when they are missing. */
export function ensureBinaries() {
  const bins = ['pulse-gateway', 'pulse-ingest', 'pulse'];
  if (bins.every((b) => existsSync(path.join(binDir, b)))) return;
  const r = spawnSync('cargo', ['build', '-p', 'pulse-websocket-gateway', '-p', 'pulse-ingest', '-p', 'pulse'], { cwd: repoDir, stdio: 'inherit' });
  if (r.status !== 0) throw new Error('cargo build failed');
}

/**
 * Standalone `pulse` (in memory, one port), by default with its demo fleet.
 * `config`: extra TOML (a file passed with --config); `env`: extra variables;
 * `port`: a fixed port. `stop()` and `start()` restart it on the same port
 * (in memory: a restart loses every history).
 */
export async function startStandalone({ agents = 12, demo = true, config = '', env = {}, port } = {}) {
  ensureBinaries();
  port = port || await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'pulse-web-standalone-'));
  const args = ['--port', String(port), '--host', '127.0.0.1', '--static-dir', path.join(webDir, 'dashboard')];
  args.push(...(demo ? ['--demo', '--agents', String(agents)] : ['--no-demo']));
  if (config) {
    writeFileSync(path.join(dir, 'pulse.toml'), config);
    args.push('--config', path.join(dir, 'pulse.toml'));
  }
  const base = `http://127.0.0.1:${port}`;
  const s = { base, port };
  s.start = async () => {
    s.proc = new Proc('pulse', path.join(binDir, 'pulse'), args, { cwd: repoDir, env: { ...process.env, RUST_LOG: 'warn', ...env } });
    try {
      await waitFor(() => httpOk(`${base}/readyz`), { what: 'pulse ready', timeout: 60000 });
    } catch (e) {
      await s.proc.stop();
      throw new Error(`${e.message}\n${s.proc.output}`);
    }
  };
  s.stop = async () => {
    await s.proc?.stop();
  };
  s.close = async () => {
    await s.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  await s.start().catch((e) => { rmSync(dir, { recursive: true, force: true }); throw e; });
  return s;
}

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

/** Polls `fn` until it returns a truthy value (or resolves to one). */
export async function waitFor(fn, { timeout = 30000, interval = 50, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try { const v = await fn(); if (v) return v; } catch (e) { last = e; }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? ': ' + last.message : ''}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

class Proc {
  constructor(name, cmd, args, opts) {
    this.name = name;
    this.output = '';
    this.child = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (d) => { this.output = (this.output + d).slice(-20000); };
    this.child.stdout.on('data', keep);
    this.child.stderr.on('data', keep);
    this.exited = new Promise((r) => this.child.once('exit', (code, signal) => r({ code, signal })));
  }
  get running() { return this.child.exitCode === null && this.child.signalCode === null; }
  async stop(signal = 'SIGKILL') {
    if (!this.running) return;
    this.child.kill(signal);
    await this.exited;
  }
}

async function httpOk(url) {
  const res = await fetch(url);
  return res.ok;
}

async function tcpOpen(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

/**
 * A Pulse deployment: Redis, ingest, one gateway, and a proxy in front.
 * `stack.gatewayStop()` / `stack.gatewayStart()` stop and restart the gateway
 * on the same port while Redis and ingest keep running.
 */
export async function startStack({ heartbeat = '2s', clientTimeout = '6s' } = {}) {
  ensureBinaries();
  const dir = mkdtempSync(path.join(tmpdir(), 'pulse-web-test-'));
  const stack = { dir, procs: [] };
  try {
    stack.redisPort = await freePort();
    stack.redis = new Proc('redis', 'redis-server', ['--port', String(stack.redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { cwd: dir });
    stack.procs.push(stack.redis);
    await waitFor(() => tcpOpen(stack.redisPort), { what: 'redis-server' });
    const redisUrl = `redis://127.0.0.1:${stack.redisPort}/`;
    const prefix = `pulse-test-${process.pid}:`;

    stack.ingestPort = await freePort();
    const ingestConfig = path.join(dir, 'ingest.toml');
    writeFileSync(ingestConfig, `bus = "redis"
[http]
host = "127.0.0.1"
port = ${stack.ingestPort}
[redis]
url = "${redisUrl}"
prefix = "${prefix}"
# Short history, so that a test can outrun it and see recovered:false.
history_len = 50
[auth]
anonymous = true
[[ingest.api_keys]]
name = "test-agents"
key = "${AGENT_KEY}"
role = "agent"
[[ingest.api_keys]]
name = "test-publisher"
key = "${PUBLISHER_KEY}"
role = "publisher"
`);
    stack.ingest = new Proc('ingest', path.join(binDir, 'pulse-ingest'), ['--config', ingestConfig], { cwd: repoDir, env: { ...process.env, RUST_LOG: 'warn' } });
    stack.procs.push(stack.ingest);

    stack.gatewayPort = await freePort();
    stack.gatewayConfig = path.join(dir, 'gateway.toml');
    writeFileSync(stack.gatewayConfig, `[http]
host = "127.0.0.1"
port = ${stack.gatewayPort}
[redis]
url = "${redisUrl}"
prefix = "${prefix}"
# The same as ingest: every process claims its history length and
# publishers keep the largest claim.
history_len = 50
[gateway]
heartbeat_interval = "${heartbeat}"
client_timeout = "${clientTimeout}"
static_dir = ${JSON.stringify(path.join(webDir, 'dashboard'))}
allowed_origins = ["*"]
drain_window = "1s"
[auth]
anonymous = true
[limits]
connections_per_ip_per_sec = 1000
`);
    stack.gatewayStart = async () => {
      stack.gateway = new Proc('gateway', path.join(binDir, 'pulse-gateway'), ['--config', stack.gatewayConfig], { cwd: repoDir, env: { ...process.env, RUST_LOG: 'warn' } });
      stack.procs.push(stack.gateway);
      await waitFor(() => httpOk(`http://127.0.0.1:${stack.gatewayPort}/readyz`), { what: 'gateway ready', timeout: 60000 })
        .catch((e) => { throw new Error(`${e.message}\n${stack.gateway.output}`); });
    };
    stack.gatewayStop = (signal = 'SIGKILL') => stack.gateway.stop(signal);
    await stack.gatewayStart();
    await waitFor(() => httpOk(`http://127.0.0.1:${stack.ingestPort}/readyz`), { what: 'ingest ready', timeout: 60000 })
      .catch((e) => { throw new Error(`${e.message}\n${stack.ingest.output}`); });

    stack.proxy = await startProxy({ api: stack.ingestPort, gateway: stack.gatewayPort });
    stack.proxyPort = stack.proxy.port;
    stack.base = `http://127.0.0.1:${stack.proxyPort}`;
    stack.ingestBase = `http://127.0.0.1:${stack.ingestPort}`;
    stack.gatewayWs = `ws://127.0.0.1:${stack.gatewayPort}/ws`;
    stack.stop = () => stopStack(stack);
    return stack;
  } catch (e) {
    await stopStack(stack);
    throw e;
  }
}

async function stopStack(stack) {
  if (stack.proxy) await stack.proxy.close();
  for (const p of stack.procs.reverse()) await p.stop();
  rmSync(stack.dir, { recursive: true, force: true });
}

/** A reverse proxy: /api/* to ingest, the rest (including WebSocket upgrades) to the gateway. */
export async function startProxy({ api, gateway }) {
  const sockets = new Set();
  const server = http.createServer((req, res) => {
    const port = req.url.startsWith('/api/') ? api : gateway;
    const up = http.request({ host: '127.0.0.1', port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
      // The upstream died mid-response (a stopped gateway under a stream):
      // cut the client off too, as a load balancer would.
      r.on('close', () => { if (!r.complete) res.destroy(); });
    });
    up.on('error', () => { if (!res.headersSent) res.writeHead(502); res.end(); });
    res.on('close', () => up.destroy());
    req.pipe(up);
  });
  server.on('upgrade', (req, socket, head) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    const up = net.connect(gateway, '127.0.0.1', () => {
      let raw = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) raw += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      up.write(raw + '\r\n');
      if (head && head.length) up.write(head);
      up.pipe(socket);
      socket.pipe(up);
    });
    sockets.add(up);
    up.on('close', () => { sockets.delete(up); socket.destroy(); });
    up.on('error', () => socket.destroy());
    socket.on('error', () => up.destroy());
    socket.on('close', () => up.destroy());
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: server.address().port,
    close: () => new Promise((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }),
  };
}

/** Posts a Probe report through ingest's HTTP API. */
export async function postReport(base, report) {
  const res = await fetch(`${base}/api/v1/reports`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${AGENT_KEY}` },
    body: JSON.stringify(report),
  });
  if (res.status !== 202) throw new Error(`report refused: ${res.status} ${await res.text()}`);
  return res.json();
}

let seq = 0;
export function report(agentId, checks = [{ name: 'load', level: 'L1', status: 'ok' }]) {
  return { report_id: `${agentId}-${Date.now()}-${seq++}`, agent_id: agentId, ts: new Date().toISOString(), checks };
}

/** Publishes a batch of events (at most 100) to one channel. */
export async function publishBatch(base, channel, type, datas) {
  const res = await fetch(`${base}/api/v1/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${PUBLISHER_KEY}` },
    body: JSON.stringify({ events: datas.map((data) => ({ channel, type, data })) }),
  });
  if (!res.ok) throw new Error(`publish refused: ${res.status} ${await res.text()}`);
  return res.json();
}

/** Publishes an event through the publish API. */
export async function publish(base, channel, type, data) {
  const res = await fetch(`${base}/api/v1/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${PUBLISHER_KEY}` },
    body: JSON.stringify({ channel, type, data }),
  });
  if (!res.ok) throw new Error(`publish refused: ${res.status} ${await res.text()}`);
  return res.json();
}
