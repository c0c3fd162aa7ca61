// Leak check for long-polling (issue 8): 5000 polling sessions come and go against the
// AddressSanitizer build: normal lives (handshake, CONNECT, an event, a binary event,
// disconnect with 41+1), aborted held GETs, duplicate GETs, invalid packets, octet-stream
// POSTs, upgrades to WebSocket, client closes with a held GET, and a few sessions left open
// with a held GET until SIGTERM. The server's session count must come back to its baseline,
// and the server must exit 0 (LeakSanitizer clean).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, stopClean, killAll, closeTcp, closeClients, sleep, RawWs, withTimeout,
} from './lib/server.mjs';
import { Polling, SEP, closePollConns, openConn, b64packet, ph } from './lib/polling.mjs';
import { openMonitor, pollUntil } from './lib/channels.mjs';

const TOTAL = 5000;
const CONCURRENCY = 48;

after(async () => {
  closeClients();
  closeTcp();
  closePollConns();
  await killAll();
});

/** One session's life; `kind` picks the ending. Returns a held GET to keep (left-open kind). */
async function life(srv, i, kind, stats) {
  const conn = openConn(srv);
  const p = new Polling(srv);
  try {
    await p.handshake({ conn });
    await p.postOk('40', { conn });
    const [reply] = await p.poll({ conn });
    assert.match(reply, /^40\{"sid":/);
    switch (kind) {
      case 'normal': {
        await p.postOk(`42["x",${i}]${SEP}421["y",${i}]`, { conn });
        assert.equal((await p.get({ conn })).text, `42["x",${i}]${SEP}431[${i}]`);
        await p.postOk(`41${SEP}1`, { conn });
        break;
      }
      case 'binary': {
        const head = `451-${JSON.stringify(['b', ph(0)])}`;
        await p.postOk(`${head}${SEP}${b64packet([i & 255, 1, 2])}`, { conn });
        assert.deepEqual((await p.get({ conn })).packets, [head, b64packet([i & 255, 1, 2])]);
        await p.postOk(`41${SEP}1`, { conn });
        break;
      }
      case 'abort': {
        // Destroyed once the request reached the kernel (a socket destroyed before that never
        // sent its GET, and the session would legitimately live on until its ping timeout).
        const g = p.startGet();
        await g.written;
        await sleep(i % 3);
        g.conn.destroy();
        break;
      }
      case 'duplicate': {
        const g = p.startGet();
        await g.written;
        await sleep(5);
        const r2 = await p.get({ conn });
        const r1 = await g.res;
        // Whichever arrived second is the duplicate: 400; the held one is answered "1".
        const [held, dup] = r2.status === 400 ? [r1, r2] : [r2, r1];
        assert.equal(dup.status, 400);
        assert.equal(held.status, 200);
        assert.equal(held.text, '1');
        break;
      }
      case 'invalid': {
        assert.equal((await p.post('9', { conn })).status, 400);
        break;
      }
      case 'octet': {
        assert.equal((await p.post('42["x"]', { conn, contentType: 'application/octet-stream' })).status, 400);
        break;
      }
      case 'close-held': {
        const g = p.startGet();
        await g.written;
        await sleep(5);
        await p.postOk('1', { conn });
        const r = await g.res;
        // Two connections: if the GET lost the race with the POST it finds the sid unknown.
        assert.ok((r.status === 200 && (r.text === '1' || r.text === '6')) ||
          (r.status === 400 && JSON.parse(r.text).code === 1), `${r.status} ${r.text}`);
        break;
      }
      case 'upgrade': {
        await p.postOk(`42["queued",${i}]`, { conn });
        const w = new RawWs(srv, { path: `/socket.io/?EIO=4&transport=websocket&sid=${p.sid}` });
        await w.opened;
        w.send('2probe');
        await w.waitFrame('3probe');
        w.send('5');
        await w.waitFrame(`42["queued",${i}]`);
        w.send(`421["ws",${i}]`);
        await w.waitFrame(`431[${i}]`);
        if (i % 2) w.terminate();
        else w.close(1000);
        await w.waitClose(5000);
        break;
      }
      case 'probe-abort': {
        const w = new RawWs(srv, { path: `/socket.io/?EIO=4&transport=websocket&sid=${p.sid}` });
        await w.opened;
        w.send('2probe');
        await w.waitFrame('3probe');
        w.terminate();
        await w.waitClose(5000);
        await p.postOk(`41${SEP}1`, { conn });
        break;
      }
      case 'left-open': {
        const g = p.startGet({ ms: 60000 });
        stats.leftOpen.push(g);
        break;
      }
      default:
        throw new Error(kind);
    }
    stats[kind] = (stats[kind] || 0) + 1;
  } finally {
    conn.destroy();
  }
}

function kindOf(i) {
  if (i % 100 === 99) return 'left-open';
  if (i % 50 === 7) return 'upgrade';
  if (i % 50 === 17) return 'probe-abort';
  switch (i % 10) {
    case 0: case 1: case 2: case 3: return 'normal';
    case 4: return 'binary';
    case 5: return 'abort';
    case 6: return 'duplicate';
    case 7: return 'invalid';
    case 8: return 'octet';
    default: return 'close-held';
  }
}

describe(`leak check: ${TOTAL} polling sessions come and go`, () => {
  let srv;
  let monitor;
  before(async () => {
    // A ping interval longer than the test: the left-open sessions hold their first GET from
    // the start to SIGTERM, and on a loaded machine the run can take longer than the default
    // 25 s, when that GET would be answered with a ping ("2") instead of the close ("1").
    srv = await startServer(['--ping-interval', '120000']);
    monitor = await openMonitor(srv.url);
  });

  test(`${TOTAL} sessions, then the session count is back to baseline and SIGTERM exits 0`, { timeout: 90000 }, async (t) => {
    const base = await monitor.stats();
    const stats = { leftOpen: [] };
    const t0 = performance.now();
    let next = 0;
    const worker = async () => {
      while (next < TOTAL) {
        const i = next++;
        await withTimeout(life(srv, i, kindOf(i), stats), 15000, `session ${i} (${kindOf(i)})`);
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    const elapsed = performance.now() - t0;
    const { leftOpen, ...counts } = stats;
    const done = Object.values(counts).reduce((a, b) => a + b, 0);
    assert.equal(done, TOTAL, JSON.stringify(counts));
    assert.equal(leftOpen.length, TOTAL / 100);
    // Every session that ended is forgotten: only the monitor and the left-open ones remain.
    const after_ = await pollUntil(monitor.stats, (s) => s.sessions <= base.sessions + leftOpen.length, { ms: 5000 });
    assert.equal(after_.sessions, base.sessions + leftOpen.length,
      `sessions: ${after_.sessions}, baseline ${base.sessions} + ${leftOpen.length} left open (${JSON.stringify(after_)})`);
    assert.ok(after_.sessions_total >= base.sessions_total + TOTAL, `sessions_total ${after_.sessions_total}`);
    monitor.close();
    await sleep(50);
    // SIGTERM with held GETs: each is answered "1", and LeakSanitizer finds nothing.
    const stopped = stopClean(srv, `server after ${TOTAL} polling sessions`);
    const answers = await Promise.all(leftOpen.map((g) => g.res));
    for (const r of answers) {
      assert.equal(r.status, 200);
      assert.equal(r.packets.at(-1), '1', `held GET at shutdown: ${JSON.stringify(r.text)}`);
    }
    await stopped;
    t.diagnostic(`${TOTAL} polling sessions in ${(elapsed / 1000).toFixed(1)} s: ${JSON.stringify(counts)}`);
  });
});
