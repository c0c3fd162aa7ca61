// Harness for the integration suites: start the echo server under test, and talk to it
// with the official socket.io-client, with raw WebSocket frames (the `ws` package, or
// hand-made frames on a TCP socket) and with raw HTTP bytes.
//
// The server binary is $PULSEC_BUILD_DIR/examples/echo (default: <repo>/build). The
// integration run uses the AddressSanitizer build, where LeakSanitizer turns a leak into a
// non-zero exit code; so every suite stops its servers with SIGTERM and asserts exit 0,
// printing the sanitizer report from stderr when that fails.
//
// Nothing here contacts anything but 127.0.0.1.

import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { io, Manager } from 'socket.io-client';

export { io, Manager, WebSocket };

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const BUILD_DIR = process.env.PULSEC_BUILD_DIR || path.join(REPO_ROOT, 'build');
export const ECHO_BIN = path.join(BUILD_DIR, 'examples', 'echo');
export const HOST = '127.0.0.1';

/* ------------------------------------------------------------------------------------------ */
/* small utilities                                                                             */
/* ------------------------------------------------------------------------------------------ */

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Rejects with `what` after `ms` unless `promise` settles first. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolves with the arguments of the next `event` on an EventEmitter-like object. */
export function once(emitter, event, ms = 5000) {
  return withTimeout(
    new Promise((resolve) => emitter.once(event, (...args) => resolve(args))),
    ms,
    `event "${event}"`,
  );
}

/* ------------------------------------------------------------------------------------------ */
/* server processes                                                                            */
/* ------------------------------------------------------------------------------------------ */

const running = new Set();

process.on('exit', () => {
  for (const s of running) {
    try {
      s.proc.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

/**
 * Starts the echo server on 127.0.0.1 (or opts.hostArg) with a free port (`--port 0`) plus `args`, and
 * resolves once it printed `listening on http://HOST:PORT`.
 *
 * Returns { url, host, port, proc, stdout(), stderr(), exited, stop(signal) } where
 * stop() sends the signal (SIGTERM by default) and resolves with
 * { code, signal, stderr, stdout } once the process exited (SIGKILL after opts.stopTimeoutMs).
 *
 * Connection state recovery is on by default in the server, but off here unless the test asks
 * for it (`--resume-window MS` in args, or opts.recovery): the suites written before it check
 * the wire without offsets and pids, and sessions that end when their client vanishes. The
 * resume*.test.mjs suites turn it on.
 */
export async function startServer(args = [], opts = {}) {
  const bin = opts.bin || ECHO_BIN;
  if (!fs.existsSync(bin)) {
    throw new Error(`server binary ${bin} not found: build it (make build-asan) and set PULSEC_BUILD_DIR`);
  }
  // PULSEC_TEST_ALLOCATOR=1 (make test-integration-allocator): the echo fixture allocates
  // through ps_set_allocator with checked headers (--custom-allocator).
  const alloc = !opts.bin && process.env.PULSEC_TEST_ALLOCATOR === '1' ? ['--custom-allocator'] : [];
  const recovery = opts.recovery || args.includes('--resume-window');
  const fullArgs = ['--host', opts.hostArg || HOST, '--port', '0', ...alloc,
    ...(recovery ? [] : ['--resume-window', '0']), ...args];
  const env = { ...process.env, ...(opts.env || {}) };
  // Keep LeakSanitizer on (it is the default on Linux; be explicit) without overriding a caller's choice.
  if (!env.ASAN_OPTIONS) env.ASAN_OPTIONS = 'detect_leaks=1';
  if (!env.UBSAN_OPTIONS) env.UBSAN_OPTIONS = 'print_stacktrace=1';
  const proc = spawn(bin, fullArgs, { stdio: ['ignore', 'pipe', 'pipe'], env });
  let out = '';
  let err = '';
  proc.stdout.setEncoding('utf8');
  proc.stderr.setEncoding('utf8');
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (err += d));

  const exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => resolve({ code, signal }));
  });
  // 'close' fires after stdio ended, so the full stderr (sanitizer report) is collected.
  const closed = new Promise((resolve) => {
    proc.on('close', (code, signal) => resolve({ code, signal }));
  });
  const spawnError = new Promise((_, reject) => proc.on('error', reject));

  const server = {
    proc,
    bin,
    args: fullArgs,
    stdout: () => out,
    stderr: () => err,
    exited,
    closed,
    url: null,
    host: null,
    port: null,
    exitResult: null,
    async stop(signal = 'SIGTERM', stopTimeoutMs = opts.stopTimeoutMs ?? 10000) {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill(signal);
      }
      let timer;
      const killed = new Promise((resolve) => {
        timer = setTimeout(() => {
          proc.kill('SIGKILL');
          resolve(true);
        }, stopTimeoutMs);
      });
      const hung = await Promise.race([closed.then(() => false), killed]);
      clearTimeout(timer);
      const { code, signal: sig } = await closed;
      running.delete(server);
      server.exitResult = { code, signal: sig, stderr: err, stdout: out, hung };
      return server.exitResult;
    },
  };
  running.add(server);

  const listening = new Promise((resolve, reject) => {
    const re = /listening on (https?):\/\/(\[[^\]]+\]|[^\s:/]+):(\d+)/;
    const check = () => {
      const m = re.exec(out);
      if (m) {
        resolve({ scheme: m[1], host: m[2], port: Number(m[3]) });
        return true;
      }
      return false;
    };
    if (!check()) proc.stdout.on('data', check);
    exited.then(({ code, signal }) =>
      reject(new Error(`server exited before listening (code ${code}, signal ${signal})\n` +
        `args: ${fullArgs.join(' ')}\nstdout:\n${out}\nstderr:\n${err}`)),
    );
  });

  try {
    const { scheme, host, port } = await withTimeout(
      Promise.race([listening, spawnError]),
      opts.startTimeoutMs ?? 10000,
      `"listening on" line from ${bin} ${fullArgs.join(' ')}`,
    );
    server.host = host;
    server.port = port;
    server.url = `${scheme}://${host}:${port}`;
  } catch (e) {
    proc.kill('SIGKILL');
    running.delete(server);
    throw e;
  }
  return server;
}

