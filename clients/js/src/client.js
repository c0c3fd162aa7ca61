// The client: one Socket.IO connection to a pulsec server (socket.io-client underneath). It
// owns the views and channel bridges of that connection, routes the server's "message" events
// to them, reports the connection status, and survives reconnects.
//
// A reconnect is either recovered (Socket.IO connection state recovery: the server kept the
// session, replayed what we missed, and socket.recovered is true) or fresh (a new session).
// While a recovery is possible (the server gave us a pid and the drop was not a deliberate
// disconnect), bridges, views and pending requests are kept and what the app sends waits in
// `#outbox`; a recovered reconnect then sends our unanswered requests again, and the outbox,
// in order. A fresh one closes every bridge (pending requests reject with ChannelClosed) and
// attaches every view again.
//
// Invariants: an open bridge exists only while connected or while a recovery is possible; a
// closed channel id stays closed (server ids are never reused), so `channel(id)` keeps
// returning its closed bridge; a server message is delivered at most once (its offset must
// grow); everything is sent as the Socket.IO event "message" with one plain JSON object.

import { io } from "socket.io-client";
import { Channel, DEFAULT_MAX_BUFFERED, CLOSE_EVENT, randomHex } from "./channel.js";
import { AttachError, ChannelClosed } from "./errors.js";
import { View } from "./view.js";

/** How many closed channel ids are remembered, oldest forgotten first. */
const CLOSED_MEMORY = 1024;

/** Client events and the argument each listener gets. */
const CLIENT_EVENTS = ["status", "connect", "connect_error", "error"];

/** Disconnect reasons after which socket.io-client does not come back by itself. */
const FINAL_REASONS = new Set(["io server disconnect", "io client disconnect"]);

/** Default bound on the messages that wait for a recovered reconnect. */
const DEFAULT_MAX_QUEUED = 1000;

/** A Socket.IO offset pulsec writes: the decimal sequence number of the server's packet. */
const OFFSET = /^[0-9]{1,16}$/;

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/**
 * Creates a client and starts connecting (unless `autoConnect: false` is passed through to
 * socket.io-client).
 *
 * @param {object} [options]
 * @param {string} [options.url] server URL; absent = the page's origin
 * @param {object | ((cb: (data: object) => void) => void)} [options.auth] Socket.IO auth
 *   payload, seen by the server's connect middleware
 * @param {string} [options.path] Engine.IO path, default "/socket.io/"
 * @param {string[]} [options.transports] default ["websocket"]
 * @param {any} [options.socket] an existing socket.io-client Socket (or a test double) to use
 *   instead of creating one; the client then neither creates nor disconnects it
 * @param {number} [options.maxBuffered] per channel and event, how many messages are kept
 *   while no listener exists (default 1000; the oldest is dropped beyond)
 * @param {number} [options.maxQueued] how many messages the app may send while reconnecting
 *   (they go out after a recovered reconnect; default 1000; beyond, sending fails as when
 *   disconnected)
 * @returns {PulseClient}
 */
export function createClient(options = {}) {
  return new PulseClient(options);
}

/** A connection to a pulsec server. Create it with `createClient()`. */
export class PulseClient {
  #socket;
  #ownsSocket;
  #status;
  #closed = false;
  #maxBuffered;
  #maxQueued;
  #everConnected = false;
  /** Disconnected, with bridges and views kept, until the next connect says recovered or not. */
  #recovering = false;
  #recovered = false;
  /** @type {Array<{msg: object, onSent: (() => void) | undefined}>} sent while recovering */
  #outbox = [];
  /** Offset of the last server message delivered; older or equal ones are replays seen. */
  #lastOffset = -1;
  /** The Socket.IO id of the session to come back to (names the server's worker). */
  #sessionId = null;
  /** @type {Record<string, Set<Function>>} */
  #listeners = { status: new Set(), connect: new Set(), connect_error: new Set(), error: new Set() };
  /** @type {Map<string, View>} by attachId */
  #views = new Map();
  /** @type {Map<string, {bridge: Channel, refs: number, timer: any}>} open bridges by id */
  #channels = new Map();
  /** @type {Map<string, Channel>} closed bridges by id, oldest first */
  #closedChannels = new Map();
  #channelLink;
  #viewLink;
  #unbind = [];

