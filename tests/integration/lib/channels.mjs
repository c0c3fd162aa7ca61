// Test-only client for pulsec's view and channel protocol (DESIGN.md §3), on top of the
// official socket.io-client. It sends the exact envelopes as `socket.emit("message", obj)`
// and records every `message` the server sends, so that tests can wait for (or assert the
// absence of) specific envelopes. It deliberately does not use clients/js (pulsec-client),
// which is tested on its own.
//
//   const c = await ChannelTestClient.connect(srv.url);
//   const ack = await c.attach('/echo');              // attach_ack or attach_error message
//   const ch = ack.props.channelId;
//   const res = await c.request(ch, 'echo', { x: 1 }); // the response envelope
//   c.answer(ch, 'question', (payload) => ({ payload: 42 })); // answer server requests
//   await c.stats(ch);                                 // the /echo fixture's `stats` request
//
// Nothing here contacts anything but the server under test (127.0.0.1).

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { makeClient, waitConnect, withTimeout, sleep } from './server.mjs';

export const HEX_ID = /^[0-9a-f]{32}$/;

export function randomId(prefix = '') {
  return prefix + crypto.randomBytes(8).toString('hex');
}

/** A channel_message envelope (fields with value undefined are left out). */
export function envelope(fields) {
  const out = { type: 'channel_message' };
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) out[k] = v;
  return out;
}

export class ChannelTestClient {
  /** Connects a socket.io-client (WebSocket only, no reconnection) and wraps it. */
  static async connect(url, extra = {}) {
    const socket = makeClient(url, extra);
    const c = new ChannelTestClient(socket);
    await waitConnect(socket);
    return c;
  }

  constructor(socket) {
    this.socket = socket;
    /** Every `message` argument received, in order. */
    this.log = [];
    /** Other Socket.IO events received: [{ event, args }]. */
    this.otherEvents = [];
    this.waiters = new Set();
    /** `${channel}\0${event}` -> handler(payload, msg) returning {payload}|{error}|undefined (no answer). */
    this.answerers = new Map();
    this.disconnectInfo = null;
    socket.on('message', (...args) => {
      const msg = args.length === 1 ? args[0] : { __args: args };
      this.log.push(msg);
      this._answer(msg);
      this._notify();
    });
    socket.onAny((event, ...args) => {
      if (event !== 'message') this.otherEvents.push({ event, args });
    });
    socket.on('disconnect', (reason, details) => {
      this.disconnectInfo = { reason, details };
      this._notify();
    });
  }

  get connected() {
    return this.socket.connected;
  }

  _notify() {
    for (const w of [...this.waiters]) w();
  }

  _answer(msg) {
    if (!msg || msg.type !== 'channel_message' || typeof msg.requestId !== 'string') return;
    const h = this.answerers.get(`${msg.channel}\0${msg.event}`) || this.answerers.get(`${msg.channel}\0*`);
    if (!h) return;
    const result = h(msg.payload, msg);
    if (!result) return;
    if ('error' in result) {
      this.send(envelope({ channel: msg.channel, responseTo: msg.requestId, error: result.error }));
    } else {
      this.send(envelope({ channel: msg.channel, responseTo: msg.requestId, payload: result.payload ?? null }));
    }
  }

  /** Emits one `message` with `obj` as its single argument. */
  send(obj) {
    this.socket.emit('message', obj);
  }

  /** Emits `message` with arbitrary arguments (zero, several, non-objects). */
  sendArgs(...args) {
    this.socket.emit('message', ...args);
  }

  /**
   * Sends a raw Socket.IO packet (e.g. `2["message",{...}]`) as one Engine.IO message on this
   * client's connection, bypassing socket.io-client's encoder (for payloads JSON.stringify
   * would choke on, or exact bytes).
   */
  sendRawPacket(text) {
    this.socket.io.engine.write(text);
  }

  /** The log index the next received message will have (use as `from`). */
  mark() {
    return this.log.length;
  }

