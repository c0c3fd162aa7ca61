// A TCP proxy between clients and the server under test that cuts connections when told: all
// at once (cutAll), at random moments (chaos), or at a chosen frame of the server's WebSocket
// stream (inspect). Cutting destroys both sides at once, the server's first, the way a network
// failure or a restarting proxy would: neither peer gets a close handshake.
//
//   const proxy = await CutProxy.start(server.port);
//   io(proxy.url, ...);                // clients connect through it
//   proxy.cutAll();                    // every connection open now is cut
//   proxy.chaos({ everyMs: 200 });     // cuts every connection every ~200 ms (jittered)
//   proxy.inspect = (text) => text.startsWith('40') ? 'cut' : 'pass';  // server -> client frames
//
// Only 127.0.0.1.

import net from 'node:net';

const HOST = '127.0.0.1';

/** Server-to-client WebSocket frames of one connection, parsed as they pass (unmasked). */
class FrameReader {
  constructor() {
    this.buf = Buffer.alloc(0);
    this.upgraded = false;
  }

  /** Feeds bytes; returns [{ bytes, text }] complete units (the HTTP head is one, text null). */
  push(chunk) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out = [];
    for (;;) {
      if (!this.upgraded) {
        const end = this.buf.indexOf('\r\n\r\n');
        if (end < 0) break;
        const head = this.buf.subarray(0, end + 4);
        if (!/^HTTP\/1\.1 101/.test(head.toString('latin1'))) {
          // Not a WebSocket (polling): nothing to parse, everything passes as it comes.
          out.push({ bytes: this.buf, text: null });
          this.buf = Buffer.alloc(0);
          this.passthrough = true;
          break;
        }
        this.upgraded = true;
        out.push({ bytes: head, text: null });
        this.buf = this.buf.subarray(end + 4);
        continue;
      }
      if (this.buf.length < 2) break;
      let len = this.buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (this.buf.length < 4) break;
        len = this.buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) break;
        len = Number(this.buf.readBigUInt64BE(2));
        off = 10;
      }
      if (this.buf.length < off + len) break;
      const opcode = this.buf[0] & 0x0f;
      const bytes = this.buf.subarray(0, off + len);
      out.push({ bytes, text: opcode === 1 ? bytes.subarray(off).toString('utf8') : null });
      this.buf = this.buf.subarray(off + len);
    }
    return out;
  }
}

export class CutProxy {
  /** Starts a proxy on a free port of 127.0.0.1 forwarding to targetPort. */
  static async start(targetPort) {
    const p = new CutProxy(targetPort);
    await new Promise((resolve, reject) => {
      p.server.once('error', reject);
      p.server.listen(0, HOST, resolve);
    });
    p.port = p.server.address().port;
    return p;
  }

  constructor(targetPort) {
    this.targetPort = targetPort;
    this.pairs = new Set();
    this.cuts = 0;
    this.accepted = 0;
    /** (text, pair) => 'pass' | 'cut', for every server-to-client WebSocket text frame. */
    this.inspect = null;
    /** While true, new connections are dropped at once (the network is down). */
    this.refusing = false;
    this.server = net.createServer((client) => this.#onClient(client));
    this.timer = null;
  }

  get url() {
    return `http://${HOST}:${this.port}`;
  }

  #onClient(client) {
    if (this.refusing) {
      client.on('error', () => {});
      client.destroy();
      return;
    }
    this.accepted++;
    const upstream = net.connect(this.targetPort, HOST);
    const pair = { client, upstream, reader: new FrameReader(), dead: false };
    this.pairs.add(pair);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const kill = () => this.#kill(pair);
    client.on('error', kill);
    upstream.on('error', kill);
    client.on('close', kill);
    upstream.on('close', kill);
    client.on('data', (d) => {
      if (!pair.dead) upstream.write(d);
    });
    upstream.on('data', (d) => {
      if (pair.dead) return;
      if (!this.inspect || pair.reader.passthrough) {
        client.write(d);
        return;
      }
      for (const unit of pair.reader.push(d)) {
        if (unit.text !== null && this.inspect(unit.text, pair) === 'cut') {
          this.cut(pair);
          return;
        }
        client.write(unit.bytes);
      }
    });
  }

  #kill(pair) {
    if (pair.dead) return;
    pair.dead = true;
    this.pairs.delete(pair);
    pair.upstream.destroy();
    pair.client.destroy();
  }

  /** Cuts one connection: both sides destroyed, no close handshake, no FIN to wait for. */
  cut(pair) {
    if (pair.dead) return;
    this.cuts++;
    // resetAndDestroy sends RST where it can, as a dropped network path eventually does.
    if (typeof pair.upstream.resetAndDestroy === 'function') pair.upstream.resetAndDestroy();
    if (typeof pair.client.resetAndDestroy === 'function') pair.client.resetAndDestroy();
    this.#kill(pair);
  }

  /** The network goes down (every connection cut, new ones dropped) until up(). */
  down() {
    this.refusing = true;
    return this.cutAll();
  }

  up() {
    this.refusing = false;
  }

  /** Cuts every connection open now; returns how many. */
  cutAll() {
    const n = this.pairs.size;
    for (const pair of [...this.pairs]) this.cut(pair);
    return n;
  }

  /**
   * Cuts every open connection about every `everyMs` (uniformly jittered by ±`jitter` of it),
   * until stop(). `rnd` makes the moments reproducible.
   */
  chaos({ everyMs = 200, jitter = 0.5, rnd = Math.random } = {}) {
    this.stopChaos();
    const next = () => {
      const ms = Math.max(1, everyMs * (1 + jitter * (2 * rnd() - 1)));
      this.timer = setTimeout(() => {
        this.cutAll();
        next();
      }, ms);
    };
    next();
  }

  stopChaos() {
    clearTimeout(this.timer);
    this.timer = null;
  }

  async close() {
    this.stopChaos();
    this.cutAll();
    await new Promise((resolve) => this.server.close(resolve));
  }
}
