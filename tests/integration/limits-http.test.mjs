// Issue 7 limits at the HTTP layer:
//   --idle-timeout 300  a request (or WebSocket upgrade) not complete within 300 ms gets 408 and
//                       is closed (slowloris: dribbling bytes does not extend it); an idle
//                       keep-alive connection is closed ~300 ms after its last response; an
//                       upgraded WebSocket and a held long-poll GET are not affected;
//   --origin            the WebSocket upgrade from another Origin is refused with 403 before any
//                       upgrade; the listed origin is accepted; without --origin only the
//                       server's own.
// Every server ends with SIGTERM -> exit 0 (LeakSanitizer clean with the ASan build).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, stopClean, killAll, closeClients, closeTcp, makeClient, waitConnect, ackRoundTrip,
  TcpWs, sleep, withTimeout,
} from './lib/server.mjs';
import { ChannelTestClient } from './lib/channels.mjs';
import { Polling, closePollConns } from './lib/polling.mjs';
import { WireClient, closeWires, tcpConnect, upgradeRequest } from './lib/wire.mjs';

after(async () => {
  closeClients();
  closeWires();
  closeTcp();
  closePollConns();
  await killAll();
});

const IDLE = 300;
/** The idle bound fired: not before it, and not much later (timer + loop latency under ASan). */
function assertAround(ms, what, lo = IDLE - 30, hi = IDLE + 500) {
  assert.ok(ms >= lo && ms <= hi, `${what}: after ${ms.toFixed(0)} ms, expected ${lo}..${hi} ms`);
}

const statusLine = (s) => s.data.toString('latin1').split('\r\n')[0];

