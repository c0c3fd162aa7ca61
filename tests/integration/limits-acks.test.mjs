// Issue 16, item 3: Socket.IO acknowledgements the server asked for and the client never sends.
// ps_session_emit_ack is bounded like channel requests: at most max_pending_requests
// (--max-pending) unanswered per session, and the call beyond returns PS_ELIMIT (the echo
// fixture's raw "ask" then emits ask:result {"status":"error","error":"limit reached"}). An ack,
// a timeout or the session's end frees a slot. Memory stays flat however many asks a client
// provokes, and a well-behaved client beside it keeps its answers.
// Every server ends with SIGTERM -> exit 0 (LeakSanitizer clean with the ASan build).
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, stopClean, killAll, closeClients, closeTcp, connectClient, assertStillServes, TcpWs, OP,
  encodeFrame, sleep,
} from './lib/server.mjs';
import { rssBytes } from './lib/wire.mjs';

after(async () => {
  closeClients();
  closeTcp();
  await killAll();
});

/**
 * A hand-made WebSocket client that provokes server emits with ack ("ask") and never answers
 * them; it counts the "hang" events (each carries the server's ack id) and the ask:results.
 */
class Asker {
  static async connect(srv) {
    const c = await (await TcpWs.connect(srv)).engineAndConnect();
    const a = new Asker(c);
    c.sock.on('data', () => a.scan());
    return a;
  }

  constructor(c) {
    this.c = c;
    this.seen = 0;
    this.hangs = []; // [ackId, i]
    this.results = []; // ask:result payloads
  }

  scan() {
    for (; this.seen < this.c.frames.length; this.seen++) {
      const f = this.c.frames[this.seen];
      if (f.opcode !== OP.TEXT) continue;
      let m = /^42(\d+)\["hang",(\d+)\]$/.exec(f.text);
      if (m) {
        this.hangs.push([Number(m[1]), Number(m[2])]);
        continue;
      }
      m = /^42\["ask:result",(.*)\]$/.exec(f.text);
      if (m) this.results.push(JSON.parse(m[1]));
    }
    // Keep memory of the test process flat in the large runs.
    if (this.c.frames.length > 4096) {
      this.c.frames.splice(0, this.seen);
      this.seen = 0;
    }
  }

  /** Sends `n` asks in batches (one TCP write per batch). */
  async ask(n, { from = 0, timeoutMs = 0, batch = 256 } = {}) {
    for (let i = 0; i < n; i += batch) {
      const frames = [];
      for (let j = i; j < Math.min(n, i + batch); j++) {
        frames.push(`42["ask","hang",${from + j},${timeoutMs}]`);
      }
      this.c.write(Buffer.concat(frames.map((t) => encode(t))));
      while (this.c.sock.writableLength > 1 << 20) await sleep(2);
    }
  }

  async until(pred, what, ms = 20000) {
    const deadline = performance.now() + ms;
    while (!pred()) {
      if (this.c.ended) throw new Error(`connection ended while waiting for ${what}`);
      if (performance.now() > deadline) {
        throw new Error(`timed out after ${ms} ms: ${what} (hangs ${this.hangs.length}, results ${this.results.length})`);
      }
      await sleep(5);
    }
  }
}

const encode = (text) => encodeFrame({ opcode: OP.TEXT, payload: text });

const LIMIT_ERROR = { status: 'error', error: 'limit reached' };

describe('--max-pending 50: server emits with ack', () => {
  test('the 51st unanswered ask is refused with PS_ELIMIT; an ack or a timeout frees a slot', { timeout: 60000 }, async () => {
    const srv = await startServer(['--max-pending', '50']);
    const witness = await connectClient(srv.url);
    const a = await Asker.connect(srv);

    await a.ask(80);
    await a.until(() => a.hangs.length === 50 && a.results.length === 30, '50 hangs and 30 refusals');
    await sleep(100);
    assert.equal(a.hangs.length, 50, 'exactly 50 emits with ack went out');
    assert.deepEqual(a.hangs.map(([, i]) => i), [...Array(50).keys()], 'the first 50 asks got through, in order');
    assert.equal(a.results.length, 30);
    for (const r of a.results) assert.deepEqual(r, LIMIT_ERROR);
    await assertStillServes(witness);

    // Still full: one more is refused.
    await a.ask(1, { from: 100 });
    await a.until(() => a.results.length === 31, 'the refusal of ask 100');
    assert.deepEqual(a.results[30], LIMIT_ERROR);

    // An ack frees exactly one slot.
    const [id0] = a.hangs[0];
    a.c.sendText(`43${id0}["answered"]`);
    await a.until(() => a.results.length === 32, 'the ok result of the answered ask');
    assert.deepEqual(a.results[31], { status: 'ok', args: ['answered'] });
    await a.ask(2, { from: 200 });
    await a.until(() => a.hangs.length === 51 && a.results.length === 33, 'one accepted, one refused');
    assert.equal(a.hangs[50][1], 200);
    assert.deepEqual(a.results[32], LIMIT_ERROR);

    // A second session has its own 50.
    const b = await Asker.connect(srv);
    await b.ask(50, { timeoutMs: 300 });
    await b.until(() => b.hangs.length === 50, 'the second session\'s 50 hangs');
    assert.equal(b.results.length, 0);
    // Timeouts free the slots: all 50 time out, then 50 more are accepted.
    await b.until(() => b.results.length === 50, '50 timeouts');
    for (const r of b.results) assert.deepEqual(r, { status: 'timeout' });
    await b.ask(50, { from: 1000 });
    await b.until(() => b.hangs.length === 100, '50 more accepted after the timeouts');
    assert.equal(b.results.length, 50, 'none of them refused');

    await assertStillServes(witness);
    a.c.destroy();
    b.c.destroy();
    witness.disconnect();
    await stopClean(srv);
  });
});

describe('default bound (1024 per session): memory', () => {
  test('100 000 asks that are never answered: 1024 pending, the rest refused, server memory flat', { timeout: 120000 }, async (t) => {
    // ASan's quarantine keeps freed memory resident (up to 256 MiB): off, so that RSS shows what
    // the server holds.
    const srv = await startServer([], { env: { ASAN_OPTIONS: 'detect_leaks=1:quarantine_size_mb=0' } });
    const witness = await connectClient(srv.url);
    const a = await Asker.connect(srv);
    await a.ask(1024);
    await a.until(() => a.hangs.length === 1024, 'the first 1024 hangs');
    const rss0 = rssBytes(srv.proc.pid);
    const N = 100000;
    await a.ask(N - 1024, { from: 1024 });
    await a.until(() => a.hangs.length + a.results.length === N, `an answer to each of the ${N} asks`, 90000);
    const rss1 = rssBytes(srv.proc.pid);
    t.diagnostic(`server RSS ${(rss0 / 1048576).toFixed(1)} -> ${(rss1 / 1048576).toFixed(1)} MiB`);
    assert.equal(a.hangs.length, 1024, 'no emit with ack beyond the bound');
    assert.ok(a.results.every((r) => r.status === 'error' && r.error === 'limit reached'));
    // 99 000 pending acks with their contexts would take about 18 MiB here (ASan build).
    assert.ok(rss1 - rss0 < 4 * 1024 * 1024, `server RSS grew by ${((rss1 - rss0) / 1048576).toFixed(1)} MiB`);
    await assertStillServes(witness);
    a.c.destroy();
    witness.disconnect();
    await stopClean(srv);
  });
});
