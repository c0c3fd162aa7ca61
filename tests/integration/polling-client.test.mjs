// The official socket.io-client 4.8.4 over long-polling (issue 8): default transports
// (polling, then the upgrade to WebSocket), `transports: ["polling"]`, and `upgrade: false`.
// For each: connect, auth, events and acks both ways, server emit with ack, binary events and
// acks, bursts, large payloads, disconnect both ways. Then reconnection after the server drops
// a polling session: a server restart on the same port, and a ping timeout with a paused engine.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, stopClean, killAll, makeClient, waitConnect, waitConnectError, ackRoundTrip,
  closeClients, closeTcp, once, sleep, withTimeout,
} from './lib/server.mjs';
import { send, eioTarget, assertEioError, MESSAGES, closePollConns } from './lib/polling.mjs';

after(async () => {
  closeClients();
  closeTcp();
  closePollConns();
  await killAll();
});

const MODES = {
  'default transports (polling, then upgrade to websocket)': { opts: { transports: undefined }, upgrades: true },
  'transports: ["polling"]': { opts: { transports: ['polling'] }, upgrades: false },
  'upgrade: false': { opts: { transports: undefined, upgrade: false }, upgrades: false },
};

/** Buffers, ArrayBuffers and typed arrays as { bin: [...] } so that deepEqual compares bytes. */
function norm(v) {
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return { bin: [...v] };
  if (v instanceof ArrayBuffer) return { bin: [...new Uint8Array(v)] };
  if (Array.isArray(v)) return v.map(norm);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, norm(x)]));
  return v;
}

/**
 * A client in `mode`; resolves once connected and, for upgrading modes, once on WebSocket.
 * Records the transport at connect time and every upgrade.
 */
async function client(srv, mode, extra = {}) {
  const s = makeClient(srv.url, { ...mode.opts, ...extra });
  const engine = s.io.engine;
  s.upgrades = [];
  engine.on('upgrade', (t) => s.upgrades.push(t.name));
  s.firstTransport = engine.transport.name;
  await waitConnect(s);
  if (mode.upgrades && engine.transport.name !== 'websocket') {
    await once(engine, 'upgrade', 5000);
  }
  return s;
}

/** Waits until a raw polling GET with `sid` gets 400 code 1 (the server forgot the session). */
async function assertSessionGone(srv, sid, ms = 2000) {
  const deadline = performance.now() + ms;
  let r;
  for (;;) {
    r = await send(srv, 'GET', eioTarget({ sid }));
    if (r.status === 400 && JSON.parse(r.text).code === 1) break;
    if (performance.now() > deadline) break;
    await sleep(50);
  }
  assertEioError(r, 400, 1, MESSAGES[1], `Engine.IO session ${sid} after the disconnect`);
}