/** Asserts a stop() result is a clean exit (code 0), showing stderr (sanitizer reports) if not. */
export function assertCleanExit(result, what = 'server') {
  assert.ok(
    !result.hung && result.code === 0,
    `${what} did not exit cleanly: code ${result.code}, signal ${result.signal}` +
      `${result.hung ? ' (hung: killed with SIGKILL after the stop timeout)' : ''}\n` +
      `--- stderr ---\n${result.stderr}\n--- end stderr ---`,
  );
}

/** Stops a server with SIGTERM and asserts it exits 0. */
export async function stopClean(server, what = 'server') {
  const result = await server.stop('SIGTERM');
  assertCleanExit(result, what);
  return result;
}

/** Kills every server still running (for `after` hooks). */
export async function killAll() {
  await Promise.all(
    [...running].map(async (s) => {
      try {
        s.proc.kill('SIGKILL');
      } catch {
        /* gone */
      }
      await s.closed;
      running.delete(s);
    }),
  );
}

/* ------------------------------------------------------------------------------------------ */
/* socket.io-client                                                                            */
/* ------------------------------------------------------------------------------------------ */

const clients = new Set();

/** Options every test client uses: WebSocket only, no reconnection, its own Manager. */
export function clientOptions(extra = {}) {
  return { transports: ['websocket'], reconnection: false, forceNew: true, timeout: 10000, ...extra };
}

/** Creates a socket.io-client socket (not yet awaited) that closeClients() will clean up. */
export function makeClient(url, extra = {}) {
  const socket = io(url, clientOptions(extra));
  clients.add(socket);
  return socket;
}

/** Resolves once `socket` is connected; rejects with its connect_error. */
export function waitConnect(socket, ms = 10000) {
  if (socket.connected) return Promise.resolve(socket);
  return withTimeout(
    new Promise((resolve, reject) => {
      const onConnect = () => {
        socket.off('connect_error', onError);
        resolve(socket);
      };
      const onError = (e) => {
        socket.off('connect', onConnect);
        reject(e);
      };
      socket.once('connect', onConnect);
      socket.once('connect_error', onError);
    }),
    ms,
    `socket.io connect to ${socket.io.uri} ${socket.nsp}`,
  );
}

