// The channel bridge: one open channel of the server seen from the browser. It builds and reads
// the channel envelopes of DESIGN §3, keeps the pending requests this side made, buffers events
// that arrive before anyone listens for them, and answers the server's requests with the
// listeners' results. The client (client.js) owns every bridge and routes messages to it; a
// bridge talks back to the client only through the small `link` object it is given.

import { ChannelClosed, ChannelError, ChannelTimeout } from "./errors.js";

/** The event name that closes a channel; reserved, never delivered to listeners. */
export const CLOSE_EVENT = "__close__";

/** Default bound on the messages buffered for one event that has no listener yet. */
export const DEFAULT_MAX_BUFFERED = 1000;

/**
 * How many of the server's requests a bridge remembers (with their answers), so that a request
 * the server sends again after a recovered reconnect is answered from memory, not run twice.
 */
export const HANDLED_MEMORY = 2048;

/** Orders every request of a client, across bridges, for re-sending after a recovery. */
let requestSeq = 0;

/**
 * Returns `bytes` random bytes from the platform CSPRNG as lowercase hex.
 * @param {number} bytes
 * @returns {string}
 */
export function randomHex(bytes) {
  const c = globalThis.crypto;
  if (!c || typeof c.getRandomValues !== "function") {
    throw new Error("pulsec-client needs crypto.getRandomValues (a browser, or Node.js >= 20)");
  }
  const buf = c.getRandomValues(new Uint8Array(bytes));
  let out = "";
  for (const b of buf) out += b.toString(16).padStart(2, "0");
  return out;
}

function isThenable(value) {
  return (
    value !== null &&
    (typeof value === "object" || typeof value === "function") &&
    typeof value.then === "function"
  );
}

/** Turns whatever a handler threw into the text of an error response. */
export function errorText(err) {
  if (err instanceof Error) return err.message || err.name || "Error";
  if (typeof err === "string") return err;
  try {
    const json = JSON.stringify(err);
    if (typeof json === "string") return json;
  } catch {
    /* fall through */
  }
  return String(err);
}

function checkEvent(event) {
  if (typeof event !== "string" || event.length === 0) {
    throw new TypeError("channel event names are non-empty strings");
  }
  if (event === CLOSE_EVENT) {
    throw new TypeError(`"${CLOSE_EVENT}" is reserved: use close() to close a channel`);
  }
}

/** JSON has no undefined: a missing payload travels as null. */
function wirePayload(payload) {
  return payload === undefined ? null : payload;
}

/**
 * A channel bridge. Get one with `client.channel(id)`; never construct it yourself.
 *
 * Listener rule for requests from the server: every listener registered for the event is
 * called, in registration order, with the payload. The answer is the result of the first
 * listener (in registration order) that returns something other than `undefined` (a Promise
 * counts by what it resolves to) or that throws (a rejected Promise counts the same): a value
 * is sent as the response payload, an error as an error response with its message. When every
 * listener returns `undefined`, the answer is `null`.
 */
export class Channel {
  #id;
  #link;
  #closed = false;
  /** @type {Map<string, Array<{handler: Function, active: boolean}>>} */
  #listeners = new Map();
  /** @type {Map<string, Array<object>>} messages waiting for a first listener, per event */
  #backlog = new Map();
  /** @type {Set<string>} events whose backlog is about to be delivered */
  #flushing = new Set();
  /**
   * Our requests awaiting an answer. `msg` is kept to send it again after a recovered
   * reconnect; `sent` says whether it went out on a transport (or waits in the client's queue).
   * @type {Map<string, {resolve: Function, reject: Function, timer: any, event: string,
   *   msg: object, seq: number, sent: boolean, abort: (() => void) | null}>}
   */
  #pending = new Map();
  /**
   * The server's requests this bridge has handled: requestId -> null while the listeners run,
   * then the answer sent. Oldest first, bounded by HANDLED_MEMORY.
   * @type {Map<string, {value: any} | {error: string} | null>}
   */
  #handled = new Map();
  /** @type {Set<Function>} */
  #closeCallbacks = new Set();

  /**
   * @param {string} id
   * @param {{ send(msg: object, onSent?: () => void): boolean, closed(ch: Channel): void,
   *           report(err: unknown): void, maxBuffered: number }} link  send returns false when
   *   the message cannot go out (not connected, no recovery possible); otherwise it was sent, or
   *   queued until a recovered reconnect and `onSent` runs when it goes out

   * @internal
   */
  constructor(id, link) {
    this.#id = id;
    this.#link = link;
  }

