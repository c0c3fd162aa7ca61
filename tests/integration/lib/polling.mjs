// Helpers for the Engine.IO long-polling suites (polling*.test.mjs, issue 8): byte-exact
// HTTP requests on raw TCP connections (HttpConn of server.mjs), one polling session per
// `Polling` object, and small assertions on the §2.1 error responses.
//
// Every request goes on its own TCP connection (as with an HTTP agent without keep-alive)
// unless a `conn` is given; the connection is destroyed once its response was read, except
// for a held GET whose connection the caller may want to abort (`startGet`).
//
// Nothing here contacts anything but 127.0.0.1.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { HttpConn, HOST, sleep } from './server.mjs';

export const SEP = '\x1e';

/** The client's cache buster (`t=`): a few random base36 characters. */
export const tparam = () => crypto.randomBytes(6).readUIntBE(0, 6).toString(36);

const conns = new Set();

/** Destroys every connection the helpers still hold (for `after` hooks). */
export function closePollConns() {
  for (const c of conns) c.destroy();
  conns.clear();
}

/** A fresh TCP connection to `srv` for raw HTTP (tracked for closePollConns). */
export function openConn(srv) {
  const c = new HttpConn(srv);
  conns.add(c);
  c.endedP.then(() => conns.delete(c));
  return c;
}

/** Builds one HTTP/1.1 request (Host, Content-Length when there is a body, extra headers). */
export function rawRequest(method, target, { headers = {}, body, close = false } = {}) {
  let h = `${method} ${target} HTTP/1.1\r\nHost: ${HOST}\r\n`;
  for (const [k, v] of Object.entries(headers)) h += `${k}: ${v}\r\n`;
  if (body !== undefined) h += `Content-Length: ${Buffer.byteLength(body)}\r\n`;
  if (close) h += 'Connection: close\r\n';
  return Buffer.concat([Buffer.from(h + '\r\n', 'latin1'), Buffer.from(body ?? '', 'utf8')]);
}

/**
 * Sends one request and returns { conn, res, sentAt, written } without waiting (`written`
 * resolves once the bytes were handed to the kernel): `res` resolves with
 * the parsed response ({ status, headers, text, body, packets, at }) where `at` is the
 * performance.now() of its arrival. The connection is destroyed after the response unless
 * `keep` (or a caller-supplied `conn`).
 */
export function startRequest(srv, method, target, { headers = {}, body, conn, keep = false, ms = 5000, head } = {}) {
  const c = conn || openConn(srv);
  const bytes = rawRequest(method, target, { headers, body });
  const written = c.write(bytes);
  const sentAt = performance.now();
  const res = c.readResponse({ ms, head }).then((r) => {
    r.at = performance.now();
    r.packets = r.text.split(SEP);
    r.conn = c;
    if (!conn && !keep) c.destroy();
    return r;
  });
  res.catch(() => {});
  return { conn: c, res, sentAt, written };
}

/** One request; resolves with its response. */
export function send(srv, method, target, opts = {}) {
  return startRequest(srv, method, target, opts).res;
}

/** Query string of an Engine.IO request (the client's key order: EIO, transport, t, sid). */
export function eioTarget({ path = '/socket.io/', transport = 'polling', sid, eio = '4', t = true } = {}) {
  let q = `${path}?EIO=${eio}&transport=${transport}`;
  if (t) q += `&t=${tparam()}`;
  if (sid) q += `&sid=${encodeURIComponent(sid)}`;
  return q;
}

/** The client's POST content type. */
export const TEXT_PLAIN = 'text/plain;charset=UTF-8';

/** The exact open packet of a polling session (sid aside). */
export const OPEN_RE = /^0\{"sid":"([A-Za-z0-9_-]{16,64})","upgrades":\["websocket"\],"pingInterval":(\d+),"pingTimeout":(\d+),"maxPayload":(\d+)\}$/;

/** Asserts `r` is the §2.1 JSON error with this status, code and message. */
export function assertEioError(r, status, code, message, what = '') {
  assert.equal(r.status, status, `${what}: expected ${status} {"code":${code}}, got ${r.status} ${JSON.stringify(r.text)}`);
  assert.match(r.headers['content-type'] || '', /^application\/json\b/, `${what}: content-type`);
  const body = JSON.parse(r.text);
  assert.deepEqual(body, message === undefined ? { code, message: body.message } : { code, message }, `${what}: body ${r.text}`);
  assert.equal(typeof body.message, 'string');
}

export const MESSAGES = {
  0: 'Transport unknown',
  1: 'Session ID unknown',
  2: 'Bad handshake method',
  3: 'Bad request',
  4: 'Forbidden',
  5: 'Unsupported protocol version',
};