  /** @param {Parameters<typeof createClient>[0]} [options] */
  constructor(options = {}) {
    const {
      url,
      socket,
      maxBuffered = DEFAULT_MAX_BUFFERED,
      maxQueued = DEFAULT_MAX_QUEUED,
      path = "/socket.io/",
      transports = ["websocket"],
      ...socketOptions
    } = options ?? {};
    if (!(Number.isInteger(maxBuffered) && maxBuffered >= 0)) {
      throw new TypeError("maxBuffered is an integer >= 0");
    }
    if (!(Number.isInteger(maxQueued) && maxQueued >= 0)) {
      throw new TypeError("maxQueued is an integer >= 0");
    }
    this.#maxBuffered = maxBuffered;
    this.#maxQueued = maxQueued;
    if (socket) {
      this.#socket = socket;
      this.#ownsSocket = false;
    } else {
      const opts = { ...socketOptions, path, transports };
      this.#socket = url === undefined ? io(opts) : io(url, opts);
      this.#ownsSocket = true;
    }

    const report = (err) => this.#report(err);
    const send = (msg, onSent) => this.#send(msg, onSent);
    this.#channelLink = {
      send,
      report,
      closed: (bridge) => this.#forgetChannel(bridge),
      maxBuffered,
    };
    this.#viewLink = {
      send,
      report,
      removed: (view) => {
        if (this.#views.get(view.attachId) === view) this.#views.delete(view.attachId);
      },
    };

