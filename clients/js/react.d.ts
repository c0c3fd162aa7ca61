// Type declarations of pulsec-client/react.

import type { ReactNode, ReactElement } from "react";
import type { AttachError, Channel, ClientStatus, PulseClient, View } from "./index.js";

export interface PulseProviderProps {
  client: PulseClient;
  children?: ReactNode;
}

/** Makes `client` available to the hooks below it. */
export function PulseProvider(props: PulseProviderProps): ReactElement;

/** The client of the nearest PulseProvider; throws without one. */
export function usePulseClient(): PulseClient;

/** The client's connection status; re-renders when it changes. "connecting" on the server. */
export function usePulseStatus(): ClientStatus;

/** What usePulseView returns. */
export type PulseViewResult<P = any> =
  | { status: "loading"; props: undefined; error: undefined; view: undefined }
  | { status: "ready"; props: P; error: undefined; view: View<P> }
  /** The attach was refused (no view), or a re-attach after a reconnect was (view and last props kept). */
  | { status: "error"; props: P | undefined; error: AttachError | Error; view: View<P> | undefined };

/**
 * Attaches the view at `path` with `props` while mounted, again when `path` or `props` change
 * (compared by their JSON text), and detaches on unmount. Props follow `view_props` and
 * re-attaches after a reconnect.
 */
export function usePulseView<P = any>(path: string, props?: unknown): PulseViewResult<P>;

/**
 * The bridge of `channelId`, the same object across renders, acquired in an effect (null on
 * the first render and on the server) and released (closed) after unmount unless another
 * holder still uses it; safe under StrictMode. Re-renders when the bridge closes. null for a
 * null, undefined or empty id.
 */
export function usePulseChannel(channelId: string | null | undefined): Channel | null;

/**
 * Listens for `event` on `bridge` while mounted (nothing while `bridge` is null or closed),
 * always calling the handler of the latest render without registering again. The handler's
 * return value (or awaited Promise) answers the server's requests, as with `bridge.on`.
 */
export function usePulseEvent<P = any>(
  bridge: Channel | null | undefined,
  event: string,
  handler: (payload: P) => unknown,
): void;
