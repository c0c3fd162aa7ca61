// An in-process stand-in for a socket.io-client Socket, driven by the test. What the client
// emits is recorded as the JSON text socket.io-client would put in the packet; what the
// "server" sends is delivered through the same listeners a real Socket would call.

import { EventEmitter } from "node:events";

export class FakeSocket extends EventEmitter {
  constructor({ connected = true } = {}) {
    super();
    this.connected = connected;
    this.active = true;
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

  /** Delivers one "message" from the server. */
  serverSend(msg) {
    this.#fire("message", msg);
  }

  /** The connection drops (the client will reconnect). */
  drop(reason = "transport close") {
    this.connected = false;
    this.#fire("disconnect", reason);
  }

  /** The connection (re)opens. */
  open() {
    this.connected = true;
    this.active = true;
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