    const s = this.#socket;
    this.#everConnected = !!s.connected;
    this.#status = s.connected ? "connected" : s.active === false ? "disconnected" : "connecting";
    this.#bind(s, "connect", () => this.#onConnect());
    this.#bind(s, "disconnect", (reason) => this.#onDisconnect(reason));
    this.#bind(s, "connect_error", (err) => this.#onConnectError(err));
    this.#bind(s, "message", (msg, offset) => this.#onMessage(msg, offset));
    const manager = s.io;
    if (manager && typeof manager.on === "function") {
      this.#bind(manager, "reconnect_attempt", () => this.#setStatus(this.#retrying()));
      this.#bind(manager, "reconnect_failed", () => this.#giveUp());
    }
  }

  /**
   * "connecting" before the first connect, "connected", "reconnecting" after the connection
   * dropped (socket.io-client is trying again), "disconnected" once it will not come back by
   * itself (close(), the server's disconnect, a refused connect, reconnection given up).
   */
  get status() {
    return this.#status;
  }

  /**
   * Whether the last (re)connect recovered the session: the server kept it across the drop,
   * so views, channels and pending requests carried on. False for a first connect and for a
   * fresh session.
   */
  get recovered() {
    return this.#recovered;
  }

  /** True after `close()`. */
  get closed() {
    return this.#closed;
  }

  /** The underlying socket.io-client Socket, for what this API does not cover. */
  get socket() {
    return this.#socket;
  }

  /**
   * Subscribes to a client event:
   * - "status": `(status)` when the connection status changes;
   * - "connect": `({ recovered })` after every connect: recovered is true when the server kept
   *   the session across the drop (nothing was lost), false for a first or fresh session;
   * - "connect_error": `(error)` when connecting fails (a refusal by the server's connect
   *   middleware has the server's reason as `error.message`);
   * - "error": `(error)` for errors thrown by channel listeners outside of a request, and for
   *   malformed messages from the server. Without a listener these go to console.error.
   * @param {"status" | "connect" | "connect_error" | "error"} event
   * @param {Function} cb
   * @returns {() => void} unsubscribes
   */
  on(event, cb) {
    if (!CLIENT_EVENTS.includes(event)) {
      throw new TypeError(`unknown client event "${event}" (${CLIENT_EVENTS.join(", ")})`);
    }
    if (typeof cb !== "function") throw new TypeError("callback must be a function");
    const entry = (arg) => cb(arg);
    this.#listeners[event].add(entry);
    return () => this.#listeners[event].delete(entry);
  }

  /**
   * Attaches the view at `path` with `props`. Resolves with the View once the server
   * acknowledges (waiting for the connection first if needed); rejects with an AttachError
   * carrying the server's text when the server refuses.
   * @param {string} path
   * @param {unknown} [props] any JSON value
   * @returns {Promise<View>}
   */
  attach(path, props) {
    if (typeof path !== "string" || path.length === 0) {
      return Promise.reject(new TypeError("attach path is a non-empty string"));
    }
    if (this.#closed) {
      return Promise.reject(new AttachError("Client closed", { path, code: "ECLOSED" }));
    }
    return new Promise((resolve, reject) => {
      const attachId = randomHex(16);
      const view = new View(this.#viewLink, path, props, attachId, { resolve, reject });
      this.#views.set(attachId, view);
      if (this.#socket.connected && !this.#recovering) view._sendAttach();
    });
  }

  /**
   * The bridge of channel `id`: the same object for the same id while the channel is open.
   * A closed channel stays closed, so its id keeps giving the closed bridge; so does any new id
   * while the client is not connected and no recovery is possible (channels belong to one
   * session).
   * @param {string} id
   * @returns {Channel}
   */
  channel(id) {
    if (typeof id !== "string" || id.length === 0) {
      throw new TypeError("channel id is a non-empty string");
    }
    const entry = this.#channels.get(id);
    if (entry) return entry.bridge;
    const closed = this.#closedChannels.get(id);
    if (closed) return closed;
    const bridge = new Channel(id, this.#channelLink);
    if (this.#closed || (!this.#socket.connected && !this.#recovering)) {
      bridge._close(
        new ChannelClosed(this.#closed ? "Client closed" : "Not connected", {
          channel: id,
          reason: this.#closed ? "client" : "disconnect",
        }),
      );
      return bridge;
    }
    this.#channels.set(id, { bridge, refs: 0, timer: null });
    return bridge;
  }

  /**
   * Reference-counted `channel(id)` for frameworks: each call must be paired with one
   * `releaseChannel(id)`. When the count drops to zero the channel is closed (`__close__` is
   * sent) on the next macrotask, unless it was acquired again in between, as React StrictMode
   * does when it runs effects twice.
   * @param {string} id
   * @returns {Channel}
   */
  acquireChannel(id) {
    const bridge = this.channel(id);
    const entry = this.#channels.get(id);
    if (entry && entry.bridge === bridge) {
      entry.refs += 1;
      if (entry.timer !== null) {
        clearTimeout(entry.timer);
        entry.timer = null;
      }
    }
    return bridge;
  }

  /**
   * Gives back one `acquireChannel(id)`.
   * @param {string} id
   */
  releaseChannel(id) {
    const entry = this.#channels.get(id);
    if (!entry || entry.refs === 0) return;
    entry.refs -= 1;
    if (entry.refs > 0 || entry.timer !== null) return;
    entry.timer = setTimeout(() => {
      entry.timer = null;
      if (entry.refs === 0) entry.bridge.close();
    }, 0);
  }

  /**
   * Closes the client: pending attaches reject, every bridge closes with ChannelClosed, views
   * end, and the socket disconnects (unless it was passed in as `options.socket`). Idempotent.
   */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#recovering = false;
    this.#outbox = [];
    for (const view of [...this.#views.values()]) {
      view._end(new AttachError("Client closed", { path: view.path, attachId: view.attachId, code: "ECLOSED" }));
    }
    this.#closeAllChannels("Client closed", "client");
    for (const undo of this.#unbind) undo();
    this.#unbind = [];
    if (this.#ownsSocket) this.#socket.disconnect();
    this.#setStatus("disconnected");
  }

  // ---- internals --------------------------------------------------------------------------

  #bind(target, event, fn) {
    target.on(event, fn);
    this.#unbind.push(() => target.off(event, fn));
  }

  /**
   * Sends now, or while a recovery is possible queues for the recovered reconnect (then calls
   * `onSent` when it goes out). False when it cannot go out at all.
   */
  #send(msg, onSent) {
    if (this.#closed) return false;
    if (this.#recovering) {
      if (this.#outbox.length >= this.#maxQueued) return false;
      this.#outbox.push({ msg, onSent });
      return true;
    }
    if (!this.#socket.connected) return false;
    this.#socket.emit("message", msg);
    onSent?.();
    return true;
  }

  #report(err) {
    const listeners = this.#listeners.error;
    if (listeners.size === 0) {
      console.error("[pulsec-client]", err);
      return;
    }
    for (const cb of [...listeners]) {
      try {
        cb(err);
      } catch (e) {
        console.error("[pulsec-client] error listener threw", e);
      }
    }
  }

  #setStatus(status) {
    if (this.#status === status) return;
    this.#status = status;
    for (const cb of [...this.#listeners.status]) {
      try {
        cb(status);
      } catch (err) {
        this.#report(err);
      }
    }
  }

  #onConnect() {
    const wasRecovering = this.#recovering;
    this.#recovering = false;
    this.#everConnected = true;
    this.#recovered = wasRecovering && this.#socket.recovered === true;
    if (typeof this.#socket.id === "string") this.#sessionId = this.#socket.id;
    if (this.#recovered) {
      this.#resume();
    } else {
      // A fresh session: nothing of the old one exists on the server any more.
      this.#outbox = [];
      this.#lastOffset = -1;
      this.#closeAllChannels("Connection lost", "disconnect");
      for (const view of [...this.#views.values()]) view._connectionLost();
    }
    this.#setStatus("connected");
    if (!this.#recovered) {
      for (const view of [...this.#views.values()]) {
        if (this.#closed || !this.#socket.connected) break;
        view._sendAttach();
      }
    }
    this.#emit("connect", { recovered: this.#recovered });
  }

  /**
   * After a recovered reconnect: what the server missed of ours goes out, oldest first. The
   * server replayed what we missed before its CONNECT reply, so answers to our requests that
   * were on the way have arrived; what is still unanswered may never have reached the server
   * (it answers a repeat only once). Then views still waiting for their ack, then the outbox.
   */
  #resume() {
    const unanswered = [];
    for (const { bridge } of this.#channels.values()) unanswered.push(...bridge._unanswered());
    unanswered.sort((a, b) => a[0] - b[0]);
    for (const [, msg] of unanswered) this.#socket.emit("message", msg);
    for (const view of [...this.#views.values()]) {
      if (view.state === "attaching") view._sendAttach();
    }
    const outbox = this.#outbox;
    this.#outbox = [];
    for (let i = 0; i < outbox.length; i++) {
      if (!this.#socket.connected) {
        this.#outbox = outbox.slice(i); // dropped again meanwhile: they wait for the next one
        return;
      }
      try {
        this.#socket.emit("message", outbox[i].msg);
        outbox[i].onSent?.();
      } catch (err) {
        this.#report(err);
      }
    }
  }

  #onDisconnect(reason) {
    // socket.io-client 4.8 keeps packets that arrived before a CONNECT reply that never came,
    // and delivers them after the next one, on top of the server's replay of the same packets:
    // dropping them here makes the replay the only copy.
    if (Array.isArray(this.#socket.receiveBuffer)) this.#socket.receiveBuffer.length = 0;
    if (this.#closed) return;
    const final = FINAL_REASONS.has(reason);
    // socket.io-client asks for a recovery (sends the pid) iff the server gave it one.
    if (!final && this.#everConnected && (this.#recovering || typeof this.#socket._pid === "string")) {
      this.#recovering = true;
      this.#routeBack();
      this.#setStatus(this.#socket.active === false ? "disconnected" : "reconnecting");
      return;
    }
    this.#recovering = false;
    this.#outbox = [];
    this.#closeAllChannels(reason ? `Connection lost (${reason})` : "Connection lost", "disconnect");
    for (const view of [...this.#views.values()]) view._connectionLost();
    this.#setStatus(final || this.#socket.active === false ? "disconnected" : "reconnecting");
  }

  #onConnectError(err) {
    this.#setStatus(this.#socket.active === false ? "disconnected" : this.#retrying());
    if (this.#socket.active === false) this.#giveUp();
    for (const cb of [...this.#listeners.connect_error]) {
      try {
        cb(err);
      } catch (e) {
        this.#report(e);
      }
    }
  }

  /**
   * A pulsec server with several workers keeps the session in the worker that made it; the
   * reconnect's handshake names it (`pulsec_resume`, the session's last Socket.IO id, whose
   * first character is the worker) so that the server hands the connection to that worker.
   * Servers without workers ignore it.
   */
  #routeBack() {
    const opts = this.#socket.io?.opts;
    if (!opts || typeof this.#sessionId !== "string") return;
    const query =
      typeof opts.query === "string" ? Object.fromEntries(new URLSearchParams(opts.query)) : { ...(opts.query ?? {}) };
    query.pulsec_resume = this.#sessionId;
    opts.query = query;
  }

  #retrying() {
    return this.#everConnected ? "reconnecting" : "connecting";
  }

  /** The socket will not come back by itself: a kept session is given up. */
  #giveUp() {
    if (this.#recovering) {
      this.#recovering = false;
      this.#outbox = [];
      this.#closeAllChannels("Connection lost", "disconnect");
      for (const view of [...this.#views.values()]) view._connectionLost();
    }
    this.#setStatus("disconnected");
  }

  #emit(event, arg) {
    for (const cb of [...this.#listeners[event]]) {
      try {
        cb(arg);
      } catch (err) {
        this.#report(err);
      }
    }
  }

  #closeAllChannels(message, reason) {
    for (const entry of [...this.#channels.values()]) {
      entry.bridge._close(new ChannelClosed(message, { channel: entry.bridge.id, reason }));
    }
  }

  #forgetChannel(bridge) {
    const entry = this.#channels.get(bridge.id);
    if (entry && entry.bridge === bridge) {
      clearTimeout(entry.timer);
      this.#channels.delete(bridge.id);
    }
    this.#closedChannels.delete(bridge.id);
    this.#closedChannels.set(bridge.id, bridge);
    if (this.#closedChannels.size > CLOSED_MEMORY) {
      this.#closedChannels.delete(this.#closedChannels.keys().next().value);
    }
  }

  #onMessage(msg, offset) {
    if (typeof offset === "string" && OFFSET.test(offset)) {
      const n = Number(offset);
      if (n <= this.#lastOffset) return; // a replay of what was delivered already
      this.#lastOffset = n;
    }
    if (!isObject(msg) || typeof msg.type !== "string") {
      this.#report(new Error("pulsec-client: dropped a message that is not an object with a type"));
      return;
    }
    switch (msg.type) {
      case "channel_message":
        this.#onChannelMessage(msg);
        return;
      case "attach_ack":
      case "attach_error":
      case "view_props": {
        const view = typeof msg.attachId === "string" ? this.#views.get(msg.attachId) : undefined;
        if (!view) return; // detached meanwhile
        if (msg.type === "attach_ack") view._ack(msg.props);
        else if (msg.type === "view_props") view._props(msg.props);
        else view._fail(typeof msg.error === "string" ? msg.error : String(msg.error ?? "Attach failed"));
        return;
      }
      default:
        this.#report(new Error(`pulsec-client: dropped a message of unknown type "${msg.type}"`));
    }
  }

  #onChannelMessage(msg) {
    const id = msg.channel;
    if (typeof id !== "string" || id.length === 0) {
      this.#report(new Error("pulsec-client: dropped a channel message without a channel id"));
      return;
    }
    const entry = this.#channels.get(id);
    if (entry) {
      entry.bridge._receive(msg);
      return;
    }
    const isResponse = typeof msg.responseTo === "string";
    if (this.#closedChannels.has(id)) {
      // A request raced with our close: answer it as the server would.
      if (!isResponse && typeof msg.requestId === "string" && msg.event !== CLOSE_EVENT) {
        this.#send({ type: "channel_message", channel: id, responseTo: msg.requestId, error: "Channel closed" });
      }
      return;
    }
    if (isResponse) return; // we never asked on this channel
    // First message of a channel nobody asked for yet (its id is probably in props still on
    // the way to a component): keep a bridge so its events wait for their listeners.
    const bridge = this.channel(id);
    bridge._receive(msg);
  }
}