/** Connects a socket.io-client to `url` (which may carry a namespace) and resolves when connected. */
export async function connectClient(url, extra = {}) {
  const socket = makeClient(url, extra);
  await waitConnect(socket);
  return socket;
}

/** Resolves with the connect_error of a socket that must be refused. */
export function waitConnectError(socket, ms = 10000) {
  return withTimeout(
    new Promise((resolve, reject) => {
      socket.once('connect', () => reject(new Error(`${socket.nsp} connected but should have been refused`)));
      socket.once('connect_error', resolve);
    }),
    ms,
    `connect_error on ${socket.nsp}`,
  );
}

/** One emit-with-ack round trip; resolves with all ack arguments. */
export function ackRoundTrip(socket, event, args = [], ms = 5000) {
  return withTimeout(
    new Promise((resolve) => socket.emit(event, ...args, (...reply) => resolve(reply))),
    ms,
    `ack for "${event}" on ${socket.nsp}`,
  );
}

/** Asserts that `socket` still gets an ack round trip through the server (the "others keep working" check). */
export async function assertStillServes(socket, tag = 'still-alive') {
  assert.ok(socket.connected, 'witness client is no longer connected');
  const nonce = crypto.randomBytes(6).toString('hex');
  const reply = await ackRoundTrip(socket, tag, [nonce, { n: 1 }]);
  assert.deepEqual(reply, [nonce, { n: 1 }], 'witness client ack round trip');
}

export function closeClients() {
  for (const s of clients) s.disconnect();
  clients.clear();
}

/* ------------------------------------------------------------------------------------------ */
/* raw WebSocket with `ws`                                                                     */
/* ------------------------------------------------------------------------------------------ */

export function eioPath(sioPath = '/socket.io/', query = 'EIO=4&transport=websocket') {
  return `${sioPath}?${query}`;
}

/**
 * A `ws` WebSocket to the Engine.IO endpoint that records every frame. Text frames are
 * kept as strings, binary frames as Buffers. `autoPong` answers Engine.IO pings ("2")
 * with "3" so the server's heartbeat does not drop the connection.
 */
