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
  options?: { onGap?: (channel: string) => void; client?: PulseClient },
): void;
export function useChannelState<S, D = unknown>(
  channel: string | null | undefined,
  reducer: (state: S, event: PulseEvent<D>) => S,
  initial: S | (() => S),
  options?: { onGap?: (setState: (s: S | ((prev: S) => S)) => void) => void; client?: PulseClient },
): [S, (s: S | ((prev: S) => S)) => void];
