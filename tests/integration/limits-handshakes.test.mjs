// Issue 16, item 2: long-polling handshakes that never send a Socket.IO CONNECT.
//   --max-unconnected N / --max-unconnected-per-address N   polling sessions without an
//       accepted CONNECT, in all and per peer address; a handshake beyond ends the oldest,
//       those that never polled first (their next request gets 400 "Session ID unknown");
//   a session that has not polled 10 s after its handshake (PS__EIO_FIRST_POLL_MS) is ended.
// The server's memory stays flat under a handshake flood, and well-behaved clients (polling
// and WebSocket, from the flooding address and from others) connect and keep their answers.
// Loopback addresses other than 127.0.0.1 (127.0.0.2, ...) stand for other peers.
// Every server ends with SIGTERM -> exit 0 (LeakSanitizer clean with the ASan build).
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  startServer, stopClean, killAll, closeClients, closeTcp, makeClient, waitConnect, ackRoundTrip,
  connectClient, assertStillServes, withTimeout, sleep, HOST,
} from './lib/server.mjs';
import { openMonitor, pollUntil } from './lib/channels.mjs';
import { Polling, closePollConns, rawRequest, eioTarget, send, startRequest } from './lib/polling.mjs';
import { rssBytes } from './lib/wire.mjs';

after(async () => {
  closeClients();
  closeTcp();
  closePollConns();
  await killAll();
});

const NO_QUARANTINE = { env: { ASAN_OPTIONS: 'detect_leaks=1:quarantine_size_mb=0' } };
const sockets = new Set();
after(() => {
  for (const s of sockets) s.destroy();
});

/**
 * `n` polling handshakes pipelined on keep-alive connections from `localAddress` (`conns` in
 * parallel); resolves with the sids in the order the server made them (per connection).
 */
async function handshakes(srv, n, { localAddress = '127.0.0.1', conns = 4, batch = 250 } = {}) {
  const per = Math.ceil(n / conns);
  const lists = await Promise.all(
    Array.from({ length: conns }, (_, k) => pipelinedHandshakes(srv, Math.min(per, n - k * per), localAddress, batch)),
  );
  return lists.flat();
}

function pipelinedHandshakes(srv, n, localAddress, batch) {
  if (n <= 0) return Promise.resolve([]);
  return withTimeout(
    new Promise((resolve, reject) => {
      const sids = [];
      let buf = Buffer.alloc(0);
      let asked = 0;
      const s = net.connect({ host: HOST, port: srv.port, localAddress });
      sockets.add(s);
      const ask = () => {
        const k = Math.min(batch, n - asked);
        const reqs = [];
        for (let i = 0; i < k; i++) reqs.push(rawRequest('GET', eioTarget()));
        asked += k;
        s.write(Buffer.concat(reqs));
      };
      s.on('connect', ask);
      s.on('error', reject);
      s.on('close', () => reject(new Error(`connection closed after ${sids.length} of ${n} handshakes`)));
      s.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        for (;;) {
          const i = buf.indexOf('\r\n\r\n');
          if (i < 0) break;
          const head = buf.subarray(0, i).toString('latin1');
          const len = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0);
          if (buf.length < i + 4 + len) break;
          const body = buf.subarray(i + 4, i + 4 + len).toString('utf8');
          buf = buf.subarray(i + 4 + len);
          const m = /^0\{"sid":"([^"]+)"/.exec(body);
          if (!m) return reject(new Error(`handshake answered ${head.split('\r\n')[0]} ${body}`));
          sids.push(m[1]);
        }
        if (sids.length === n) {
          s.removeAllListeners('close');
          s.destroy();
          sockets.delete(s);
          resolve(sids);
        } else if (sids.length === asked) {
          ask();
        }
      });
    }),
    60000,
    `${n} handshakes from ${localAddress}`,
  );
}

/** The status and Engine.IO error code of a GET with `sid` (a held GET counts as alive). */
async function probe(srv, sid) {
  const r = startRequest(srv, 'GET', eioTarget({ sid }), { ms: 400 });
  try {
    const res = await r.res;
    return res.status === 400 ? `400 code ${JSON.parse(res.text).code}` : `${res.status}`;
  } catch {
    r.conn.destroy(); // held: the session is alive (and has polled now)
    return 'held';
  }
}

