// A light channel-protocol client on a hand-made WebSocket (TcpWs of server.mjs): no
// socket.io-client, so that a test can run a thousand of them in one process, stop reading
// (pause the TCP socket: a slow consumer), or cut the connection at any byte. It speaks the
// same envelopes as ChannelTestClient (lib/channels.mjs) as `42["message",{...}]` packets on
// the main namespace, and keeps, for every received packet, whether the server's close frame
// had already arrived (nothing may follow it).
//
//   const w = await WireClient.connect(srv);
//   const { channel } = await w.attachEcho();
//   const res = await w.request(channel, 'echo', { x: 1 });
//   w.pause(); ... w.resume();
//
// Also: small process helpers (RSS of the server), raw TCP one-shots for handshake chaos, and
// a counter-checking helper for the /echo fixture's `stats`.
//
// Nothing here contacts anything but 127.0.0.1.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { TcpWs, OP, eioPath, withTimeout, sleep } from './server.mjs';

export const HEX_ID = /^[0-9a-f]{32}$/;
export const randomId = (prefix = '') => prefix + crypto.randomBytes(8).toString('hex');

const wires = new Set();

/** Destroys every WireClient still open (for `after` hooks). */
export function closeWires() {
  for (const w of wires) w.destroy();
  wires.clear();
}

export class WireClient extends TcpWs {
  /**
   * Opens the WebSocket (hand-made upgrade), waits for the Engine.IO open packet, sends the
   * Socket.IO CONNECT for "/" and waits for its reply.
   */
  static async connect(server, { path: p = eioPath(), timeoutMs = 10000, autoPong = true, closeReply = true } = {}) {
    const c = new WireClient(server, p, autoPong);
    c.closeReply = closeReply;
    wires.add(c);
    c.ended_.then(() => wires.delete(c));
    await c._handshake(timeoutMs);
    await c.engineAndConnect(timeoutMs);
    return c;
  }

  constructor(server, p, autoPong) {
    super(server, p, autoPong);
    /** Every `message` envelope received, in order. */
    this.log = [];
    /** Other Socket.IO events: [{ event, args }]. */
    this.otherEvents = [];
    /** Frames of the server that came after its close frame (must stay empty). */
    this.afterClose = [];
    /** The server's close frame { code, reason } once received. */
    this.closeFrame = null;
    this.seen = 0;
    /** `${channel}\0${event}` -> handler(payload, msg) -> {payload}|{error}|undefined. */
    this.answerers = new Map();
    /** Answer the server's close frame with a close frame (as a browser does). */
    this.closeReply = true;
  }

  _notify() {
    for (; this.seen < this.frames.length; this.seen++) {
      const f = this.frames[this.seen];
      if (this.closeFrame) {
        this.afterClose.push(f);
        continue;
      }
      if (f.opcode === OP.CLOSE) {
        this.closeFrame = { code: f.payload.length >= 2 ? f.payload.readUInt16BE(0) : null, reason: f.payload.subarray(2).toString('utf8'), at: performance.now() };
        if (this.closeReply && !this.sock.destroyed) {
          this.sendFrame({ opcode: OP.CLOSE, payload: f.payload.subarray(0, 2) });
          this.sock.end();
        }
        continue;
      }
      if (f.opcode !== OP.TEXT || !f.text.startsWith('42[')) continue;
      let arr;
      try {
        arr = JSON.parse(f.text.slice(2));
      } catch {
        continue;
      }
      if (arr[0] === 'message') {
        const msg = arr.length === 2 ? arr[1] : { __args: arr.slice(1) };
        msg.__at = performance.now();
        this.log.push(msg);
        this._answer(msg);
      } else {
        this.otherEvents.push({ event: arr[0], args: arr.slice(1) });
      }
    }
    super._notify();
  }

  _answer(msg) {
    if (!msg || msg.type !== 'channel_message' || typeof msg.requestId !== 'string') return;
    const h = this.answerers.get(`${msg.channel}\0${msg.event}`) || this.answerers.get(`${msg.channel}\0*`);
    if (!h) return;
    const r = h(msg.payload, msg);
    if (!r) return;
    const env = { type: 'channel_message', channel: msg.channel, responseTo: msg.requestId };
    if ('error' in r) env.error = r.error;
    else env.payload = r.payload ?? null;
    this.send(env);
  }

  /** Sends one `message` packet carrying `obj`. */
  send(obj) {
    if (this.ended || this.sock.destroyed || this.closeFrame) return;
    this.sendText(`42${JSON.stringify(['message', obj])}`);
  }

  mark() {
    return this.log.length;
  }

  /** Resolves with the first logged message (index >= from) matching pred. */
  waitFor(pred, { from = 0, ms = 10000, what = 'matching message' } = {}) {
    let idx = from;
    return withTimeout(
      new Promise((resolve, reject) => {
        const check = () => {
          for (; idx < this.log.length; idx++) {
            if (pred(this.log[idx])) {
              this.waiters.delete(check);
              resolve(this.log[idx]);
              return;
            }
          }
          if (this.ended) {
            this.waiters.delete(check);
            reject(new Error(`connection closed before ${what}`));
          }
        };
        this.waiters.add(check);
        check();
      }),
      ms,
      what,
    );
  }

