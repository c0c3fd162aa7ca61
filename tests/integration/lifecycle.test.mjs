// Process lifecycle: graceful shutdown on SIGTERM/SIGINT with clients connected (every
// WebSocket closed with 1001, exit 0, no leaks), and many socket.io clients at once.
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  startServer, stopClean, assertCleanExit, killAll, connectClient, makeClient, waitConnect,
  ackRoundTrip, closeClients, closeRaws, closeTcp, openRaw, RawWs, HttpConn, TcpWs, request,
  once, withTimeout, sleep,
} from './lib/server.mjs';

after(async () => {
  closeClients();
  closeRaws();
  closeTcp();
  await killAll();
});

/** Resolves true if a TCP connect to host:port is refused. */
function connectRefused(host, port) {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', () => resolve(true));
  });
}

describe('graceful shutdown', { concurrency: true }, () => {
  test('SIGTERM with clients connected: WebSockets closed with 1001, exit 0', async () => {
    const srv = await startServer();
    const clients = await Promise.all([
      connectClient(srv.url),
      connectClient(srv.url),
      connectClient(`${srv.url}/custom`),
    ]);
    const reasons = clients.map((c) => once(c, 'disconnect', 10000));
    const raws = await Promise.all([openRaw(srv), openRaw(srv, { nsp: '/custom' }), openRaw(srv, { nsp: null })]);
    // One raw client in the middle of a fragmented message, one with a server ack pending.
    raws[0].send('42["half', { fin: false });
    raws[1].send('42/custom,["ask","q","x",10000]');
    await raws[1].waitFrame(/^42\/custom,\d+\["q","x"\]$/);
    const result = await srv.stop('SIGTERM');
    for (const r of raws) {
      const { code } = await r.waitClose(5000);
      assert.equal(code, 1001, `raw WebSocket closed with ${code}, expected 1001 (going away)`);
    }
    for (const p of reasons) {
      const [reason] = await p;
      assert.equal(reason, 'transport close');
    }
    assertCleanExit(result);
    assert.ok(await connectRefused(srv.host, srv.port), 'port still accepting after exit');
  });

  test('the close frame is the last thing: TCP is closed after 1001', async () => {
    const srv = await startServer();
    const c = await (await TcpWs.connect(srv)).engineAndConnect();
    const stopped = srv.stop('SIGTERM');
    const got = await c.waitCloseFrame(5000);
    assert.equal(got.code, 1001);
    await c.waitEnd(5000);
    assertCleanExit(await stopped);
  });

  test('SIGINT does the same as SIGTERM', async () => {
    const srv = await startServer();
    const raw = await openRaw(srv);
    const result = await srv.stop('SIGINT');
    const { code } = await raw.waitClose(5000);
    assert.equal(code, 1001);
    assertCleanExit(result);
  });

  test('shutdown with idle HTTP keep-alive, half-sent requests and silent TCP connections exits promptly', async () => {
    const srv = await startServer();
    const ka = await HttpConn.connect(srv);
    await ka.write(request('GET', '/healthz'));
    assert.equal((await ka.readResponse()).status, 200);
    const half = await HttpConn.connect(srv);
    await half.write('GET /healthz HTTP/1.1\r\nHost: x\r\n');
    const silent = await HttpConn.connect(srv);
    const halfUpgrade = await HttpConn.connect(srv);
    await halfUpgrade.write('GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nUpgrade: websocket\r\n');
    const t0 = performance.now();
    const result = await srv.stop('SIGTERM');
    assertCleanExit(result);
    assert.ok(performance.now() - t0 < 5000, `shutdown took ${(performance.now() - t0).toFixed(0)} ms`);
    await Promise.all([ka.waitEnd(), half.waitEnd(), silent.waitEnd(), halfUpgrade.waitEnd()]);
  });

  test('shutdown with a client that stopped reading (full socket buffers) still exits', async () => {
    const srv = await startServer();
    const c = await (await TcpWs.connect(srv)).engineAndConnect();
    c.sock.pause(); // stop reading: the server's output backs up
    const big = `42["flood","${'f'.repeat(60000)}"]`;
    for (let i = 0; i < 100; i++) c.sendText(big);
    await sleep(300);
    const result = await srv.stop('SIGTERM', 15000);
    assertCleanExit(result);
    c.destroy();
  });

  test('a socket.io client can reconnect to a new server on the same port after a restart', async () => {
    const srv = await startServer();
    const s = makeClient(srv.url, { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 200 });
    await waitConnect(s);
    const firstId = s.id;
    const down = once(s, 'disconnect', 10000);
    assertCleanExit(await srv.stop('SIGTERM'));
    assert.equal((await down)[0], 'transport close');
    const again = await startServer(['--port', String(srv.port)]);
    try {
      await withTimeout(new Promise((resolve) => s.once('connect', resolve)), 10000, 'reconnect');
      assert.notEqual(s.id, firstId);
      assert.deepEqual(await ackRoundTrip(s, 'x', ['back']), ['back']);
    } finally {
      s.disconnect();
    }
    await stopClean(again);
  });
});

describe('many clients', () => {
  test('200 socket.io clients x 10 emitWithAck round trips, all disconnect, server exits 0', { timeout: 120000 }, async () => {
    const srv = await startServer();
    const N = 200;
    const ROUNDS = 10;
    const sockets = [];
    // Connect in batches so the accept backlog is not the thing under test.
    for (let i = 0; i < N; i += 50) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(50, N - i) }, (_, j) =>
          connectClient(i + j < N / 2 ? srv.url : `${srv.url}/custom`, { timeout: 30000 }),
        ),
      );
      sockets.push(...batch);
    }
    assert.equal(sockets.length, N);
    assert.equal(new Set(sockets.map((s) => s.id)).size, N, 'socket ids are not unique');
    await Promise.all(
      sockets.map(async (s, i) => {
        for (let r = 0; r < ROUNDS; r++) {
          const reply = await ackRoundTrip(s, 'load', [i, r, { who: s.id }], 30000);
          assert.deepEqual(reply, [i, r, { who: s.id }]);
        }
      }),
    );
    // Server-to-client traffic for everyone at once, too.
    await Promise.all(
      sockets.map(async (s, i) => {
        const p = once(s, 'bcast', 30000);
        s.emit('bcast', i);
        assert.deepEqual(await p, [i]);
      }),
    );
    const gone = sockets.map((s) => once(s, 'disconnect', 10000));
    for (const s of sockets) s.disconnect();
    await Promise.all(gone);
    // Let the server see every close before it is stopped.
    await sleep(500);
    const h = await HttpConn.connect(srv);
    await h.write(request('GET', '/healthz'));
    assert.equal((await h.readResponse()).status, 200);
    h.destroy();
    await stopClean(srv);
  });

  test('300 raw connections that vanish without a close handshake are all cleaned up', { timeout: 60000 }, async () => {
    const srv = await startServer();
    const raws = await Promise.all(Array.from({ length: 300 }, async () => {
      const r = new RawWs(srv);
      await r.handshake(15000);
      r.send('40');
      await r.waitFrame(/^40\{/, 15000);
      return r;
    }));
    for (const r of raws) r.terminate();
    await sleep(500);
    const s = await connectClient(srv.url);
    assert.deepEqual(await ackRoundTrip(s, 'x', ['after churn']), ['after churn']);
    s.disconnect();
    await sleep(100);
    await stopClean(srv);
  });
});
