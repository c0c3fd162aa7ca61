// Issue 7 chaos: a flood of connects and disconnects: 2000 over ~20 s (one every 10 ms), mixed
// transports and clients: socket.io-client over WebSocket and over long-polling (with and
// without the upgrade), raw channel clients on hand-made WebSockets, raw polling sessions,
// bare TCP connections and upgrade attempts; each does a little work (attach, request, ask)
// and leaves one of several ways (clean disconnect, close frame, FIN, RST, POST "1", silence).
// Every client must succeed at what it tried; a witness keeps round-tripping; afterwards the
// server holds no connection, session, view or file descriptor more than before, every view
// was disposed exactly once, every ask completed once, and SIGTERM -> exit 0 (LSan clean).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, stopClean, killAll, closeClients, closeTcp, makeClient, waitConnect, ackRoundTrip, OP, sleep, withTimeout,
} from './lib/server.mjs';
import { ChannelTestClient, openMonitor, pollUntil, startWitness } from './lib/channels.mjs';
import { Polling, closePollConns } from './lib/polling.mjs';
import { WireClient, closeWires, tcpConnect, upgradeRequest, assertEchoInvariants, fdCount } from './lib/wire.mjs';

after(async () => {
  closeClients();
  closeWires();
  closeTcp();
  closePollConns();
  await killAll();
});

const TOTAL = 2000;
const EVERY_MS = 10;

