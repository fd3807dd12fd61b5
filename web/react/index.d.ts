import type { ReactElement, ReactNode } from 'react';
import type { PulseClient, PulseClientOptions, PulseEvent, PulseState } from '../client/pulse-client';

export interface PulseProviderProps {
  /** A client you created; or `options` to let the provider create (and destroy) one. */
  client?: PulseClient;
  options?: PulseClientOptions;
  children?: ReactNode;
}
export function PulseProvider(props: PulseProviderProps): ReactElement;
export function usePulseClient(client?: PulseClient): PulseClient;
export function usePulse(client?: PulseClient): { state: PulseState; live: boolean; client: PulseClient };
export function useChannel<D = unknown>(
  channel: string | null | undefined,
  handler: (event: PulseEvent<D>) => void,
  options?: {
    /** Events may be missing (`recovered: false` or `gap`): refetch the state. */
    onGap?: (channel: string) => void;
    /** Resume after this position (where your initial state was read). */
    since?: string;
    client?: PulseClient;
  },
): void;

export interface ChannelStateStatus {
  /** A `load` is running (on mount, after a gap, or `reload()`). */
  loading: boolean;
  /** Why the last `load` failed, or null. */
  error: unknown;
  /** Runs `load` again. */
  reload(): Promise<void>;
}

export function useChannelState<S, D = unknown>(
  channel: string | null | undefined,
  reducer: (state: S, event: PulseEvent<D>) => S,
  /** The initial state (e.g. one the server rendered; pass its position as `since`). */
  initial: S | (() => S),
  options?: {
    /** Reads the current state (e.g. over the HTTP API): on mount and after every gap. */
    load?: (channel: string) => S | Promise<S>;
    /** Called on a gap (after starting `load`, if any). Without either, the state resets to `initial`. */
    onGap?: (setState: (s: S | ((prev: S) => S)) => void, channel: string) => void;
    since?: string;
    client?: PulseClient;
  },
): [S, (s: S | ((prev: S) => S)) => void, ChannelStateStatus];
