// Issue 16, item 1: HTTP clients that never read what they asked for.
//   - Pipelined requests are answered only while less than 1 MiB of the connection's output is
//     unread (PS__CONN_HIGH_WATER); the rest waits, unparsed, until the output drains. Static
//     files go out in chunks as the output drains. So a connection that pipelines 1400
//     GET /app.js and never reads holds about 1 MiB of the server's memory, not 1400 files.
//   - Unread output that does not drain for --idle-timeout closes the connection, and every
//     close ends within --close-timeout even when the peer's window stays zero (it is aborted):
//     the connection stops counting against --max-connections.
//   - The same with unread long-polling GETs: the session's queue then fills up to
//     --max-queued and the session is cut off as a slow consumer.
// A well-behaved client beside them keeps getting answers. Every server ends with SIGTERM ->
// exit 0 (LeakSanitizer clean with the ASan build).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, stopClean, killAll, closeClients, closeTcp, HttpConn, sleep } from './lib/server.mjs';
import { openMonitor, pollUntil, startWitness } from './lib/channels.mjs';
import { Polling, closePollConns, openConn, rawRequest, eioTarget, send } from './lib/polling.mjs';
import { tcpConnect, rssBytes } from './lib/wire.mjs';

after(async () => {
  closeClients();
  closeTcp();
  closePollConns();
  await killAll();
});

const IDLE = 1000;
const CLOSE = 1000;
// A never-reading connection is gone after at most IDLE (its output does not drain) + CLOSE
// (the flush that never completes), plus timer and loop latency on a loaded 2-core machine
// under ASan.
const GONE_WITHIN = IDLE + CLOSE + 5000;
const FILE_SIZE = 200 * 1024;
// ASan's quarantine keeps freed memory resident (up to 256 MiB): off, so that RSS shows what the
// server holds.
const NO_QUARANTINE = { env: { ASAN_OPTIONS: 'detect_leaks=1:quarantine_size_mb=0' } };

let dir;
before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pulsec-unread-'));
  // Not compressible, not all one byte: a bundle-like file.
  const body = Buffer.alloc(FILE_SIZE);
  for (let i = 0; i < FILE_SIZE; i++) body[i] = 32 + ((i * 7919) % 95);
  fs.writeFileSync(path.join(dir, 'app.js'), body);
  fs.writeFileSync(path.join(dir, 'index.html'), '<!doctype html><title>x</title>\n');
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** RSS of the server sampled every 20 ms until stop(); resolves with the maximum. */
function rssSampler(pid) {
  let max = rssBytes(pid);
  const t = setInterval(() => {
    try {
      max = Math.max(max, rssBytes(pid));
    } catch {
      /* exited */
    }
  }, 20);
  return { stop: () => (clearInterval(t), max) };
}

/** A status line from a fresh connection: 200 for /healthz, or 503 over --max-connections. */
async function healthStatus(srv) {
  const c = await HttpConn.connect(srv);
  await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  const r = await c.readResponse({ ms: 5000 });
  c.destroy();
  return r.status;
}