  /** The channel id the server made. */
  get id() {
    return this.#id;
  }

  /** True once the channel is closed, from either side or by a disconnect. */
  get closed() {
    return this.#closed;
  }

  /**
   * Sends a fire-and-forget event to the server.
   * @param {string} event
   * @param {unknown} [payload] any JSON value; `undefined` is sent as null
   * @throws {ChannelClosed} when the channel is closed
   */
  emit(event, payload) {
    this.#ensureOpen();
    checkEvent(event);
    this.#link.send({
      type: "channel_message",
      channel: this.#id,
      event,
      payload: wirePayload(payload),
    });
  }

  /**
   * Sends a request and resolves with the server's answer.
   * @param {string} event
   * @param {unknown} [payload]
   * @param {{ timeout?: number, signal?: AbortSignal }} [options] timeout in milliseconds (0 or
   *   absent = none); `signal` aborts the wait: the promise rejects with the signal's reason (an
   *   "AbortError" DOMException by default) and a late answer is ignored
   * @returns {Promise<any>} rejects with ChannelTimeout, ChannelClosed, ChannelError carrying
   *   the server's error text, or the abort reason
   * @throws {ChannelClosed} synchronously when the channel is already closed
   */
  request(event, payload, options = {}) {
    this.#ensureOpen();
    checkEvent(event);
    const timeout = options?.timeout ?? 0;
    if (typeof timeout !== "number" || !(timeout >= 0) || timeout === Infinity) {
      throw new TypeError("request timeout is a finite number of milliseconds >= 0");
    }
    const signal = options?.signal;
    if (signal !== undefined && signal !== null && !isAbortSignal(signal)) {
      throw new TypeError("request signal is an AbortSignal");
    }
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    const requestId = randomHex(16);
    return new Promise((resolve, reject) => {
      const msg = {
        type: "channel_message",
        channel: this.#id,
        event,
        payload: wirePayload(payload),
        requestId,
      };
      const pending = { resolve, reject, timer: null, event, msg, seq: ++requestSeq, sent: false, abort: null };
      this.#pending.set(requestId, pending);
      const forget = () => {
        if (this.#pending.get(requestId) !== pending) return false;
        this.#pending.delete(requestId);
        clearTimeout(pending.timer);
        pending.abort?.();
        return true;
      };
      if (timeout > 0) {
        pending.timer = setTimeout(() => {
          if (!forget()) return;
          reject(
            new ChannelTimeout(`Request "${event}" timed out after ${timeout} ms`, {
              channel: this.#id,
              event,
              timeout,
            }),
          );
        }, timeout);
      }
      if (signal) {
        const onAbort = () => {
          if (forget()) reject(abortReason(signal));
        };
        signal.addEventListener("abort", onAbort, { once: true });
        pending.abort = () => signal.removeEventListener("abort", onAbort);
      }
      let accepted;
      try {
        accepted = this.#link.send(msg, () => {
          pending.sent = true;
        });
      } catch (err) {
        forget(); // the payload could not be encoded
        throw err;
      }
      if (!accepted && forget()) {
        reject(new ChannelClosed("Not connected", { channel: this.#id, reason: "disconnect" }));
      }
    });
  }

  /**
   * Listens for an event from the server. Events (and requests) that arrived before the
   * event's first listener are delivered right after it registers, in arrival order, on a
   * microtask (so that `off` is in hand first, and a listener registered in the same tick
   * gets them too). See the class comment for how listeners answer requests.
   * @param {string} event
   * @param {(payload: any) => unknown} handler
   * @returns {() => void} removes this listener; idempotent, safe inside a handler
   * @throws {ChannelClosed} when the channel is closed
   */
  on(event, handler) {
    this.#ensureOpen();
    checkEvent(event);
    if (typeof handler !== "function") throw new TypeError("handler must be a function");
    let list = this.#listeners.get(event);
    if (!list) {
      list = [];
      this.#listeners.set(event, list);
    }
    const entry = { handler, active: true };
    list.push(entry);
    if (this.#backlog.has(event)) this.#scheduleFlush(event);
    return () => {
      if (!entry.active) return;
      entry.active = false;
      const current = this.#listeners.get(event);
      if (!current) return;
      const i = current.indexOf(entry);
      if (i >= 0) current.splice(i, 1);
      if (current.length === 0) this.#listeners.delete(event);
    };
  }

  /**
   * Calls `cb` once when the channel closes (not if it is already closed).
   * @param {(error: ChannelClosed) => void} cb
   * @returns {() => void} unsubscribes
   */
  onClose(cb) {
    if (typeof cb !== "function") throw new TypeError("callback must be a function");
    if (this.#closed) return () => {};
    this.#closeCallbacks.add(cb);
    return () => this.#closeCallbacks.delete(cb);
  }

  /**
   * Releases the channel: sends `__close__` to the server and closes the bridge locally.
   * Pending requests reject with ChannelClosed. Idempotent.
   */
  close() {
    if (this.#closed) return;
    this.#link.send({ type: "channel_message", channel: this.#id, event: CLOSE_EVENT, payload: null });
    this._close(new ChannelClosed("Channel closed", { channel: this.#id, reason: "local" }));
  }

  // ---- called by the client --------------------------------------------------------------

  /**
   * Handles one channel envelope from the server.
   * @param {Record<string, any>} msg
   * @internal
   */
  _receive(msg) {
    if (this.#closed) return;
    if (typeof msg.responseTo === "string") {
      this.#settle(msg);
      return;
    }
    if (typeof msg.event !== "string") {
      this.#link.report(new Error(`pulsec-client: channel message without event or responseTo`));
      return;
    }
    if (msg.event === CLOSE_EVENT) {
      this._close(
        new ChannelClosed("Channel closed by the server", { channel: this.#id, reason: "remote" }),
      );
      return;
    }
    const requestId = typeof msg.requestId === "string" ? msg.requestId : undefined;
    if (requestId !== undefined) {
      // A request seen before is one the server sent again after a recovered reconnect: it is
      // answered once, from memory (or not yet, while its listeners still run).
      if (this.#handled.has(requestId)) {
        const answer = this.#handled.get(requestId);
        if (answer) this.#send(this.#answerMessage(requestId, answer));
        return;
      }
      this.#handled.set(requestId, null);
      if (this.#handled.size > HANDLED_MEMORY) this.#forgetOldestHandled();
    }
    this.#deliver({ event: msg.event, payload: msg.payload === undefined ? null : msg.payload, requestId });
  }

  /**
   * Our requests that went out on a transport and have no answer yet, as [seq, message]: after
   * a recovered reconnect the client sends them again (the server answers a repeat once).
   * @internal
   */
  _unanswered() {
    const out = [];
    for (const p of this.#pending.values()) if (p.sent) out.push([p.seq, p.msg]);
    return out;
  }

  /**
   * Closes the bridge without telling the server: rejects pending requests with `error`, drops
   * listeners and buffered messages, then notifies the client and onClose callbacks.
   * @param {ChannelClosed} error
   * @internal
   */
  _close(error) {
    if (this.#closed) return;
    this.#closed = true;
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const list of this.#listeners.values()) for (const e of list) e.active = false;
    this.#listeners.clear();
    this.#backlog.clear();
    this.#handled.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.abort?.();
      p.reject(error);
    }
    this.#link.closed(this);
    const callbacks = [...this.#closeCallbacks];
    this.#closeCallbacks.clear();
    for (const cb of callbacks) {
      try {
        cb(error);
      } catch (err) {
        this.#link.report(err);
      }
    }
  }

  // ---- internals --------------------------------------------------------------------------

  #ensureOpen() {
    if (this.#closed) {
      throw new ChannelClosed("Channel closed", { channel: this.#id, reason: "local" });
    }
  }

  /** Sends a message on the link; false when it could not even be queued. */
  #send(msg) {
    return this.#link.send(msg);
  }

  #forgetOldestHandled() {
    // The oldest answered one goes first; one still running only if nothing else can.
    for (const [id, answer] of this.#handled) {
      if (answer) {
        this.#handled.delete(id);
        return;
      }
    }
    this.#handled.delete(this.#handled.keys().next().value);
  }

  #answerMessage(requestId, answer) {
    const base = { type: "channel_message", channel: this.#id, responseTo: requestId };
    return "error" in answer ? { ...base, error: answer.error } : { ...base, payload: answer.value };
  }

  #settle(msg) {
    const pending = this.#pending.get(msg.responseTo);
    if (!pending) return; // timed out already, answered already, or not ours
    this.#pending.delete(msg.responseTo);
    clearTimeout(pending.timer);
    pending.abort?.();
    if (msg.error !== undefined && msg.error !== null) {
      pending.reject(
        new ChannelError(String(msg.error), { channel: this.#id, event: pending.event }),
      );
    } else {
      pending.resolve(msg.payload === undefined ? null : msg.payload);
    }
  }

  /** Dispatches a message now, or buffers it until its event has a listener. */
  #deliver(m) {
    const queue = this.#backlog.get(m.event);
    if (queue) {
      // Older messages of this event are still waiting: keep arrival order.
      this.#buffer(queue, m);
      return;
    }
    const list = this.#listeners.get(m.event);
    if (!list || list.length === 0) {
      const fresh = [];
      this.#backlog.set(m.event, fresh);
      this.#buffer(fresh, m);
      return;
    }
    this.#dispatch(m, list.slice());
  }

  #buffer(queue, m) {
    queue.push(m);
    if (queue.length <= this.#link.maxBuffered) return;
    const dropped = queue.shift();
    this.#link.report(
      new Error(`pulsec-client: dropped a buffered "${dropped.event}" message on channel ${this.#id}`),
    );
    if (dropped.requestId !== undefined) {
      this.#reply(dropped.requestId, { error: `No listener for "${dropped.event}"` });
    }
  }

  #scheduleFlush(event) {
    if (this.#flushing.has(event)) return;
    this.#flushing.add(event);
    queueMicrotask(() => {
      this.#flushing.delete(event);
      const queue = this.#backlog.get(event);
      if (this.#closed || !queue) return;
      this.#backlog.delete(event);
      for (let i = 0; i < queue.length; i++) {
        if (this.#closed) return;
        const list = this.#listeners.get(event);
        if (!list || list.length === 0) {
          // Every listener went away meanwhile: keep the rest for the next one.
          this.#backlog.set(event, queue.slice(i));
          return;
        }
        this.#dispatch(queue[i], list.slice());
      }
    });
  }

  #dispatch(m, entries) {
    if (m.requestId === undefined) {
      for (const e of entries) {
        if (!e.active) continue;
        try {
          const r = e.handler(m.payload);
          if (isThenable(r)) r.then(undefined, (err) => this.#link.report(err));
        } catch (err) {
          this.#link.report(err);
        }
      }
      return;
    }
    const results = [];
    for (const e of entries) {
      if (!e.active) continue;
      try {
        const r = e.handler(m.payload);
        results.push(
          isThenable(r)
            ? Promise.resolve(r).then(
                (value) => ({ value }),
                (error) => ({ error }),
              )
            : { value: r },
        );
      } catch (error) {
        results.push({ error });
      }
    }
    this.#answer(m.requestId, results);
  }

  /**
   * Sends the answer as soon as it is decided; the results after it are still awaited, only
   * to report their errors.
   */
  async #answer(requestId, results) {
    let answered = false;
    for (const r of results) {
      const outcome = isThenable(r) ? await r : r;
      if (answered) {
        if ("error" in outcome) this.#link.report(outcome.error);
        continue;
      }
      if ("error" in outcome) {
        answered = true;
        this.#reply(requestId, { error: errorText(outcome.error) });
      } else if (outcome.value !== undefined) {
        answered = true;
        this.#reply(requestId, { value: outcome.value });
      }
    }
    if (!answered) this.#reply(requestId, { value: null });
  }

  #reply(requestId, answer) {
    if (this.#closed) return;
    // Remembered first: a repeat of this request is answered with exactly this.
    if (this.#handled.has(requestId)) this.#handled.set(requestId, answer);
    try {
      this.#send(this.#answerMessage(requestId, answer));
    } catch (err) {
      // The value could not be encoded (a BigInt, a cycle): answer with why.
      this.#link.report(err);
      const error = { error: `Reply could not be sent: ${errorText(err)}` };
      if (this.#handled.has(requestId)) this.#handled.set(requestId, error);
      this.#send(this.#answerMessage(requestId, error));
    }
  }
}

function isAbortSignal(value) {
  return (
    value !== null &&
    typeof value === "object" &&
    typeof value.aborted === "boolean" &&
    typeof value.addEventListener === "function" &&
    typeof value.removeEventListener === "function"
  );
}

/** What a request aborted by `signal` rejects with. */
function abortReason(signal) {
  if (signal.reason !== undefined) return signal.reason;
  const err = new Error("The operation was aborted");
  err.name = "AbortError";
  return err;
}