for (const [modeName, mode] of Object.entries(MODES)) {
  describe(`socket.io-client, ${modeName}`, () => {
    let srv;
    let sioEcho;
    before(async () => {
      srv = await startServer();
      sioEcho = await startServer(['--socketio-echo']);
    });
    after(async () => {
      closeClients();
      await stopClean(srv);
      await stopClean(sioEcho, '--socketio-echo server');
    });

    describe('cases', { concurrency: true }, () => {
      test('connects; the transport is right throughout', async () => {
        const s = await client(srv, mode);
        assert.equal(s.firstTransport, 'polling', 'the first transport must be polling');
        assert.ok(s.id);
        assert.notEqual(s.id, s.io.engine.id, 'socket id equals the Engine.IO sid');
        assert.deepEqual(await ackRoundTrip(s, 'x', ['a', 1]), ['a', 1]);
        await sleep(300); // give a wrongly allowed upgrade time to happen
        if (mode.upgrades) {
          assert.equal(s.io.engine.transport.name, 'websocket');
          assert.deepEqual(s.upgrades, ['websocket'], 'exactly one upgrade event');
        } else {
          assert.equal(s.io.engine.transport.name, 'polling');
          assert.deepEqual(s.upgrades, [], 'no upgrade may happen');
        }
        assert.deepEqual(await ackRoundTrip(s, 'y', [{ b: [2] }]), [{ b: [2] }]);
        s.disconnect();
      });

      test('auth object reaches the server (--socketio-echo emits it back); deny -> connect_error with data', async () => {
        const s = makeClient(sioEcho.url, { ...mode.opts, auth: { token: 'abc', n: [1, 2], u: 'é✓' } });
        const authEv = once(s, 'auth');
        await waitConnect(s);
        assert.deepEqual((await authEv)[0], { token: 'abc', n: [1, 2], u: 'é✓' });
        s.disconnect();
        const d = makeClient(srv.url, { ...mode.opts, auth: { deny: 'go away' } });
        const err = await waitConnectError(d);
        assert.equal(err.message, 'go away');
        assert.deepEqual(err.data, { code: 'denied' });
        d.disconnect();
      });

      test('events come back; acks echo their args (callback and emitWithAck)', async () => {
        const s = await client(srv, mode);
        const ev = once(s, 'hello');
        s.emit('hello', 'world', { n: 1, arr: [true, null] });
        assert.deepEqual(await ev, ['world', { n: 1, arr: [true, null] }]);
        assert.deepEqual(await ackRoundTrip(s, 'x', [1, 'two', { three: 3 }]), [1, 'two', { three: 3 }]);
        assert.equal(await s.timeout(5000).emitWithAck('z', 'first', 'second'), 'first');
        s.disconnect();
      });

      test('a burst of 200 acked emits resolves in order (batched POSTs and GETs)', async () => {
        const s = await client(srv, mode);
        const order = [];
        await withTimeout(
          Promise.all(Array.from({ length: 200 }, (_, i) =>
            new Promise((resolve) => s.emit('n', i, (v) => { order.push(v); resolve(); })))),
          10000, '200 acks',
        );
        assert.deepEqual(order, Array.from({ length: 200 }, (_, i) => i));
        s.disconnect();
      });

      test('emits right after connect (during the transport set-up) all come back in order', async () => {
        const s = makeClient(srv.url, mode.opts);
        const got = [];
        s.on('seq', (i) => got.push(i));
        for (let i = 0; i < 50; i++) s.emit('seq', i);
        await waitConnect(s);
        const deadline = performance.now() + 5000;
        while (got.length < 50 && performance.now() < deadline) await sleep(20);
        assert.deepEqual(got, Array.from({ length: 50 }, (_, i) => i));
        s.disconnect();
      });

      test('a 300 KB string round trip', async () => {
        const s = await client(srv, mode);
        const big = 'ab✓'.repeat(100000);
        assert.deepEqual(await ackRoundTrip(s, 'big', [big], 10000), [big]);
        s.disconnect();
      });

      test('server emit with ack: ask -> client acks -> ask:result ok; no answer -> timeout', async () => {
        const s = await client(srv, mode);
        s.on('question', (payload, cb) => cb('answer', payload));
        const r1 = once(s, 'ask:result');
        s.emit('ask', 'question', { q: 1 }, 3000);
        assert.deepEqual((await r1)[0], { status: 'ok', args: ['answer', { q: 1 }] });
        s.on('ignored', () => {});
        const r2 = once(s, 'ask:result');
        s.emit('ask', 'ignored', null, 200);
        assert.deepEqual((await r2)[0], { status: 'timeout' });
        s.disconnect();
      });

      test('binary: emitWithAck("bin", <01 02 03>) resolves to equal bytes', async () => {
        const s = await client(srv, mode);
        const r = await s.timeout(5000).emitWithAck('bin', Buffer.from([1, 2, 3]));
        assert.deepEqual(norm(r), { bin: [1, 2, 3] });
        s.disconnect();
      });

      test('binary: an event with 2 nested buffers comes back with both, in order', async () => {
        const s = await client(srv, mode);
        const ev = once(s, 'bin2');
        s.emit('bin2', { a: Buffer.from([1, 2]), meta: 'x' }, [Buffer.from([3, 4, 255]), 5]);
        assert.deepEqual(norm(await ev), [{ a: { bin: [1, 2] }, meta: 'x' }, [{ bin: [3, 4, 255] }, 5]]);
        s.disconnect();
      });

      test('binary: 10 attachments (the maximum) in one ack', async () => {
        const s = await client(srv, mode);
        const blobs = Array.from({ length: 10 }, (_, i) => Buffer.from([i, 255 - i, i * 7 % 256]));
        const reply = await ackRoundTrip(s, 'ten', [{ list: blobs }]);
        assert.deepEqual(norm(reply), [{ list: blobs.map((b) => ({ bin: [...b] })) }]);
        s.disconnect();
      });

      test('binary both ways through ask: the server asks with a blob, the client acks with a blob', async () => {
        const s = await client(srv, mode);
        s.on('binq', (payload, cb) => cb(Buffer.from([7, 7]), { echo: payload }));
        const r = once(s, 'ask:result');
        s.emit('ask', 'binq', Buffer.from([9, 8, 0]), 3000);
        const [result] = await r;
        assert.deepEqual(norm(result), { status: 'ok', args: [{ bin: [7, 7] }, { echo: { bin: [9, 8, 0] } }] });
        s.disconnect();
      });

      test('a 200 KB binary round trip', async () => {
        const s = await client(srv, mode);
        const big = Buffer.alloc(200000, 0);
        for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 255;
        const r = await s.timeout(10000).emitWithAck('bigbin', big);
        assert.ok(Buffer.from(r).equals(big), 'the 200 KB blob came back different');
        s.disconnect();
      });

      test('bye -> the server disconnects: reason "io server disconnect", Engine.IO session gone', async () => {
        const s = await client(srv, mode);
        const sid = s.io.engine.id;
        const d = once(s, 'disconnect');
        s.emit('bye');
        const [reason] = await d;
        assert.equal(reason, 'io server disconnect');
        assert.equal(s.connected, false);
        await assertSessionGone(srv, sid);
      });

      test('client disconnect() -> the server forgets the Engine.IO session', async () => {
        const s = await client(srv, mode);
        const sid = s.io.engine.id;
        s.disconnect();
        await assertSessionGone(srv, sid);
      });

      test('/custom and / multiplexed on one polling session', async () => {
        const a = await client(srv, mode);
        const b = a.io.socket('/custom');
        await waitConnect(b);
        assert.notEqual(a.id, b.id);
        assert.deepEqual(await ackRoundTrip(b, 'x', ['b']), ['b']);
        assert.deepEqual(await ackRoundTrip(a, 'x', ['a']), ['a']);
        b.disconnect();
        assert.deepEqual(await ackRoundTrip(a, 'x', ['still']), ['still']);
        a.disconnect();
      });
    });
  });
}