describe('--max-unconnected-per-address 50', () => {
  test('2000 handshakes from one address: 50 left, the oldest ended, sessions that polled kept; other addresses and real clients unaffected', { timeout: 120000 }, async (t) => {
    const srv = await startServer(['--max-unconnected-per-address', '50']);
    const mon = await openMonitor(srv.url);
    // Well-behaved clients beside the flood: one over WebSocket, one over long-polling.
    const ws = await connectClient(srv.url);
    const poller = makeClient(srv.url, { transports: ['polling'] });
    await waitConnect(poller);

    // Ten sessions that poll (a held GET each) but never CONNECT.
    const held = [];
    for (let i = 0; i < 10; i++) {
      const p = new Polling(srv);
      await p.handshake();
      held.push({ p, get: p.startGet({ ms: 60000 }) });
    }
    await Promise.all(held.map((h) => h.get.written));
    // Five from another address, never polled.
    const other = await handshakes(srv, 5, { localAddress: '127.0.0.2', conns: 1 });

    const sids = await handshakes(srv, 2000);
    const [newest] = await handshakes(srv, 1, { conns: 1 });
    const st = await mon.stats();
    t.diagnostic(`unconnected ${st.unconnected}, ended ${st.unconnected_closed}`);
    // 127.0.0.1: the ten that polled and the 40 newest; 127.0.0.2: its five.
    assert.equal(st.unconnected, 10 + 40 + 5, `unconnected sessions: ${JSON.stringify(st)}`);
    assert.equal(st.unconnected_closed, 2001 - 40);
    // The oldest are gone, the newest alive; the ten that polled still wait for their answer.
    // (A probe that finds a session alive ends it: its GET is held, then given up.)
    assert.equal(await probe(srv, sids[0]), '400 code 1');
    assert.equal(await probe(srv, sids[1000]), '400 code 1');
    assert.equal(await probe(srv, newest), 'held');
    for (const h of held) assert.equal(h.get.conn.ended, false, 'a held GET was answered');
    for (const sid of other) assert.equal(await probe(srv, sid), 'held', 'another address was affected');

    // A session that polled and then CONNECTs is served normally, and leaves the bound.
    const p0 = held[0].p;
    await p0.postOk('40');
    const [reply] = (await held[0].get.res).packets;
    assert.match(reply, /^40\{"sid":/);
    // Real clients: still served, and new ones connect over both transports.
    await assertStillServes(ws);
    await assertStillServes(poller);
    const fresh = makeClient(srv.url, { transports: ['polling'] });
    await waitConnect(fresh);
    assert.deepEqual(await ackRoundTrip(fresh, 'x', ['fresh']), ['fresh']);
    fresh.disconnect();
    for (const h of held) h.get.conn.destroy();
    ws.disconnect();
    poller.disconnect();
    mon.close();
    await stopClean(srv);
  });
});

describe('--max-unconnected 100', () => {
  test('handshakes from three addresses: 100 unconnected in all, the oldest ended', { timeout: 120000 }, async () => {
    const srv = await startServer(['--max-unconnected', '100', '--max-unconnected-per-address', '1000']);
    const mon = await openMonitor(srv.url);
    const first = await handshakes(srv, 300, { localAddress: '127.0.0.2', conns: 1 });
    await handshakes(srv, 300, { localAddress: '127.0.0.3', conns: 1 });
    const last = await handshakes(srv, 300, { localAddress: '127.0.0.4', conns: 1 });
    const st = await mon.stats();
    assert.equal(st.unconnected, 100);
    assert.equal(st.unconnected_closed, 800);
    assert.equal(await probe(srv, first[0]), '400 code 1');
    assert.equal(await probe(srv, last[299]), 'held');
    const c = makeClient(srv.url, { transports: ['polling'] });
    await waitConnect(c);
    assert.deepEqual(await ackRoundTrip(c, 'x', ['ok']), ['ok']);
    c.disconnect();
    mon.close();
    await stopClean(srv);
  });
});

describe('sessions that never poll', () => {
  test('a handshake not followed by a poll within 10 s is ended; one that polled is kept', { timeout: 60000 }, async () => {
    const srv = await startServer(['--connect-timeout', '60000']);
    const mon = await openMonitor(srv.url);
    const sids = await handshakes(srv, 30, { conns: 1 });
    const p = new Polling(srv);
    await p.handshake();
    const get = p.startGet({ ms: 60000 });
    await get.written;
    const t0 = performance.now();
    let st = await mon.stats();
    assert.equal(st.unconnected, 31);
    st = await pollUntil(() => mon.stats(), (s) => s.unconnected === 1, { ms: 20000, every: 200 });
    const after = performance.now() - t0;
    assert.equal(st.unconnected, 1, `still unconnected: ${JSON.stringify(st)}`);
    assert.ok(after > 8000 && after < 16000, `ended after ${after.toFixed(0)} ms`);
    assert.equal(st.unconnected_closed, 30);
    assert.equal(await probe(srv, sids[0]), '400 code 1');
    assert.equal(get.conn.ended, false, 'the session that polled still holds its GET');
    get.conn.destroy();
    mon.close();
    await stopClean(srv);
  });
});

describe('default bounds: memory', () => {
  test('20 000 handshakes that never CONNECT: at most 256 kept, server memory flat', { timeout: 180000 }, async (t) => {
    const srv = await startServer([], NO_QUARANTINE);
    const mon = await openMonitor(srv.url);
    const witness = await connectClient(srv.url);
    await handshakes(srv, 500);
    const rss0 = rssBytes(srv.proc.pid);
    const t0 = performance.now();
    await handshakes(srv, 20000);
    const ms = performance.now() - t0;
    const rss1 = rssBytes(srv.proc.pid);
    const st = await mon.stats();
    t.diagnostic(`20000 handshakes in ${ms.toFixed(0)} ms; RSS ${(rss0 / 1048576).toFixed(1)} -> ${(rss1 / 1048576).toFixed(1)} MiB; unconnected ${st.unconnected}`);
    assert.equal(st.unconnected, 256);
    assert.ok(rss1 - rss0 < 8 * 1048576, `server RSS grew by ${((rss1 - rss0) / 1048576).toFixed(1)} MiB`);
    await assertStillServes(witness);
    witness.disconnect();
    mon.close();
    await stopClean(srv);
  });
});