export class RawWs {
  constructor(server, { path: p = eioPath(), autoPong = true, headers, ...wsOpts } = {}) {
    this.url = `ws://${server.host}:${server.port}${p}`;
    this.frames = [];
    this.autoPong = autoPong;
    this.closeInfo = null;
    this.errors = [];
    this.openedAt = null;
    this.closedAt = null;
    this.waiters = new Set();
    this.ws = new WebSocket(this.url, { headers, perMessageDeflate: false, ...wsOpts });
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => {
        this.openedAt = performance.now();
        resolve();
      });
      this.ws.once('unexpected-response', (req, res) =>
        reject(new Error(`unexpected HTTP response ${res.statusCode} to the WebSocket upgrade`)),
      );
      this.ws.once('error', reject);
    });
    this.opened.catch(() => {});
    this.closed = new Promise((resolve) => {
      this.ws.once('close', (code, reason) => {
        this.closedAt = performance.now();
        this.closeInfo = { code, reason: reason.toString('utf8') };
        resolve(this.closeInfo);
        this._notify();
      });
    });
    this.ws.on('error', (e) => this.errors.push(e));
    this.ws.on('message', (data, isBinary) => {
      const frame = isBinary ? Buffer.from(data) : data.toString('utf8');
      this.frames.push(frame);
      if (this.autoPong && frame === '2') this.ws.send('3');
      this._notify();
    });
  }

  _notify() {
    for (const w of [...this.waiters]) w();
  }

  /** Text frames received so far. */
  texts() {
    return this.frames.filter((f) => typeof f === 'string');
  }

  /**
   * Resolves with the first frame (at index >= `from`) satisfying `pred`; a string `pred`
   * matches frames equal to it, a RegExp matches text frames. Rejects if the socket closes first.
   */
  waitFrame(pred, ms = 5000, from = 0) {
    const test =
      typeof pred === 'string'
        ? (f) => f === pred
        : pred instanceof RegExp
          ? (f) => typeof f === 'string' && pred.test(f)
          : pred;
    return withTimeout(
      new Promise((resolve, reject) => {
        const check = () => {
          for (let i = from; i < this.frames.length; i++) {
            if (test(this.frames[i])) {
              this.waiters.delete(check);
              resolve(this.frames[i]);
              return;
            }
          }
          if (this.closeInfo) {
            this.waiters.delete(check);
            reject(
              new Error(
                `WebSocket closed (code ${this.closeInfo.code}) before a matching frame; frames: ` +
                  JSON.stringify(this.frames.map(String)).slice(0, 2000),
              ),
            );
          }
        };
        this.waiters.add(check);
        check();
      }),
      ms,
      `frame matching ${pred} on ${this.url}; frames so far: ${JSON.stringify(this.frames.map(String)).slice(0, 2000)}`,
    );
  }

  /** Resolves with { code, reason } once the WebSocket closed. */
  waitClose(ms = 5000) {
    return withTimeout(this.closed, ms, `close of ${this.url}; frames: ${JSON.stringify(this.frames.map(String)).slice(0, 2000)}`);
  }

  /** Waits for the open packet and returns its parsed JSON. */
  async handshake(ms = 5000) {
    await withTimeout(this.opened, ms, `WebSocket open ${this.url}`);
    const open = await this.waitFrame((f) => typeof f === 'string' && f.startsWith('0'), ms);
    return JSON.parse(open.slice(1));
  }

  /** Sends a Socket.IO CONNECT for `nsp` (after the handshake) and returns the reply JSON. */
  async connectNs(nsp = '/', auth, ms = 5000) {
    const prefix = nsp === '/' ? '' : `${nsp},`;
    const from = this.frames.length;
    this.ws.send(`40${prefix}${auth === undefined ? '' : JSON.stringify(auth)}`);
    const reply = await this.waitFrame((f) => typeof f === 'string' && (f.startsWith(`40${prefix}{`) || f.startsWith(`44${prefix}`)), ms, from);
    assert.ok(reply.startsWith(`40${prefix}`), `CONNECT to ${nsp} refused: ${reply}`);
    return JSON.parse(reply.slice(2 + prefix.length));
  }

  send(data, opts) {
    this.ws.send(data, opts);
  }

  close(code, reason) {
    this.ws.close(code, reason);
  }

  terminate() {
    this.ws.terminate();
  }
}

/** Opens a RawWs, waits for the open packet, and (unless nsp is null) connects to `nsp`. */
export async function openRaw(server, { nsp = '/', ...opts } = {}) {
  const raw = new RawWs(server, opts);
  raws.add(raw);
  raw.open = await raw.handshake();
  if (nsp !== null) raw.connect = await raw.connectNs(nsp);
  return raw;
}

const raws = new Set();
export function closeRaws() {
  for (const r of raws) {
    try {
      r.terminate();
    } catch {
      /* gone */
    }
  }
  raws.clear();
}

/* ------------------------------------------------------------------------------------------ */
/* raw WebSocket frames over a TCP socket                                                      */
/* ------------------------------------------------------------------------------------------ */

export const OP = { CONT: 0x0, TEXT: 0x1, BINARY: 0x2, CLOSE: 0x8, PING: 0x9, PONG: 0xa };

/** Encodes one WebSocket frame. Client frames are masked unless `mask: false`. */
export function encodeFrame({ fin = true, rsv = 0, opcode, payload = Buffer.alloc(0), mask = true, length }) {
  const data = Buffer.isBuffer(payload) ? payload : Buffer.from(payload, 'utf8');
  const len = length ?? data.length;
  let header;
  if (len < 126) {
    header = Buffer.alloc(2);
    header[1] = len;
  } else if (len < 65536) {
    header = Buffer.alloc(4);
    header[1] = 126;
    header.writeUInt16BE(len, 2);
  } else {
    header = Buffer.alloc(10);
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(len), 2);
  }
  header[0] = (fin ? 0x80 : 0) | ((rsv & 7) << 4) | (opcode & 0x0f);
  if (!mask) return Buffer.concat([header, data]);
  header[1] |= 0x80;
  const key = crypto.randomBytes(4);
  const masked = Buffer.alloc(data.length);
  for (let i = 0; i < data.length; i++) masked[i] = data[i] ^ key[i & 3];
  return Buffer.concat([header, key, masked]);
}