describe('reconnection after the server drops a polling session', () => {
  for (const [modeName, mode] of Object.entries(MODES).filter(([, m]) => !m.upgrades)) {
    test(`${modeName}: the server restarts on the same port -> the client reconnects`, async () => {
      const srvA = await startServer();
      const port = srvA.port;
      const s = makeClient(srvA.url, {
        ...mode.opts, reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 300, randomizationFactor: 0,
      });
      await waitConnect(s);
      assert.deepEqual(await ackRoundTrip(s, 'x', ['before']), ['before']);
      const id1 = s.id;
      const eid1 = s.io.engine.id;
      await sleep(50); // the client's next GET is held
      const disc = once(s, 'disconnect', 5000);
      await stopClean(srvA, 'first server');
      const [reason] = await disc;
      assert.ok(['transport close', 'transport error'].includes(reason), `disconnect reason ${reason}`);
      const srvB = await startServer(['--port', String(port)]);
      assert.equal(srvB.port, port);
      try {
        await withTimeout(new Promise((resolve) => s.once('connect', resolve)), 8000, 'reconnect');
        assert.equal(s.io.engine.transport.name, 'polling');
        assert.notEqual(s.id, id1);
        assert.notEqual(s.io.engine.id, eid1);
        assert.deepEqual(await ackRoundTrip(s, 'x', ['after']), ['after']);
      } finally {
        s.disconnect();
        await stopClean(srvB, 'second server');
      }
    });
  }

  test('transports: ["polling"]: the server drops the session by ping timeout (engine paused) -> reconnect', async () => {
    const srv = await startServer(['--ping-interval', '300', '--ping-timeout', '200']);
    const s = makeClient(srv.url, {
      transports: ['polling'], reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 300, randomizationFactor: 0,
    });
    try {
      await waitConnect(s);
      const id1 = s.id;
      const eid1 = s.io.engine.id;
      const reasons = [];
      s.on('disconnect', (r) => reasons.push(r));
      const pausedAt = performance.now();
      s.io.engine.transport.pause(() => {});
      // The client stops polling: it never sees the next ping, so never pongs; the server must
      // drop the session at pingInterval + pingTimeout.
      await sleep(700);
      await assertSessionGone(srv, eid1, 500);
      await withTimeout(new Promise((resolve) => s.once('connect', resolve)), 8000, 'reconnect after the ping timeout');
      assert.ok(reasons.length >= 1, 'no disconnect seen');
      assert.ok(['ping timeout', 'transport close', 'transport error'].includes(reasons[0]), `disconnect reason ${reasons[0]}`);
      assert.notEqual(s.id, id1);
      assert.notEqual(s.io.engine.id, eid1);
      assert.equal(s.io.engine.transport.name, 'polling');
      assert.deepEqual(await ackRoundTrip(s, 'x', ['back']), ['back']);
      assert.ok(performance.now() - pausedAt < 5000);
    } finally {
      s.disconnect();
      await stopClean(srv);
    }
  });

  test('an idle polling client with 300/200 ms heartbeat stays connected for 2 s (pongs over POST)', async () => {
    const srv = await startServer(['--ping-interval', '300', '--ping-timeout', '200']);
    const s = makeClient(srv.url, { transports: ['polling'] });
    try {
      await waitConnect(s);
      let pings = 0;
      s.io.on('ping', () => pings++);
      const reasons = [];
      s.on('disconnect', (r) => reasons.push(r));
      await sleep(2000);
      assert.deepEqual(reasons, []);
      assert.ok(pings >= 4, `${pings} pings in 2 s`);
      assert.deepEqual(await ackRoundTrip(s, 'x', ['idle']), ['idle']);
    } finally {
      s.disconnect();
      await stopClean(srv);
    }
  });
});
