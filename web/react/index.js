// React hooks for Pulse. Plain ES module, no build step; React is a peer
// dependency. The client comes from web/client.
import { createContext, createElement, useCallback, useContext, useEffect, useRef, useState, useSyncExternalStore } from 'react';
import { PulseClient } from '../client/pulse-client.js';

const PulseContext = createContext(null);

/** Provides a client to the hooks below: `<PulseProvider client={client}>` or `<PulseProvider options={{url, token}}>`. */
export function PulseProvider({ client, options, children }) {
  const ref = useRef(null);
  if (!client && !ref.current) ref.current = new PulseClient(options || {});
  const value = client || ref.current;
  useEffect(() => () => { if (!client && ref.current) { ref.current.destroy(); ref.current = null; } }, [client]);
  return createElement(PulseContext.Provider, { value }, children);
}

/** The client from the nearest provider (or the one passed). */
export function usePulseClient(client) {
  const fromContext = useContext(PulseContext);
  const c = client || fromContext;
  if (!c) throw new Error('usePulse: no client; wrap the tree in <PulseProvider> or pass a client');
  return c;
}

/** Connection state: 'connecting' | 'live' | 'reconnecting' | 'offline' (re-renders on change). */
export function usePulse(client) {
  const c = usePulseClient(client);
  const subscribe = useCallback((onChange) => c.on('state', onChange), [c]);
  const state = useSyncExternalStore(subscribe, () => c.state, () => c.state);
  return { state, live: state === 'live', client: c };
}

/**
 * Calls `handler(event)` for every event of `channel` while mounted. The
 * handler may change between renders without resubscribing. `onGap(channel)`
 * is called when events may be missing (`recovered: false` or `gap`):
 * refetch the state. `since` resumes after a position (the one your initial
 * state was read at).
 */
export function useChannel(channel, handler, { onGap, since, client } = {}) {
  const c = usePulseClient(client);
  const handlerRef = useRef(handler);
  const gapRef = useRef(onGap);
  handlerRef.current = handler;
  gapRef.current = onGap;
  const sinceRef = useRef(since);
  sinceRef.current = since;
  useEffect(() => {
    if (!channel) return undefined;
    const options = { onGap: (ch) => gapRef.current && gapRef.current(ch) };
    if (sinceRef.current) options.since = sinceRef.current;
    return c.subscribe(channel, (e) => handlerRef.current && handlerRef.current(e), options);
  }, [c, channel]);
}

/**
 * State folded from a channel's events: `reducer(state, event)` for each
 * event, starting at `initial` (a value or a function: e.g. state the server
 * rendered, with `since` its position).
 *
 * `load(channel)` (optional) reads the current state, typically over the
 * HTTP API; it runs on mount and again after every gap. Events that arrive
 * while it runs are folded onto its result, so none is lost. Without `load`,
 * `onGap(setState, channel)` may refetch; with neither, a gap resets the
 * state to `initial`.
 *
 * Returns `[state, setState, {loading, error, reload}]`.
 */
export function useChannelState(channel, reducer, initial, { load, onGap, since, client } = {}) {
  const [state, setState] = useState(initial);
  const [status, setStatus] = useState(() => ({ loading: !!load, error: null }));
  const reducerRef = useRef(reducer);
  const loadRef = useRef(load);
  const gapRef = useRef(onGap);
  const initialRef = useRef(initial);
  reducerRef.current = reducer;
  loadRef.current = load;
  gapRef.current = onGap;
  const held = useRef(null); // events received during a load, or null
  const loadSeq = useRef(0);

  const reload = useCallback(() => {
    const fn = loadRef.current;
    if (!fn) return Promise.resolve();
    const seq = ++loadSeq.current;
    if (!held.current) held.current = [];
    setStatus((s) => (s.loading && !s.error ? s : { loading: true, error: null }));
    const fold = (base, events) => events.reduce((s, e) => reducerRef.current(s, e), base);
    return Promise.resolve()
      .then(() => fn(channel))
      .then((loaded) => {
        if (seq !== loadSeq.current) return;
        const events = held.current || [];
        held.current = null;
        setState(fold(loaded, events));
        setStatus({ loading: false, error: null });
      }, (error) => {
        if (seq !== loadSeq.current) return;
        const events = held.current || [];
        held.current = null;
        if (events.length) setState((s) => fold(s, events));
        setStatus({ loading: false, error });
      });
  }, [channel]);

  useChannel(channel, (event) => {
    if (held.current) held.current.push(event);
    else setState((s) => reducerRef.current(s, event));
  }, {
    client,
    since,
    onGap: (ch) => {
      if (loadRef.current) reload();
      if (gapRef.current) gapRef.current(setState, ch);
      if (!loadRef.current && !gapRef.current) {
        setState(typeof initialRef.current === 'function' ? initialRef.current() : initialRef.current);
      }
    },
  });

  useEffect(() => {
    if (channel && loadRef.current) reload();
    return () => { loadSeq.current++; held.current = null; };
  }, [channel, reload]);

  return [state, setState, { loading: status.loading, error: status.error, reload }];
}