  async attach(path = '/echo', props, { attachId = randomId('a-'), ms = 10000 } = {}) {
    const from = this.mark();
    const msg = { type: 'attach', path, attachId };
    if (props !== undefined) msg.props = props;
    this.send(msg);
    return this.waitFor((m) => (m.type === 'attach_ack' || m.type === 'attach_error') && m.attachId === attachId, {
      from,
      ms,
      what: `attach reply for ${attachId}`,
    });
  }

  async attachEcho(props) {
    const ack = await this.attach('/echo', props);
    assert.equal(ack.type, 'attach_ack', `attach /echo failed: ${JSON.stringify(ack)}`);
    assert.match(ack.props?.channelId ?? '', HEX_ID);
    return { attachId: ack.attachId, channel: ack.props.channelId };
  }

  detach(attachId) {
    this.send({ type: 'detach', attachId });
  }

  emit(channel, event, payload) {
    const env = { type: 'channel_message', channel, event };
    if (payload !== undefined) env.payload = payload;
    this.send(env);
  }

  /** Sends a request without waiting; returns its requestId. */
  sendRequest(channel, event, payload, requestId = randomId('r-')) {
    const env = { type: 'channel_message', channel, event, requestId };
    if (payload !== undefined) env.payload = payload;
    this.send(env);
    return requestId;
  }

  /** Sends a request; resolves with the response envelope. */
  async request(channel, event, payload, { ms = 10000 } = {}) {
    const from = this.mark();
    const requestId = this.sendRequest(channel, event, payload);
    return this.waitFor((m) => m.type === 'channel_message' && m.responseTo === requestId, {
      from,
      ms,
      what: `response to ${event} (${requestId})`,
    });
  }

  /** Every response envelope received for `requestId`. */
  responsesTo(requestId) {
    return this.log.filter((m) => m.type === 'channel_message' && m.responseTo === requestId);
  }

  answer(channel, event, handler) {
    this.answerers.set(`${channel}\0${event}`, handler);
  }

  async stats(channel) {
    const res = await this.request(channel, 'stats', null);
    assert.equal(res.error, undefined, `stats failed: ${JSON.stringify(res)}`);
    return res.payload;
  }

  /** Stops reading from the socket: the kernel buffers fill, then the server's queue grows. */
  pause() {
    this.sock.pause();
  }

  resume() {
    this.sock.resume();
  }
}

/* ------------------------------------------------------------------------------------------ */
/* raw TCP one-shots                                                                           */
/* ------------------------------------------------------------------------------------------ */

/**
 * A connected TCP socket to the server: errors swallowed, `data` accumulates what arrived,
 * `closeP` resolves with the performance.now() of the close.
 */
export function tcpConnect(server, ms = 10000) {
  return withTimeout(
    new Promise((resolve, reject) => {
      const s = net.connect({ host: server.host, port: server.port });
      s.setNoDelay(true);
      s.data = Buffer.alloc(0);
      s.on('data', (d) => (s.data = Buffer.concat([s.data, d])));
      s.closeP = new Promise((r) => s.once('close', () => r(performance.now())));
      s.once('connect', () => {
        s.removeListener('error', reject);
        s.on('error', () => {});
        resolve(s);
      });
      s.once('error', reject);
    }),
    ms,
    'TCP connect',
  );
}

/** The request head of a WebSocket upgrade to the Engine.IO endpoint. */
export function upgradeRequest(server, { path: p = eioPath(), origin, key = crypto.randomBytes(16).toString('base64') } = {}) {
  return (
    `GET ${p} HTTP/1.1\r\nHost: ${server.host}:${server.port}\r\n` +
    'Upgrade: websocket\r\nConnection: Upgrade\r\n' +
    `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
    (origin ? `Origin: ${origin}\r\n` : '') +
    '\r\n'
  );
}

/* ------------------------------------------------------------------------------------------ */
/* process                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/** Resident set size of `pid` in bytes (Linux /proc). */
export function rssBytes(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

/** Open file descriptors of `pid` (Linux /proc). */
export function fdCount(pid) {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/* ------------------------------------------------------------------------------------------ */
/* /echo fixture counters                                                                      */
/* ------------------------------------------------------------------------------------------ */

/**
 * The end-of-test invariants of the /echo fixture, read through a monitor whose own view is
 * the only one left: every request callback ran exactly once (asks.twice 0, every started ask
 * completed) and every view ever attached except the monitor's was disposed exactly once.
 */
export function assertEchoInvariants(st, { viewsAttached, monitorViews = 1, what = '' } = {}) {
  const a = st.asks;
  assert.equal(a.twice, 0, `${what}: an ask completion ran twice: ${JSON.stringify(st)}`);
  assert.equal(a.started, a.ok + a.timeout + a.closed + a.error, `${what}: asks started != completed: ${JSON.stringify(a)}`);
  assert.equal(st.views, monitorViews, `${what}: views still attached: ${JSON.stringify(st)}`);
  if (viewsAttached !== undefined) {
    assert.equal(st.views_disposed, viewsAttached, `${what}: views_disposed ${st.views_disposed} != views attached ${viewsAttached}`);
  }
}

export { sleep, withTimeout };