/** A close frame payload: 2-byte code + UTF-8 reason. */
export function closePayload(code, reason = '') {
  const b = Buffer.alloc(2 + Buffer.byteLength(reason));
  b.writeUInt16BE(code, 0);
  b.write(reason, 2);
  return b;
}

/**
 * A WebSocket client made by hand on a TCP socket: handcrafted upgrade request, frame
 * parser for what the server sends, and byte-exact control over what we send (unmasked
 * frames, fragments, reserved bits, bad opcodes, bogus lengths).
 * Received frames: { fin, rsv, opcode, masked, payload (Buffer), text (string) }.
 */
export class TcpWs {
  static async connect(server, { path: p = eioPath(), timeoutMs = 5000, autoPong = true } = {}) {
    const c = new TcpWs(server, p, autoPong);
    tcpSockets.add(c);
    await c._handshake(timeoutMs);
    return c;
  }

  constructor(server, p, autoPong) {
    this.server = server;
    this.path = p;
    this.autoPong = autoPong;
    this.buf = Buffer.alloc(0);
    this.frames = [];
    this.ended = false;
    this.endedAt = null;
    this.waiters = new Set();
    this.sock = net.connect({ host: server.host, port: server.port });
    this.sock.setNoDelay(true);
    this.sock.on('error', () => {});
    this.ended_ = new Promise((resolve) =>
      this.sock.once('close', () => {
        this.ended = true;
        this.endedAt = performance.now();
        resolve();
        this._notify();
      }),
    );
  }

  _notify() {
    for (const w of [...this.waiters]) w();
  }

