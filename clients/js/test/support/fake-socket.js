// An in-process stand-in for a socket.io-client Socket, driven by the test. What the client
// emits is recorded as the JSON text socket.io-client would put in the packet; what the
// "server" sends is delivered through the same listeners a real Socket would call. With
// `pid` set, it plays a server with connection state recovery: `_pid` is what socket.io-client
// keeps from the CONNECT reply, `recovered` what it sets on a reconnect, and server messages
// may carry their offset as a second argument.

import { EventEmitter } from "node:events";

export class FakeSocket extends EventEmitter {
  constructor({ connected = true, pid } = {}) {
    super();
    this.connected = connected;
    this.active = true;
    this.recovered = false;
    this._pid = connected ? pid : undefined;
    this.pid = pid;
    /** socket.io-client's buffer of packets received before a CONNECT reply. */
    this.receiveBuffer = [];
    /** JSON text of every "message" the client emitted, oldest first. */
    this.sent = [];
    this.disconnectCalls = 0;
  }

  // The client side: socket.emit("message", obj) sends to the server.
  emit(event, ...args) {
    if (event !== "message") throw new Error(`unexpected client emit "${event}"`);
    if (args.length !== 1) throw new Error(`"message" carries one argument, got ${args.length}`);
    this.sent.push(JSON.stringify(args[0]));
    return this;
  }

  disconnect() {
    this.disconnectCalls += 1;
    const was = this.connected;
    this.connected = false;
    this.active = false;
    if (was) this.#fire("disconnect", "io client disconnect");
    return this;
  }

  // ---- the test's side ----

  /** Delivers one "message" from the server (with its offset string, as recovery sends it). */
  serverSend(msg, offset) {
    if (offset === undefined) this.#fire("message", msg);
    else this.#fire("message", msg, offset);
  }

  /** The connection drops (the client will reconnect). */
  drop(reason = "transport close") {
    this.connected = false;
    this.#fire("disconnect", reason);
  }

  /**
   * The connection (re)opens; `recovered` as the server's CONNECT reply decides it (a reply
   * with the same pid). `replay` messages ([msg, offset] pairs) arrive before the reply, as
   * the server's replay does, and are delivered as socket.io-client does: after `connected`
   * turns true, before "connect".
   */
  open({ recovered = false, replay = [] } = {}) {
    this.connected = true;
    this.active = true;
    this.recovered = recovered && this._pid !== undefined && this._pid === this.pid;
    this._pid = this.pid;
    for (const [msg, offset] of replay) this.serverSend(msg, offset);
    this.#fire("connect");
  }

  /** A connect attempt fails. */
  fail(err, { active = true } = {}) {
    this.active = active;
    this.#fire("connect_error", err);
  }

  /** Parsed messages sent so far, and forgets them. */
  take() {
    const out = this.sent.map((s) => JSON.parse(s));
    this.sent = [];
    return out;
  }

  /** Raw JSON texts sent so far, and forgets them. */
  takeRaw() {
    const out = this.sent;
    this.sent = [];
    return out;
  }

  #fire(event, ...args) {
    return EventEmitter.prototype.emit.call(this, event, ...args);
  }
}

/** Resolves after pending microtasks and one macrotask. */
export function tick(ms = 0) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A client's "error" events, collected instead of printed. */
export function collectErrors(client) {
  const errors = [];
  client.on("error", (err) => errors.push(err));
  return errors;
}