  /** Resolves with the first logged message (index >= from) matching pred. */
  waitFor(pred, { from = 0, ms = 5000, what = 'matching message' } = {}) {
    return new Promise((resolve, reject) => {
      let timer = null;
      const done = () => {
        this.waiters.delete(check);
        clearTimeout(timer);
      };
      const check = () => {
        for (let i = from; i < this.log.length; i++) {
          if (pred(this.log[i])) {
            done();
            resolve(this.log[i]);
            return;
          }
        }
        if (this.disconnectInfo) {
          done();
          reject(new Error(`disconnected (${this.disconnectInfo.reason}) before ${what}; received since #${from}: ${this.describe(from)}`));
        }
      };
      timer = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${ms} ms waiting for ${what}; received since #${from}: ${this.describe(from)}`));
      }, ms);
      this.waiters.add(check);
      check();
    });
  }

  /** Waits `ms` and asserts no message (index >= from) matched pred. */
  async expectNone(pred, { from = 0, ms = 300, what = 'message' } = {}) {
    await sleep(ms);
    const hits = this.log.slice(from).filter(pred);
    assert.equal(hits.length, 0, `expected no ${what}, got ${JSON.stringify(hits).slice(0, 1000)}`);
  }

  describe(from = 0) {
    return JSON.stringify(this.log.slice(from)).slice(0, 1500);
  }

  /** Sends attach; resolves with the attach_ack or attach_error for that attachId. */
  async attach(path = '/echo', props, { attachId = randomId('a-'), ms = 5000 } = {}) {
    const from = this.mark();
    const msg = { type: 'attach', path, attachId };
    if (props !== undefined) msg.props = props;
    this.send(msg);
    const reply = await this.waitFor(
      (m) => m && (m.type === 'attach_ack' || m.type === 'attach_error') && m.attachId === attachId,
      { from, ms, what: `attach reply for ${attachId}` },
    );
    reply.attachIdSent = attachId;
    return reply;
  }

  /** Attaches /echo and asserts the ack; resolves with { attachId, channel }. */
  async attachEcho(props) {
    const ack = await this.attach('/echo', props);
    assert.equal(ack.type, 'attach_ack', `attach /echo failed: ${JSON.stringify(ack)}`);
    assert.match(ack.props?.channelId ?? '', HEX_ID, `channelId in ${JSON.stringify(ack)}`);
    return { attachId: ack.attachId, channel: ack.props.channelId };
  }

  detach(attachId) {
    this.send({ type: 'detach', attachId });
  }

  emit(channel, event, payload) {
    this.send(envelope({ channel, event, payload }));
  }

  /** Sends a request; resolves with the response envelope (responseTo === requestId). */
  async request(channel, event, payload, { requestId = randomId('r-'), ms = 5000, extra = {} } = {}) {
    const from = this.mark();
    this.send(envelope({ channel, event, payload, requestId, ...extra }));
    return this.waitFor(
      (m) => m && m.type === 'channel_message' && m.responseTo === requestId && m.channel === channel,
      { from, ms, what: `response to ${event} (${requestId}) on ${channel}` },
    );
  }

  /** Waits for an event envelope `event` on `channel` (index >= from). */
  waitEvent(channel, event, { from = 0, ms = 5000 } = {}) {
    return this.waitFor(
      (m) => m && m.type === 'channel_message' && m.channel === channel && m.event === event && m.responseTo === undefined,
      { from, ms, what: `event ${event} on ${channel}` },
    );
  }

  /** Registers how to answer server requests for `event` ("*": any) on `channel`. */
  answer(channel, event, handler) {
    this.answerers.set(`${channel}\0${event}`, handler);
    return () => this.answerers.delete(`${channel}\0${event}`);
  }

  /** The /echo fixture's `stats` request on `channel`; resolves with the counters. */
  async stats(channel) {
    const res = await this.request(channel, 'stats', null);
    assert.equal(res.error, undefined, `stats request failed: ${JSON.stringify(res)}`);
    return res.payload;
  }

  /** An echo request round trip that must succeed (the "connection still works" check). */
  async assertEchoes(channel, tag = 'still-alive') {
    const nonce = { tag, n: crypto.randomBytes(4).toString('hex') };
    const res = await this.request(channel, 'echo', nonce);
    assert.deepEqual(res.payload, nonce, `echo round trip on ${channel}: ${JSON.stringify(res)}`);
    assert.equal(res.error, undefined);
  }

  /** Waits until the socket is disconnected. */
  waitDisconnect(ms = 5000) {
    return withTimeout(
      new Promise((resolve) => {
        const check = () => {
          if (this.disconnectInfo) {
            this.waiters.delete(check);
            resolve(this.disconnectInfo);
          }
        };
        this.waiters.add(check);
        check();
      }),
      ms,
      'disconnect',
    );
  }

  disconnect() {
    this.socket.disconnect();
  }
}

/**
 * A monitor: a separate connection with its own /echo view, used to read the server's and the
 * fixture's counters (stats) without depending on a client under test. Its own view and
 * channel count in stats.views / stats.channels (1 each) and stats.sessions (1).
 */
export async function openMonitor(url) {
  const c = await ChannelTestClient.connect(url);
  const { channel, attachId } = await c.attachEcho();
  return {
    client: c,
    channel,
    attachId,
    stats: () => c.stats(channel),
    close: () => c.disconnect(),
  };
}

/** Polls `fn` (async) until `pred(value)` holds; returns the last value (assert on it after). */
export async function pollUntil(fn, pred, { ms = 5000, every = 25 } = {}) {
  const deadline = Date.now() + ms;
  let v = await fn();
  while (!pred(v) && Date.now() < deadline) {
    await sleep(every);
    v = await fn();
  }
  return v;
}

/**
 * Echo round trips on `channel`, one after another with `every` ms between them, until the
 * returned stop() resolves with their latencies in ms, sorted: a witness that other clients'
 * chaos does not stall a well-behaved one.
 */
export function startWitness(client, channel, { ms = 5000, every = 10 } = {}) {
  let stopped = false;
  const lat = [];
  const done = (async () => {
    for (let n = 0; !stopped; n++) {
      const t = performance.now();
      const res = await client.request(channel, 'echo', { n }, { ms });
      assert.deepEqual(res.payload, { n });
      lat.push(performance.now() - t);
      await sleep(every);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await done;
      return lat.sort((a, b) => a - b);
    },
  };
}