/**
 * One Engine.IO long-polling session driven by hand.
 *   const p = new Polling(srv); await p.handshake(); await p.post('40'); await p.get();
 */
export class Polling {
  constructor(srv, { path = '/socket.io/', headers = {} } = {}) {
    this.srv = srv;
    this.path = path;
    this.headers = headers;
    this.sid = null;
    this.open = null;
  }

  target(sid = this.sid) {
    return eioTarget({ path: this.path, sid });
  }

  /** GET without sid; asserts the exact open packet; sets sid/open/openedAt. */
  async handshake({ conn } = {}) {
    const r = await send(this.srv, 'GET', this.target(null), { headers: this.headers, conn });
    assert.equal(r.status, 200, `handshake: ${r.status} ${r.text}`);
    const m = OPEN_RE.exec(r.text);
    assert.ok(m, `handshake body is not the exact open packet: ${JSON.stringify(r.text)}`);
    this.open = JSON.parse(r.text.slice(1));
    this.sid = this.open.sid;
    this.openedAt = r.at;
    this.handshakeResponse = r;
    return this.open;
  }

  /** Starts a GET (possibly held); returns { conn, res, sentAt }. */
  startGet({ ms = 5000, conn, keep, headers } = {}) {
    return startRequest(this.srv, 'GET', this.target(), { headers: { ...this.headers, ...headers }, ms, conn, keep });
  }

  get(opts = {}) {
    return this.startGet(opts).res;
  }

  /** A GET that must succeed; resolves with its body packets. */
  async poll(opts = {}) {
    const r = await this.get(opts);
    assert.equal(r.status, 200, `GET sid=${this.sid}: ${r.status} ${r.text}`);
    assert.equal(r.headers['content-type'], 'text/plain; charset=UTF-8');
    return r.packets;
  }

  startPost(body, { contentType = TEXT_PLAIN, headers = {}, ms = 5000, conn } = {}) {
    const h = { ...this.headers, ...headers };
    if (contentType !== null) h['Content-Type'] = contentType;
    return startRequest(this.srv, 'POST', this.target(), { headers: h, body, ms, conn });
  }

  post(body, opts = {}) {
    return this.startPost(body, opts).res;
  }

  /** A POST that must be accepted (200 "ok", text/html). */
  async postOk(body, opts = {}) {
    const r = await this.post(body, opts);
    assert.equal(r.status, 200, `POST ${JSON.stringify(body).slice(0, 200)}: ${r.status} ${r.text}`);
    assert.equal(r.text, 'ok');
    assert.equal(r.headers['content-type'], 'text/html');
    return r;
  }

  /** Keeps polling until `count` packets accumulated (ignoring pings unless keepPings); returns them. */
  async collect(count, { keepPings = false, ms = 5000 } = {}) {
    const out = [];
    const deadline = performance.now() + ms;
    while (out.length < count) {
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`collected only ${JSON.stringify(out)} of ${count} packets`);
      const r = await this.get({ ms: left });
      assert.equal(r.status, 200, `GET while collecting: ${r.status} ${r.text}`);
      for (const p of r.packets) {
        if (p === '2' && !keepPings) {
          await this.postOk('3');
          continue;
        }
        out.push(p);
      }
    }
    return out;
  }

  /** Socket.IO CONNECT to "/" (or nsp) over polling; returns the CONNECT reply JSON. */
  async connectSio(nsp = '/', auth) {
    const prefix = nsp === '/' ? '' : `${nsp},`;
    await this.postOk(`40${prefix}${auth === undefined ? '' : JSON.stringify(auth)}`);
    const [reply] = await this.collect(1);
    assert.ok(reply.startsWith(`40${prefix}{`), `CONNECT reply: ${reply}`);
    return JSON.parse(reply.slice(2 + prefix.length));
  }

  /** Asserts a request with this sid now gets 400 {"code":1}. */
  async assertGone(what = 'session', method = 'GET') {
    const r = method === 'GET' ? await this.get() : await this.post('42["gone?"]');
    assertEioError(r, 400, 1, MESSAGES[1], `${what} ${method} after close`);
  }

  /** Sleeps until `ms` after the handshake response arrived. */
  async untilSinceOpen(ms) {
    const left = this.openedAt + ms - performance.now();
    if (left > 0) await sleep(left);
  }
}

/** Base64 of a byte array as the `b…` polling packet. */
export const b64packet = (bytes) => `b${Buffer.from(bytes).toString('base64')}`;

/** A placeholder object. */
export const ph = (num) => ({ _placeholder: true, num });
