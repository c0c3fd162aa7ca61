// Type declarations of pulsec-client (the "." export). React bindings: react.d.ts.

import type { ManagerOptions, Socket, SocketOptions } from "socket.io-client";

/** Any JSON value: what payloads and props carry on the wire. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/**
 * Connection status of a client: "connecting" before the first connect, "reconnecting" after a
 * drop while socket.io-client tries again, "disconnected" once it will not come back by itself.
 */
export type ClientStatus = "connecting" | "connected" | "reconnecting" | "disconnected";

/** Lifecycle state of a view (see {@link View.state}). */
export type ViewState = "attaching" | "attached" | "failed" | "detached";

/** Why a channel closed (see {@link ChannelClosed.reason}). */
export type CloseReason = "local" | "remote" | "disconnect" | "client";

/** The part of a socket.io-client Socket the client uses; `options.socket` may be a test double. */
export interface SocketLike {
  readonly connected: boolean;
  readonly active?: boolean;
  /** Set by socket.io-client on a reconnect that recovered the session. */
  readonly recovered?: boolean;
  /** socket.io-client's private id from the server (present when the server offers recovery). */
  readonly _pid?: string;
  /** socket.io-client's packets received before a CONNECT reply (emptied on disconnect). */
  receiveBuffer?: unknown[];
  readonly io?: { on(event: string, fn: (...args: any[]) => void): unknown; off(event: string, fn: (...args: any[]) => void): unknown };
  emit(event: "message", message: object): unknown;
  on(event: string, fn: (...args: any[]) => void): unknown;
  off(event: string, fn: (...args: any[]) => void): unknown;
  disconnect(): unknown;
}

export interface ClientOptions extends Partial<ManagerOptions & SocketOptions> {
  /** Server URL; absent = the page's origin. */
  url?: string;
  /** Socket.IO auth payload, seen by the server's connect middleware. */
  auth?: SocketOptions["auth"];
  /** Engine.IO path. Default "/socket.io/". */
  path?: string;
  /** Engine.IO transports. Default ["websocket"]. */
  transports?: ManagerOptions["transports"];
  /**
   * Use this socket instead of creating one (tests, or sharing a connection). The client then
   * does not disconnect it on close().
   */
  socket?: SocketLike;
  /**
   * Per channel and event: how many messages are kept while the event has no listener.
   * Default 1000; beyond, the oldest is dropped (a dropped request gets an error answer).
   */
  maxBuffered?: number;
  /**
   * How many messages the app may send while reconnecting; they go out after a recovered
   * reconnect (and are dropped on a fresh one). Default 1000; beyond, sending fails as when
   * disconnected.
   */
  maxQueued?: number;
}

export interface RequestOptions {
  /** Milliseconds to wait for the answer; 0 or absent = no timeout. */
  timeout?: number;
  /**
   * Stops waiting: the promise rejects with `signal.reason` (an "AbortError" DOMException by
   * default) and a late answer is ignored. The server is not told.
   */
  signal?: AbortSignal;
}

/**
 * A channel listener. For a request from the server, its return value (or what its Promise
 * resolves to) is the answer, and a throw (or rejection) answers with an error carrying the
 * message. With several listeners, every one is called in registration order and the first
 * result that is not `undefined`, or the first error, answers; all `undefined` answers null.
 */
export type ChannelHandler<P = any> = (payload: P) => unknown;

/** Removes what was added. Idempotent. */
export type Off = () => void;

/** Base class of every error this package creates. */
export class PulseError extends Error {
  constructor(message: string, code: string);
  /** "ECLOSED" | "ETIMEDOUT" | "EREMOTE" */
  readonly code: string;
}

/** The channel is closed (or closed while a request waited). */
export class ChannelClosed extends PulseError {
  constructor(message?: string, info?: { channel?: string; reason?: CloseReason });
  readonly code: "ECLOSED";
  readonly channel: string | undefined;
  /** "local": close(); "remote": the server closed it; "disconnect": the connection dropped; "client": client.close(). */
  readonly reason: CloseReason;
}

/** A request got no answer within its timeout. */
export class ChannelTimeout extends PulseError {
  constructor(message: string, info?: { channel?: string; event?: string; timeout?: number });
  readonly code: "ETIMEDOUT";
  readonly channel: string | undefined;
  readonly event: string | undefined;
  readonly timeout: number | undefined;
}

/** The server answered a request with an error; `message` is its text. */
export class ChannelError extends PulseError {
  constructor(message: string, info?: { channel?: string; event?: string });
  readonly code: "EREMOTE";
  readonly channel: string | undefined;
  readonly event: string | undefined;
}

/**
 * An attach failed: code "EREMOTE" with the server's `attach_error` text as message, or
 * "ECLOSED" when the view was detached or the client closed first.
 */
