// A view: one attach of a server route (DESIGN §4.2) seen from the browser. It remembers the
// path and the props it was attached with so that the client can attach it again after a
// reconnect, keeps the latest props the server sent, and tells its subscribers when they
// change. The client (client.js) owns every view and routes attach_ack, attach_error and
// view_props to it.

import { AttachError } from "./errors.js";

/**
 * An attached view. Get one from `client.attach(path, props)`; never construct it yourself.
 *
 * After a reconnect the client attaches the view again with the same `attachId`, path and
 * props; the server answers with fresh props (and fresh channel ids), which `onProps`
 * subscribers receive. `state` is "attaching" until the server acknowledges (again after every
 * reconnect), "attached" afterwards, "failed" when a re-attach was refused (it is tried again
 * on the next reconnect), and "detached" for good after `detach()` or `client.close()`.
 */
export class View {
  #link;
  #path;
  #attachId;
  #attachProps;
  #props = undefined;
  #state = "attaching";
  #sent = false;
  /** @type {{resolve: Function, reject: Function} | null} */
  #waiter;
  /** @type {Set<Function>} */
  #propsCallbacks = new Set();
  /** @type {Set<Function>} */
  #errorCallbacks = new Set();

  /**
   * @param {{ send(msg: object): boolean, removed(view: View): void,
   *           report(err: unknown): void }} link
   * @param {string} path
   * @param {unknown} attachProps
   * @param {string} attachId
   * @param {{resolve: Function, reject: Function}} waiter settles the attach() promise
   * @internal
   */
  constructor(link, path, attachProps, attachId, waiter) {
    this.#link = link;
    this.#path = path;
    this.#attachProps = attachProps === undefined ? null : attachProps;
    this.#attachId = attachId;
    this.#waiter = waiter;
  }

  /** The id this client made for the attach; the same across reconnects. */
  get attachId() {
    return this.#attachId;
  }

  /** The route path. */
  get path() {
    return this.#path;
  }

  /** The latest props the server sent. */
  get props() {
    return this.#props;
  }

  /** "attaching" | "attached" | "failed" | "detached" */
  get state() {
    return this.#state;
  }

  /**
   * Calls `cb(props, view)` whenever the server sends new props: `view_props`, and the answer
   * to a re-attach after a reconnect.
   * @param {(props: any, view: View) => void} cb
   * @returns {() => void} unsubscribes
   */
  onProps(cb) {
    if (typeof cb !== "function") throw new TypeError("callback must be a function");
    const entry = (props) => cb(props, this);
    this.#propsCallbacks.add(entry);
    return () => this.#propsCallbacks.delete(entry);
  }

  /**
   * Calls `cb(error)` when a re-attach after a reconnect is refused by the server.
   * @param {(error: AttachError) => void} cb
   * @returns {() => void} unsubscribes
   */
  onError(cb) {
    if (typeof cb !== "function") throw new TypeError("callback must be a function");
    const entry = (err) => cb(err);
    this.#errorCallbacks.add(entry);
    return () => this.#errorCallbacks.delete(entry);
  }

  /**
   * Detaches the view: the server disposes it (and closes its channels). Idempotent.
   */
  detach() {
    if (this.#state === "detached") return;
    const wasSent = this.#sent;
    this._end(new AttachError("View detached", { path: this.#path, attachId: this.#attachId, code: "ECLOSED" }));
    if (wasSent) this.#link.send({ type: "detach", attachId: this.#attachId });
  }

  // ---- called by the client --------------------------------------------------------------

  /** Sends the attach message (first time, or again after a reconnect). @internal */
  _sendAttach() {
    if (this.#state === "detached") return;
    this.#state = "attaching";
    this.#sent = this.#link.send({
      type: "attach",
      path: this.#path,
      attachId: this.#attachId,
      props: this.#attachProps,
    });
  }

  /** The connection dropped; the server has disposed the view. @internal */
  _connectionLost() {
    if (this.#state === "detached") return;
    this.#state = "attaching";
    this.#sent = false;
  }

  /** @internal */
  _ack(props) {
    if (this.#state === "detached") return;
    this.#state = "attached";
    this.#props = props === undefined ? null : props;
    const waiter = this.#waiter;
    if (waiter) {
      this.#waiter = null;
      waiter.resolve(this);
      return;
    }
    this.#notify(this.#propsCallbacks, this.#props);
  }

  /** @internal */
  _props(props) {
    if (this.#state === "detached") return;
    this.#props = props === undefined ? null : props;
    if (this.#waiter) return; // attach() resolves with the latest props
    this.#notify(this.#propsCallbacks, this.#props);
  }

  /** @internal */
  _fail(text) {
    if (this.#state === "detached") return;
    this.#sent = false;
    const err = new AttachError(text, { path: this.#path, attachId: this.#attachId });
    if (this.#waiter) {
      this._end(err);
      return;
    }
    this.#state = "failed";
    this.#notify(this.#errorCallbacks, err);
  }

  /**
   * Ends the view for good: rejects a pending attach() with `err` and unregisters it.
   * @internal
   */
  _end(err) {
    if (this.#state === "detached") return;
    this.#state = "detached";
    this.#sent = false;
    this.#propsCallbacks.clear();
    this.#errorCallbacks.clear();
    this.#link.removed(this);
    const waiter = this.#waiter;
    this.#waiter = null;
    if (waiter) waiter.reject(err);
  }

  #notify(callbacks, value) {
    for (const cb of [...callbacks]) {
      if (!callbacks.has(cb)) continue;
      try {
        cb(value);
      } catch (err) {
        this.#link.report(err);
      }
    }
  }
}
