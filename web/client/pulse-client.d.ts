/** Connection state, emitted as `state` events. */
export type PulseState = 'idle' | 'connecting' | 'live' | 'reconnecting' | 'offline';
export type PulseTransport = 'ws' | 'sse' | 'poll';

/** The event envelope (proto-docs/asyncapi.yaml). */
export interface PulseEvent<D = unknown> {
  type: string;
  channel: string;
  /**
   * The event's position in its channel: `<epoch>:<ms>-<seq>` (or the legacy
   * `<ms>-<seq>`). Strictly increasing within one epoch; positions of
   * different epochs do not compare.
   */
  id: string;
  ts: string;
  data: D;
  trace?: string;
}

export interface PulseClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
}

export interface PulseClientOptions {
  /** `ws(s)://host/ws`; default derived from the page (http→ws, https→wss). */
  url?: string;
  /** Base of `/sse`; default derived from `url`. */
  httpBase?: string;
  /** Base of `/api/v1/...` (history polling); default `httpBase`. */
  apiBase?: string;
  /** JWT sent in an `auth` message (or `?token=` with `tokenInQuery`, and on SSE). */
  token?: string | null;
  /** Called before every connection attempt; also makes 4401 (expired) retry. */
  getToken?: () => string | null | Promise<string | null>;
  tokenInQuery?: boolean;
  /** Injected implementations (default: the globals). `EventSource: null` disables SSE. */
  WebSocket?: any;
  EventSource?: any;
  fetch?: typeof fetch | null;
  /** `window` for `online`/`offline` events and `location`; `null` in Node. */
  window?: any;
  location?: { protocol: string; host: string };
  clock?: PulseClock;
  random?: () => number;
  /** Full-jitter exponential backoff: delay = random() * min(maxMs, initialMs * factor^attempt). */
  backoff?: { initialMs?: number; maxMs?: number; factor?: number };
  /** Until `welcome` says otherwise. The server is considered gone after ~2× this with no frame. */
  heartbeatIntervalMs?: number;
  connectTimeoutMs?: number;
  /** A connection live this long resets the backoff (default 5000). */
  stableAfterMs?: number;
  /** Consecutive WebSocket attempts that never open before trying SSE (default 3). */
  sseAfterAttempts?: number;
  /** Total failed attempts (WebSocket + SSE) before polling history (default 6). */
  pollAfterAttempts?: number;
  pollIntervalMs?: number;
  transports?: PulseTransport[];
  /**
   * While live on SSE or polling, a WebSocket probe runs after a delay in
   * [ceiling/2, ceiling), ceiling = min(maxMs, initialMs * 2^probe) (defaults
   * 5 s / 60 s); when it gets `welcome` the client switches back to WebSocket
   * and every failure count starts over.
   */
  wsProbe?: { initialMs?: number; maxMs?: number };
  /** Default true. */
  autoConnect?: boolean;
}

export interface SubscribeOptions {
  /**
   * Events may be missing (`subscribed {recovered: false}` or `gap`: history
   * trimmed, another epoch, a position the channel never issued): refetch the
   * state over HTTP; live events keep coming after the new position.
   */
  onGap?: (channel: string) => void;
  /** Resume after this position (e.g. the `next` of the history page the state came from). */
  since?: string;
}

/** A parsed position; `epoch` is null for the legacy form. `ms` and `seq` are digit strings. */
export interface Position { epoch: string | null; ms: string; seq: string }

export interface StateInfo { transport: PulseTransport | null; attempt: number; code?: number; reason?: string; delay?: number }

export interface ErrorFrame { type: 'error'; code: string; message: string; channel?: string }

export class PulseClient {
  constructor(options?: PulseClientOptions);
  readonly state: PulseState;
  readonly transport: PulseTransport | null;
  /** Consecutive failed attempts since the last live connection. */
  readonly attempt: number;
  /** Set after a close that forbids reconnecting (1008, 1009, 4401, 4403) until `setToken()` or `connect()`. */
  readonly fatal: { code: number; reason: string } | null;
  heartbeatIntervalMs: number;
  subscribe<D = unknown>(channel: string, handler: (event: PulseEvent<D>) => void, options?: SubscribeOptions): () => void;
  on(event: 'state', fn: (state: PulseState, info: StateInfo) => void): () => void;
  on(event: 'gap', fn: (channel: string) => void): () => void;
  on(event: 'error', fn: (frame: ErrorFrame) => void): () => void;
  on(event: 'welcome', fn: (frame: { connection_id: string; heartbeat_interval_ms: number; client_timeout_ms: number; authenticated: boolean }) => void): () => void;
  on(event: 'transport', fn: (transport: PulseTransport) => void): () => void;
  on(event: 'close', fn: (info: { code: number; reason: string }) => void): () => void;
  on(event: 'retry', fn: (info: { attempt: number; delay: number; code?: number; reason?: string }) => void): () => void;
  on(event: 'message', fn: (frame: any) => void): () => void;
  on(event: string, fn: (...args: any[]) => void): () => void;
  /** The remembered position of a channel (last event, or the server's `offset`/`next`), or null. */
  lastId(channel: string): string | null;
  refresh(channel: string): boolean;
  setToken(token: string): void;
  connect(): void;
  close(): void;
  destroy(): void;
}

export const CONTROL_TYPES: Set<string>;
export function shouldReconnect(code: number): boolean;
/** Parses `<epoch>:<ms>-<seq>` or `<ms>-<seq>`; null when not a position. */
export function parsePosition(p: string | null | undefined): Position | null;
export function formatPosition(p: { epoch?: string | null; ms: string | number; seq?: string | number }): string;
/** Negative, zero or positive; `null` when not comparable (different epochs, or not positions). */
export function comparePositions(a: string, b: string): number | null;
/** True unless `id` is of the same epoch as `last` and not after it. */
export function isNewer(id: string, last: string | null | undefined): boolean;
/** Legacy: compares the `<ms>-<seq>` parts, ignoring epochs. Prefer `comparePositions`. */
export function compareOffsets(a: string, b: string): number;
export function backoffDelay(attempt: number, backoff?: { initialMs?: number; maxMs?: number; factor?: number }, random?: () => number): number;
export function createClient(options?: PulseClientOptions): PulseClient;
export default PulseClient;