export class AttachError extends PulseError {
  constructor(message: string, info?: { path?: string; attachId?: string; code?: "EREMOTE" | "ECLOSED" });
  readonly code: "EREMOTE" | "ECLOSED";
  readonly path: string | undefined;
  readonly attachId: string | undefined;
}

/**
 * A channel bridge: one server channel seen from this client. Get it with
 * `client.channel(id)`. Events and requests that arrive before an event's first listener are
 * kept and delivered (on a microtask) when it registers.
 */
export class Channel {
  private constructor();
  /** The channel id the server made. */
  readonly id: string;
  /** True once closed, from either side or by a disconnect. */
  readonly closed: boolean;
  /**
   * Sends a fire-and-forget event (`undefined` payload travels as null).
   * @throws {ChannelClosed} when closed
   * @throws {TypeError} for an empty or reserved ("__close__") event name
   */
  emit(event: string, payload?: unknown): void;
  /**
   * Sends a request; resolves with the server's answer. Rejects with ChannelTimeout,
   * ChannelClosed, ChannelError (the server's error text), or the abort reason of
   * `options.signal`. Across a recovered reconnect it stays pending (its timeout running) and
   * is sent again if unanswered; the server handles it once.
   * @throws {ChannelClosed} synchronously when already closed
   * @throws {TypeError} for a bad timeout or a signal that is not an AbortSignal
   */
  request<T = any>(event: string, payload?: unknown, options?: RequestOptions): Promise<T>;
  /**
   * Listens for an event; see {@link ChannelHandler} for answering requests.
   * @throws {ChannelClosed} when closed
   */
  on<P = any>(event: string, handler: ChannelHandler<P>): Off;
  /** Calls `cb` once when the channel closes (never if already closed). */
  onClose(cb: (error: ChannelClosed) => void): Off;
  /** Sends `__close__` and closes locally; pending requests reject. Idempotent. */
  close(): void;
}

/** Pulse's name for a channel bridge. */
export type ChannelBridge = Channel;

/**
 * An attached view. After a reconnect the client attaches it again with the same attachId,
 * path and props, and `onProps` subscribers get the new props (with new channel ids).
 */
export class View<P = any> {
  private constructor();
  /** Random id made by this client; the same across reconnects. */
  readonly attachId: string;
  readonly path: string;
  /** The latest props the server sent. */
  readonly props: P;
  readonly state: ViewState;
  /** Called with new props: `view_props`, and the answer to a re-attach. */
  onProps(cb: (props: P, view: View<P>) => void): Off;
  /** Called when a re-attach after a reconnect is refused (it is retried on the next one). */
  onError(cb: (error: AttachError) => void): Off;
  /** Detaches: the server disposes the view and closes its channels. Idempotent. */
  detach(): void;
}

/** What the "connect" event reports. */
export interface ConnectInfo {
  /**
   * True when the server kept the session across the drop (views, channels and pending
   * requests carried on and nothing was lost); false for a first connect or a fresh session
   * (bridges closed, views attached again with new props).
   */
  recovered: boolean;
}

export interface ClientEvents {
  status: (status: ClientStatus) => void;
  /** After every connect, first or again. */
  connect: (info: ConnectInfo) => void;
  /** Connecting failed; a refusal by the server's middleware carries its reason as message. */
  connect_error: (error: Error) => void;
  /** Errors of channel listeners outside requests, malformed server messages. */
  error: (error: unknown) => void;
}

/** A connection to a pulsec server. Create it with {@link createClient}. */
export class PulseClient {
  constructor(options?: ClientOptions);
  readonly status: ClientStatus;
  /** Whether the last (re)connect recovered the session (see {@link ConnectInfo}). */
  readonly recovered: boolean;
  /** True after close(). */
  readonly closed: boolean;
  /** The underlying socket.io-client Socket (or the injected socket). */
  readonly socket: Socket;
  on<E extends keyof ClientEvents>(event: E, cb: ClientEvents[E]): Off;
  /**
   * Attaches the view at `path`. Resolves once the server acknowledges (after connecting if
   * needed); rejects with AttachError.
   */
  attach<P = any>(path: string, props?: unknown): Promise<View<P>>;
  /**
   * The bridge of channel `id`: the same object while open. A closed id keeps giving its
   * closed bridge; so does any new id while not connected and no recovery is possible.
   */
  channel(id: string): Channel;
  /** Reference-counted channel(): pair each call with releaseChannel(). */
  acquireChannel(id: string): Channel;
  /** After the last release, the channel closes on the next macrotask unless re-acquired. */
  releaseChannel(id: string): void;
  /** Ends everything; disconnects the socket unless it was injected. Idempotent. */
  close(): void;
}

/** Creates a client and starts connecting (unless `autoConnect: false`). */
export function createClient(options?: ClientOptions): PulseClient;
