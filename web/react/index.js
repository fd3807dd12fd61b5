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
 * handler may change between renders without resubscribing. `onGap` is
 * called when events were lost and state should be refetched.
 */
export function useChannel(channel, handler, { onGap, client } = {}) {
  const c = usePulseClient(client);
  const handlerRef = useRef(handler);
  const gapRef = useRef(onGap);
  handlerRef.current = handler;
  gapRef.current = onGap;
  useEffect(() => {
    if (!channel) return undefined;
    return c.subscribe(channel, (e) => handlerRef.current && handlerRef.current(e), { onGap: (ch) => gapRef.current && gapRef.current(ch) });
  }, [c, channel]);
}

/**
 * State folded from a channel's events: `reducer(state, event)` for each
 * event, starting at `initial` (a value or a function). Returns [state, setState].
 * On a gap, `onGap(setState)` may refetch; without it the state is reset to `initial`.
 */
export function useChannelState(channel, reducer, initial, { onGap, client } = {}) {
  const [state, setState] = useState(initial);
  const reducerRef = useRef(reducer);
  reducerRef.current = reducer;
  const initialRef = useRef(initial);
  useChannel(channel, (event) => setState((s) => reducerRef.current(s, event)), {
    client,
    onGap: () => (onGap ? onGap(setState) : setState(typeof initialRef.current === 'function' ? initialRef.current() : initialRef.current)),
  });
  return [state, setState];
}