test(`a flood of ${TOTAL} connects/disconnects over ~${(TOTAL * EVERY_MS) / 1000} s, mixed transports, leaves nothing behind`, { timeout: 150000 }, async (t) => {
  const srv = await startServer(['--ping-interval', '1000', '--ping-timeout', '10000']);
  const mon = await openMonitor(srv.url);
  const wit = await ChannelTestClient.connect(srv.url);
  const witView = await wit.attachEcho();
  const base = await mon.stats();
  const baseFds = fdCount(srv.proc.pid);
  let attached = 0;
  const kinds = {};
  const failures = [];

  const witness = startWitness(wit, witView.channel, { ms: 10000, every: 20 });

  /** One flood client; `k` picks its kind and how it leaves. */
  async function one(k) {
    switch (k % 10) {
      case 0:
      case 1: { // socket.io-client over WebSocket with a view and a request
        const c = await ChannelTestClient.connect(srv.url, { timeout: 20000 });
        const v = await c.attachEcho();
        attached++;
        await c.assertEchoes(v.channel, `flood ${k}`);
        if (k % 20 === 1) c.emit(v.channel, 'ask', { event: 'hang', payload: k, timeout_ms: 0 });
        c.disconnect();
        return 'sio-ws';
      }
      case 2: { // socket.io-client over long-polling (upgrade every other time)
        const s = makeClient(srv.url, { transports: k % 20 === 2 ? ['polling'] : ['polling', 'websocket'], timeout: 20000 });
        await waitConnect(s, 20000);
        assert.deepEqual(await ackRoundTrip(s, 'flood', [k], 20000), [k]);
        s.disconnect();
        return 'sio-polling';
      }
      case 3:
      case 4:
      case 5: { // raw channel client, leaves by close frame / FIN / RST
        const w = await WireClient.connect(srv, { timeoutMs: 20000 });
        if (k % 2) {
          const v = await w.attachEcho();
          attached++;
          const res = await w.request(v.channel, 'echo', k, { ms: 20000 });
          assert.equal(res.payload, k);
          if (k % 4 === 1) w.emit(v.channel, 'ask', { event: 'hang', payload: k, timeout_ms: 0 });
        }
        if (k % 3 === 0) {
          w.sendFrame({ opcode: OP.CLOSE, payload: Buffer.from([0x03, 0xe8]) });
          await withTimeout(w.ended_, 20000, 'server closing after the close handshake');
        } else if (k % 3 === 1) w.sock.destroy();
        else w.sock.resetAndDestroy();
        return 'raw-ws';
      }
      case 6: { // raw polling session: CONNECT, an event, then POST "1" or just silence
        const p = new Polling(srv);
        await p.handshake();
        await p.connectSio();
        await p.postOk(`421["x",${k}]`);
        assert.deepEqual(await p.collect(1, { ms: 20000 }), [`431[${k}]`]);
        if (k % 20 < 10) await p.postOk('1');
        return 'raw-polling';
      }
      case 7: { // a bare TCP connection, closed without a byte
        const s = await tcpConnect(srv, 20000);
        await sleep(k % 5);
        if (k % 2) s.resetAndDestroy();
        else s.destroy();
        return 'tcp';
      }
      case 8: { // an upgrade, then gone with or without reading the 101
        const s = await tcpConnect(srv, 20000);
        s.write(upgradeRequest(srv));
        if (k % 20 === 8) {
          await withTimeout((async () => { while (!s.data.length) await sleep(2); })(), 20000, '101');
          assert.match(s.data.toString('latin1'), /^HTTP\/1\.1 101 /);
        }
        s.destroy();
        return 'upgrade';
      }
      default: { // /healthz on keep-alive, twice
        const s = await tcpConnect(srv, 20000);
        for (let i = 0; i < 2; i++) {
          s.data = Buffer.alloc(0);
          s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
          await withTimeout((async () => { while (!/\r\n\r\n/.test(s.data.toString('latin1'))) await sleep(2); })(), 20000, 'healthz');
          assert.match(s.data.toString('latin1'), /^HTTP\/1\.1 200 /);
        }
        s.destroy();
        return 'http';
      }
    }
  }

  const t0 = performance.now();
  const all = [];
  let peak = 0;
  let live = 0;
  for (let k = 0; k < TOTAL; k++) {
    live++;
    peak = Math.max(peak, live);
    all.push(
      one(k)
        .then((kind) => (kinds[kind] = (kinds[kind] ?? 0) + 1))
        .catch((e) => failures.push(`client ${k} (kind ${k % 10}): ${e.stack || e}`))
        .finally(() => live--),
    );
    const due = t0 + (k + 1) * EVERY_MS;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
  }
  await Promise.all(all);
  const floodMs = performance.now() - t0;
  // Silent polling sessions go by ping timeout (1 + 10 s: a raw polling client among ~200 at once
  // on a loaded 2-core machine can take more than 3 s to answer its first ping); the rest at once.
  const end = await pollUntil(
    () => mon.stats(),
    (s) => s.connections === base.connections && s.sessions === base.sessions && s.views === base.views,
    { ms: 30000, every: 100 },
  );
  const witLat = await witness.stop();

  assert.deepEqual(failures.slice(0, 10), [], `${failures.length} flood clients failed`);
  assert.equal(Object.values(kinds).reduce((a, b) => a + b, 0), TOTAL, JSON.stringify(kinds));
  assert.ok(floodMs < 60000, `the flood took ${floodMs.toFixed(0)} ms`);
  assert.equal(end.connections, base.connections, `connections left: ${JSON.stringify(end)}`);
  assert.equal(end.sessions, base.sessions);
  assert.equal(end.channels, base.channels);
  assertEchoInvariants(end, { monitorViews: base.views, viewsAttached: base.views_disposed + attached, what: 'after the flood' });
  assert.ok(end.sessions_total - base.sessions_total >= TOTAL * 0.6, `sessions_total grew by ${end.sessions_total - base.sessions_total}`);
  assert.ok(witLat.length > 100, `witness round trips: ${witLat.length}`);
  assert.ok(witLat[witLat.length - 1] < 2000, `witness max latency ${witLat[witLat.length - 1].toFixed(0)} ms (p50 ${witLat[witLat.length >> 1].toFixed(1)})`);
  const fds = await pollUntil(async () => fdCount(srv.proc.pid), (n) => n <= baseFds, { ms: 5000 });
  assert.ok(fds <= baseFds, `server fds ${fds}, before the flood ${baseFds}`);
  await wit.assertEchoes(witView.channel, 'witness after the flood');
  t.diagnostic(`flood ${floodMs.toFixed(0)} ms, peak ${peak} clients at once, kinds ${JSON.stringify(kinds)}, views ${attached}`);
  t.diagnostic(`witness ${witLat.length} round trips, p50 ${witLat[witLat.length >> 1].toFixed(1)} ms, max ${witLat[witLat.length - 1].toFixed(1)} ms`);
  wit.disconnect();
  mon.close();
  await stopClean(srv);
});