describe(`--idle-timeout ${IDLE}`, () => {
  let srv;
  let witness;
  before(async () => {
    srv = await startServer(['--idle-timeout', String(IDLE), '--ping-interval', '1000', '--ping-timeout', '1000']);
    witness = await ChannelTestClient.connect(srv.url);
  });
  after(async () => {
    // The witness socket.io-client connected before every case and is still served.
    assert.ok(witness.connected, 'the witness WebSocket was cut by the idle timeout');
    const { channel } = await witness.attachEcho();
    await witness.assertEchoes(channel, 'witness at the end');
    witness.disconnect();
    await stopClean(srv);
  });

  test('half a request line, then nothing: 408 and close at ~300 ms', async () => {
    const s = await tcpConnect(srv);
    const t0 = performance.now();
    s.write('GET /heal');
    const at = await withTimeout(s.closeP, 3000, 'close of the stalled connection');
    assert.match(statusLine(s), /^HTTP\/1\.1 408 /, `got ${JSON.stringify(s.data.toString('latin1'))}`);
    assertAround(at - t0, '408 for half a request line');
  });

  test('all headers but the blank line: 408 at ~300 ms', async () => {
    const s = await tcpConnect(srv);
    const t0 = performance.now();
    s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n');
    const at = await withTimeout(s.closeP, 3000, 'close');
    assert.match(statusLine(s), /^HTTP\/1\.1 408 /);
    assertAround(at - t0, '408 for an unfinished head');
  });

  test('slowloris: a byte every 50 ms does not extend the bound (408 at ~300 ms)', async () => {
    const s = await tcpConnect(srv);
    const t0 = performance.now();
    const req = 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ' + 'a'.repeat(100);
    let i = 0;
    const timer = setInterval(() => {
      if (i < req.length && !s.destroyed) s.write(req[i++]);
    }, 50);
    try {
      const at = await withTimeout(s.closeP, 3000, 'close of the slowloris connection');
      assert.match(statusLine(s), /^HTTP\/1\.1 408 /);
      assertAround(at - t0, '408 for a dribbled request');
    } finally {
      clearInterval(timer);
    }
  });

  test('a body that never completes: 408 at ~300 ms', async () => {
    const s = await tcpConnect(srv);
    const t0 = performance.now();
    s.write('POST /socket.io/?EIO=4&transport=polling&sid=x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n42["half');
    const at = await withTimeout(s.closeP, 3000, 'close');
    assert.match(statusLine(s), /^HTTP\/1\.1 408 /);
    assertAround(at - t0, '408 for a short body');
  });

  test('half a WebSocket upgrade request: 408 and close at ~300 ms, no 101', async () => {
    const s = await tcpConnect(srv);
    const t0 = performance.now();
    const up = upgradeRequest(srv);
    s.write(up.slice(0, up.length - 20));
    const at = await withTimeout(s.closeP, 3000, 'close of the stalled upgrade');
    assert.match(statusLine(s), /^HTTP\/1\.1 408 /);
    assertAround(at - t0, '408 for a stalled upgrade');
  });

  test('a connection that sends nothing is closed at ~300 ms', async () => {
    const s = await tcpConnect(srv);
    const t0 = performance.now();
    const at = await withTimeout(s.closeP, 3000, 'close of the silent connection');
    assertAround(at - t0, 'silent connection closed');
    assert.doesNotMatch(s.data.toString('latin1'), /^HTTP\/1\.1 [^4]/, 'nothing but an error may be sent');
  });

  test('an idle keep-alive connection is closed ~300 ms after its last response; a busy one lives on', async () => {
    const s = await tcpConnect(srv);
    // Requests every 150 ms keep it open well past 300 ms in total.
    for (let i = 0; i < 5; i++) {
      s.data = Buffer.alloc(0);
      s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
      await withTimeout(
        (async () => {
          while (!/\r\n\r\n/.test(s.data.toString('latin1'))) await sleep(5);
        })(),
        3000,
        `response ${i}`,
      );
      assert.match(statusLine(s), /^HTTP\/1\.1 200 /);
      if (i < 4) await sleep(150);
    }
    const t0 = performance.now();
    assert.equal(s.destroyed, false, 'closed while busy');
    const at = await withTimeout(s.closeP, 3000, 'close of the idle keep-alive connection');
    assertAround(at - t0, 'idle keep-alive closed');
  });

  test('an upgraded WebSocket is not affected: open past 1.5 s with only the heartbeat, then works', async () => {
    const c = await WireClient.connect(srv);
    const { channel } = await c.attachEcho();
    await sleep(1500);
    assert.equal(c.ended, false, 'the WebSocket was closed');
    assert.ok(c.frames.some((f) => f.text === '2'), 'a heartbeat ping arrived meanwhile');
    assert.equal((await c.request(channel, 'echo', 'late')).payload, 'late');
    // And a raw one that never even sent CONNECT (only pongs) is not cut by the HTTP bound either.
    const t = await TcpWs.connect(srv);
    await t.waitText(/^0\{/);
    await sleep(800);
    assert.equal(t.ended, false, 'an upgraded WebSocket without CONNECT was cut at the HTTP idle bound');
    t.destroy();
    c.destroy();
  });

  test('a held long-poll GET is not cut at 300 ms: it returns the ping at ~1000 ms', async () => {
    const p = new Polling(srv);
    await p.handshake();
    const t0 = performance.now();
    const r = await p.get({ ms: 3000 });
    const took = r.at - (p.openedAt ?? t0);
    assert.equal(r.status, 200, `held GET: ${r.status} ${r.text}`);
    assert.deepEqual(r.packets, ['2']);
    assert.ok(took >= 900 && took < 1600, `the held GET returned after ${took.toFixed(0)} ms, expected the ping at ~1000 ms`);
    // The session goes on: pong, CONNECT, an event round trip.
    await p.postOk('3');
    await p.connectSio();
    await p.postOk('421["x",1]');
    assert.deepEqual(await p.collect(1), ['431[1]']);
  });

  test('socket.io-client over long-polling with 1 s pings lives through 2 s (GETs held across the idle bound)', async () => {
    const s = makeClient(srv.url, { transports: ['polling'] });
    await waitConnect(s);
    let disconnected = null;
    s.on('disconnect', (r) => (disconnected = r));
    await sleep(2000);
    assert.equal(disconnected, null);
    assert.deepEqual(await ackRoundTrip(s, 'x', ['polling idle']), ['polling idle']);
    s.disconnect();
  });
});

describe('origin allow-list for the WebSocket upgrade', () => {
  const GOOD = 'http://good.test';
  const EVIL = 'http://evil.test';

  async function upgradeStatus(srv, origin) {
    const s = await tcpConnect(srv);
    s.write(upgradeRequest(srv, { origin }));
    await withTimeout(
      (async () => {
        while (!/\r\n\r\n/.test(s.data.toString('latin1')) && !s.destroyed) await sleep(5);
      })(),
      3000,
      `upgrade answer for Origin ${origin}`,
    );
    const line = statusLine(s);
    s.destroy();
    return Number(/^HTTP\/1\.1 (\d{3})/.exec(line)?.[1]);
  }

  test(`--origin ${GOOD}: ${EVIL} gets 403, ${GOOD} is upgraded and served`, async () => {
    const srv = await startServer(['--origin', GOOD]);
    assert.equal(await upgradeStatus(srv, EVIL), 403);
    assert.equal(await upgradeStatus(srv, 'http://good.test.evil.test'), 403);
    assert.equal(await upgradeStatus(srv, 'https://good.test'), 403, 'another scheme is another origin');
    assert.equal(await upgradeStatus(srv, GOOD), 101);
    // socket.io-client over WebSocket with each Origin.
    const ok = makeClient(srv.url, { extraHeaders: { Origin: GOOD } });
    await waitConnect(ok);
    assert.deepEqual(await ackRoundTrip(ok, 'x', ['good']), ['good']);
    const bad = makeClient(srv.url, { extraHeaders: { Origin: EVIL } });
    const err = await withTimeout(new Promise((resolve) => bad.once('connect_error', resolve)), 5000, 'connect_error from evil');
    assert.ok(err);
    assert.equal(bad.connected, false);
    bad.disconnect();
    // The refused ones left nothing behind; the good one still works.
    assert.deepEqual(await ackRoundTrip(ok, 'x', ['still']), ['still']);
    ok.disconnect();
    await stopClean(srv);
  });

  test("without --origin another Origin gets 403 before any upgrade; the server's own is upgraded", async () => {
    const srv = await startServer([]);
    assert.equal(await upgradeStatus(srv, EVIL), 403);
    assert.equal(await upgradeStatus(srv, GOOD), 403);
    assert.equal(await upgradeStatus(srv, srv.url), 101);
    assert.equal(await upgradeStatus(srv, undefined), 101);
    const c = makeClient(srv.url, { extraHeaders: { Origin: srv.url } });
    await waitConnect(c);
    assert.deepEqual(await ackRoundTrip(c, 'x', ['own']), ['own']);
    c.disconnect();
    await stopClean(srv);
  });
});