  async _handshake(ms) {
    const key = crypto.randomBytes(16).toString('base64');
    const accept = crypto.createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
    const head = await withTimeout(
      new Promise((resolve, reject) => {
        let acc = Buffer.alloc(0);
        const onData = (d) => {
          acc = Buffer.concat([acc, d]);
          const i = acc.indexOf('\r\n\r\n');
          if (i >= 0) {
            this.sock.off('data', onData);
            this.buf = acc.subarray(i + 4);
            resolve(acc.subarray(0, i).toString('latin1'));
          }
        };
        this.sock.on('data', onData);
        this.sock.once('close', () => reject(new Error(`connection closed during the upgrade: ${acc.toString('latin1')}`)));
        this.sock.write(
          `GET ${this.path} HTTP/1.1\r\nHost: ${this.server.host}:${this.server.port}\r\n` +
            `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\n` +
            'Sec-WebSocket-Version: 13\r\n\r\n',
        );
      }),
      ms,
      'WebSocket upgrade response',
    );
    assert.match(head, /^HTTP\/1\.1 101 /, `upgrade refused: ${head}`);
    assert.match(head, new RegExp(`\\r\\nsec-websocket-accept: *${accept.replace(/[+/]/g, '\\$&')}\\r?(\\n|$)`, 'i'), `bad accept key in ${head}`);
    this.sock.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this._parse();
    });
    this._parse();
    this.openedAt = performance.now();
  }

  _parse() {
    for (;;) {
      const b = this.buf;
      if (b.length < 2) return;
      const masked = (b[1] & 0x80) !== 0;
      let len = b[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        len = Number(b.readBigUInt64BE(2));
        off = 10;
      }
      if (masked) off += 4;
      if (b.length < off + len) return;
      let payload = Buffer.from(b.subarray(off, off + len));
      if (masked) {
        const key = b.subarray(off - 4, off);
        for (let i = 0; i < payload.length; i++) payload[i] ^= key[i & 3];
      }
      const frame = {
        fin: (b[0] & 0x80) !== 0,
        rsv: (b[0] >> 4) & 7,
        opcode: b[0] & 0x0f,
        masked,
        payload,
        text: payload.toString('utf8'),
      };
      this.buf = b.subarray(off + len);
      this.frames.push(frame);
      if (this.autoPong && frame.opcode === OP.TEXT && frame.text === '2') this.sendText('3');
      this._notify();
    }
  }

  write(bytes) {
    this.sock.write(bytes);
  }

  sendFrame(f) {
    this.sock.write(encodeFrame(f));
  }

  sendText(text, extra = {}) {
    this.sendFrame({ opcode: OP.TEXT, payload: text, ...extra });
  }

  /** Resolves with the first received frame (index >= from) satisfying pred. */
  waitFrame(pred, ms = 5000, from = 0) {
    return withTimeout(
      new Promise((resolve, reject) => {
        const check = () => {
          for (let i = from; i < this.frames.length; i++) {
            if (pred(this.frames[i])) {
              this.waiters.delete(check);
              resolve(this.frames[i]);
              return;
            }
          }
          if (this.ended) {
            this.waiters.delete(check);
            reject(new Error(`TCP connection closed before a matching frame; frames: ${this.describe()}`));
          }
        };
        this.waiters.add(check);
        check();
      }),
      ms,
      `matching frame; frames so far: ${this.describe()}`,
    );
  }

  waitText(textOrRe, ms = 5000, from = 0) {
    const t = (f) => f.opcode === OP.TEXT && (textOrRe instanceof RegExp ? textOrRe.test(f.text) : f.text === textOrRe);
    return this.waitFrame(t, ms, from);
  }

  /** Waits for the server's close frame; resolves with { code, reason } (code null when empty). */
  async waitCloseFrame(ms = 5000) {
    const f = await this.waitFrame((fr) => fr.opcode === OP.CLOSE, ms);
    return parseClose(f.payload);
  }

  /** Resolves once the TCP connection is closed. */
  waitEnd(ms = 5000) {
    return withTimeout(this.ended_, ms, `TCP close; frames: ${this.describe()}`);
  }

  describe() {
    return JSON.stringify(
      this.frames.map((f) => ({ op: f.opcode, fin: f.fin, data: f.opcode === OP.CLOSE ? parseClose(f.payload) : f.text.slice(0, 200) })),
    ).slice(0, 2000);
  }

  /** Waits for the open packet, sends CONNECT to "/", waits for the reply. */
  async engineAndConnect(ms = 5000) {
    const open = await this.waitText(/^0\{/, ms);
    this.open = JSON.parse(open.text.slice(1));
    const from = this.frames.length;
    this.sendText('40');
    const reply = await this.waitText(/^4[04]/, ms, from);
    assert.match(reply.text, /^40\{/, `CONNECT refused: ${reply.text}`);
    return this;
  }

  destroy() {
    this.sock.destroy();
  }
}

export function parseClose(payload) {
  if (payload.length < 2) return { code: null, reason: '' };
  return { code: payload.readUInt16BE(0), reason: payload.subarray(2).toString('utf8') };
}

const tcpSockets = new Set();
export function closeTcp() {
  for (const t of tcpSockets) t.destroy();
  tcpSockets.clear();
  for (const h of httpConns) h.destroy();
  httpConns.clear();
}

/* ------------------------------------------------------------------------------------------ */
/* raw HTTP over TCP                                                                           */
/* ------------------------------------------------------------------------------------------ */

const httpConns = new Set();

/**
 * One TCP connection for byte-exact HTTP/1.1. write() sends raw bytes; readResponse()
 * parses the next response (Content-Length, chunked, or until close); a HEAD response
 * (opts.head) has no body.
 */
export class HttpConn {
  static async connect(server) {
    const c = new HttpConn(server);
    httpConns.add(c);
    await withTimeout(new Promise((resolve, reject) => {
      c.sock.once('connect', resolve);
      c.sock.once('error', reject);
    }), 5000, 'TCP connect');
    return c;
  }

  constructor(server) {
    this.buf = Buffer.alloc(0);
    this.ended = false;
    this.writeError = null;
    this.waiters = new Set();
    this.sock = net.connect({ host: server.host, port: server.port });
    this.sock.setNoDelay(true);
    this.sock.on('error', (e) => (this.writeError = e));
    this.sock.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this._notify();
    });
    this.endedP = new Promise((resolve) =>
      this.sock.once('close', () => {
        this.ended = true;
        resolve();
        this._notify();
      }),
    );
  }

  _notify() {
    for (const w of [...this.waiters]) w();
  }

  write(bytes) {
    return new Promise((resolve) => {
      if (this.ended || this.sock.destroyed) return resolve(false);
      this.sock.write(bytes, (e) => resolve(!e));
    });
  }

  /** Tries to parse one response from the front of the buffer; returns null if incomplete. */
  _tryParse(head) {
    const b = this.buf;
    const i = b.indexOf('\r\n\r\n');
    if (i < 0) return null;
    const headText = b.subarray(0, i).toString('latin1');
    const lines = headText.split('\r\n');
    const m = /^HTTP\/(\d\.\d) (\d{3})(?: (.*))?$/.exec(lines[0]);
    if (!m) throw new Error(`bad status line: ${JSON.stringify(lines[0])}`);
    const headers = {};
    for (const line of lines.slice(1)) {
      const c = line.indexOf(':');
      const k = line.slice(0, c).trim().toLowerCase();
      const v = line.slice(c + 1).trim();
      headers[k] = headers[k] === undefined ? v : `${headers[k]}, ${v}`;
    }
    const status = Number(m[2]);
    const rest = b.subarray(i + 4);
    let body;
    let used;
    if (head || status === 204 || status === 304 || (status >= 100 && status < 200)) {
      body = Buffer.alloc(0);
      used = 0;
    } else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      if (rest.length < n) return null;
      body = Buffer.from(rest.subarray(0, n));
      used = n;
    } else if (/chunked/i.test(headers['transfer-encoding'] || '')) {
      const parts = [];
      let off = 0;
      for (;;) {
        const e = rest.indexOf('\r\n', off);
        if (e < 0) return null;
        const n = parseInt(rest.subarray(off, e).toString('latin1'), 16);
        if (rest.length < e + 2 + n + 2) return null;
        if (n === 0) {
          used = e + 4;
          break;
        }
        parts.push(rest.subarray(e + 2, e + 2 + n));
        off = e + 2 + n + 2;
      }
      body = Buffer.concat(parts);
    } else {
      if (!this.ended) return null;
      body = Buffer.from(rest);
      used = rest.length;
    }
    this.buf = rest.subarray(used);
    return { version: m[1], status, reason: m[3] || '', headers, body, text: body.toString('utf8'), head: headText };
  }

  /** Resolves with the next response. */
  readResponse({ head = false, ms = 5000 } = {}) {
    return withTimeout(
      new Promise((resolve, reject) => {
        const check = () => {
          let r;
          try {
            r = this._tryParse(head);
          } catch (e) {
            this.waiters.delete(check);
            reject(e);
            return;
          }
          if (r) {
            this.waiters.delete(check);
            resolve(r);
          } else if (this.ended) {
            this.waiters.delete(check);
            reject(new Error(`connection closed before a full response; got ${JSON.stringify(this.buf.toString('latin1').slice(0, 500))}`));
          }
        };
        this.waiters.add(check);
        check();
      }),
      ms,
      `HTTP response; buffered: ${JSON.stringify(this.buf.toString('latin1').slice(0, 300))}`,
    );
  }

  /** Resolves once the server closed the connection. */
  waitEnd(ms = 5000) {
    return withTimeout(this.endedP, ms, 'server closing the HTTP connection');
  }

  destroy() {
    this.sock.destroy();
  }
}

/** Sends `raw` on a fresh connection and resolves with the first response (and the connection). */
export async function httpRaw(server, raw, opts = {}) {
  const c = await HttpConn.connect(server);
  await c.write(typeof raw === 'string' ? Buffer.from(raw, 'latin1') : raw);
  const res = await c.readResponse(opts);
  res.conn = c;
  return res;
}

/** A simple GET (or other method) with Host header; keep-alive unless `close`. */
export function request(method, target, { headers = {}, body, close = false } = {}) {
  let h = `${method} ${target} HTTP/1.1\r\nHost: ${HOST}\r\n`;
  for (const [k, v] of Object.entries(headers)) h += `${k}: ${v}\r\n`;
  if (body !== undefined) h += `Content-Length: ${Buffer.byteLength(body)}\r\n`;
  if (close) h += 'Connection: close\r\n';
  return h + '\r\n' + (body ?? '');
}