describe('pipelined GETs that are never read', () => {
  test('two connections pipelining 1400 GET /app.js each: ~1 MiB each, cut after the idle and close bounds; max-connections freed', { timeout: 120000 }, async (t) => {
    const srv = await startServer(
      ['--static', dir, '--idle-timeout', String(IDLE), '--close-timeout', String(CLOSE), '--max-connections', '3'],
      NO_QUARANTINE,
    );
    const mon = await openMonitor(srv.url);
    const witness = startWitness(mon.client, mon.channel, { every: 20 });
    const rss0 = rssBytes(srv.proc.pid);
    const rss = rssSampler(srv.proc.pid);

    const reqs = Buffer.from('GET /app.js HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(1400), 'latin1');
    const attackers = [];
    for (let i = 0; i < 2; i++) {
      const s = await tcpConnect(srv);
      s.pause(); // never reads: the kernel buffers fill, then the server's queue would
      s.write(reqs);
      attackers.push(s);
    }
    const t0 = performance.now();
    // The monitor and the two attackers fill --max-connections 3: a fourth connection is
    // refused while they hold their places.
    await sleep(300);
    assert.equal(await healthStatus(srv), 503, 'the two unread connections hold their places');

    const st = await pollUntil(() => mon.stats(), (s) => s.connections === 1, { ms: GONE_WITHIN + 5000, every: 100 });
    const goneAfter = performance.now() - t0;
    const rssMax = rss.stop();
    const lat = await witness.stop();
    t.diagnostic(`server RSS ${(rss0 / 1048576).toFixed(1)} MiB, max ${(rssMax / 1048576).toFixed(1)} MiB; unread connections gone after ${goneAfter.toFixed(0)} ms; witness ${lat.length} round trips, max ${lat[lat.length - 1]?.toFixed(1)} ms`);
    assert.equal(st.connections, 1, `the unread connections are still open: ${JSON.stringify(st)}`);
    assert.ok(goneAfter < GONE_WITHIN, `gone only after ${goneAfter.toFixed(0)} ms`);
    // 2 x (1 MiB of queued output + one 256 KiB chunk), plus allocator slack under ASan.
    assert.ok(rssMax - rss0 < 24 * 1048576, `server RSS grew by ${((rssMax - rss0) / 1048576).toFixed(1)} MiB`);
    assert.equal(await healthStatus(srv), 200, 'their places are free again');
    assert.ok(lat.length >= 10 && lat[lat.length - 1] < 2000, `witness latencies ${JSON.stringify(lat.slice(-5))}`);
    for (const s of attackers) s.destroy();
    mon.close();
    await stopClean(srv);
  });

  test('a reader that reads slowly gets every pipelined file, in order, complete', { timeout: 120000 }, async () => {
    const srv = await startServer(['--static', dir, '--idle-timeout', String(IDLE * 5), '--close-timeout', String(CLOSE)]);
    const c = await HttpConn.connect(srv);
    const N = 40; // 8 MiB of answers: more than the bound and the kernel buffers together
    c.sock.pause();
    await c.write(Buffer.from('GET /app.js HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(N - 1) + 'GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n', 'latin1'));
    await sleep(500);
    c.sock.resume();
    const want = fs.readFileSync(path.join(dir, 'app.js'));
    for (let i = 0; i < N - 1; i++) {
      const r = await c.readResponse({ ms: 20000 });
      assert.equal(r.status, 200);
      assert.equal(r.body.length, FILE_SIZE, `response ${i}`);
      assert.ok(r.body.equals(want), `response ${i} is the file`);
    }
    const last = await c.readResponse({ ms: 20000 });
    assert.match(last.text, /<title>x<\/title>/);
    c.destroy();
    await stopClean(srv);
  });
});

describe('long-polling GETs that are never read', () => {
  test('pipelined GETs of a session whose answers are never read: the session is cut at --max-queued, the connection within the bounds', { timeout: 120000 }, async (t) => {
    const srv = await startServer(
      ['--idle-timeout', String(IDLE), '--close-timeout', String(CLOSE), '--max-queued', String(1 << 20)],
      NO_QUARANTINE,
    );
    const mon = await openMonitor(srv.url);
    const before = await mon.stats();
    const witness = startWitness(mon.client, mon.channel, { every: 20 });

    const p = new Polling(srv);
    await p.handshake();
    await p.postOk('40');
    const [reply] = await p.poll();
    assert.match(reply, /^40\{"sid":/);

    const rss0 = rssBytes(srv.proc.pid);
    const rss = rssSampler(srv.proc.pid);
    // One connection pipelines 2000 GETs for the session and never reads the answers.
    const getter = openConn(srv);
    getter.sock.pause();
    const gets = [];
    for (let i = 0; i < 2000; i++) gets.push(rawRequest('GET', eioTarget({ sid: p.sid })));
    await getter.write(Buffer.concat(gets));
    const t0 = performance.now();
    // Meanwhile the session asks for 32 KiB echoes, up to 32 MiB of them, until it is refused.
    const big = 'y'.repeat(32 * 1024);
    let posted = 0;
    let refusedAt = null;
    while (posted < 1000) {
      const r = await send(srv, 'POST', eioTarget({ sid: p.sid }), { body: `42["e","${big}"]`, ms: 10000 });
      if (r.status !== 200) {
        refusedAt = performance.now() - t0;
        break;
      }
      posted++;
    }
    const st = await pollUntil(() => mon.stats(), (s) => s.connections === 1 && s.sessions === before.sessions, { ms: GONE_WITHIN + 5000, every: 100 });
    const goneAfter = performance.now() - t0;
    const rssMax = rss.stop();
    const lat = await witness.stop();
    t.diagnostic(`posted ${posted} x 32 KiB, refused after ${refusedAt?.toFixed(0)} ms; getter gone after ${goneAfter.toFixed(0)} ms; server RSS ${(rss0 / 1048576).toFixed(1)} -> max ${(rssMax / 1048576).toFixed(1)} MiB`);
    assert.ok(refusedAt !== null, `the session was never cut off (${posted} x 32 KiB posted)`);
    assert.equal(st.slow_consumers, (before.slow_consumers ?? 0) + 1, `cut off as a slow consumer: ${JSON.stringify(st)}`);
    assert.equal(st.connections, 1, 'the unread GET connection is gone');
    assert.ok(goneAfter < 60000, `gone after ${goneAfter.toFixed(0)} ms`);
    // The session's queue (1 MiB) + the connection's (1 MiB) + allocator slack under ASan.
    assert.ok(rssMax - rss0 < 12 * 1048576, `server RSS grew by ${((rssMax - rss0) / 1048576).toFixed(1)} MiB`);
    assert.ok(lat.length >= 10 && lat[lat.length - 1] < 2000, `witness latencies ${JSON.stringify(lat.slice(-5))}`);
    getter.destroy();
    mon.close();
    await stopClean(srv);
  });
});
