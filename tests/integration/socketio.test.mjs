// The official socket.io-client 4.8 against the echo server: namespaces, events and acks
// both ways, connect auth accepted and denied, server emit with ack and timeout,
// disconnect both ways, the open packet and the CONNECT reply.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, stopClean, killAll, makeClient, connectClient, waitConnect, waitConnectError,
  ackRoundTrip, assertStillServes, closeClients, closeRaws, openRaw, RawWs, once, sleep,
  withTimeout, clientOptions, Manager,
} from './lib/server.mjs';

after(async () => {
  closeClients();
  closeRaws();
  await killAll();
});

/** Resolves with the args of the next `event` on a socket.io socket. */
function nextEvent(socket, event, ms = 5000) {
  return once(socket, event, ms);
}

describe('default mode (acks echo their args, events come back)', () => {
  let srv;
  before(async () => {
    srv = await startServer();
  });

  describe('cases', { concurrency: true }, () => {
    test('connects to the main namespace with a socket id', async () => {
      const s = await connectClient(srv.url);
      assert.equal(typeof s.id, 'string');
      assert.ok(s.id.length > 0);
      assert.equal(s.nsp, '/');
      s.disconnect();
    });

    test('connects to /custom', async () => {
      const s = await connectClient(`${srv.url}/custom`);
      assert.equal(s.nsp, '/custom');
      assert.ok(s.id);
      assert.deepEqual(await ackRoundTrip(s, 'x', ['in custom']), ['in custom']);
      s.disconnect();
    });

    test('/ and /custom multiplexed on one Engine.IO connection get different socket ids', async () => {
      const m = new Manager(srv.url, clientOptions());
      const a = m.socket('/');
      const b = m.socket('/custom');
      try {
        await Promise.all([waitConnect(a), waitConnect(b)]);
        assert.notEqual(a.id, b.id);
        assert.deepEqual(await ackRoundTrip(a, 'x', ['a']), ['a']);
        assert.deepEqual(await ackRoundTrip(b, 'x', ['b']), ['b']);
      } finally {
        a.disconnect();
        b.disconnect();
      }
    });

    test('unknown namespace /nope gets connect_error "Invalid namespace"', async () => {
      const s = makeClient(`${srv.url}/nope`);
      const err = await waitConnectError(s);
      assert.equal(err.message, 'Invalid namespace');
      s.disconnect();
    });

    test('after an Invalid namespace the same Engine.IO connection still serves "/"', async () => {
      const m = new Manager(srv.url, clientOptions());
      const bad = m.socket('/nope');
      const good = m.socket('/');
      try {
        const [err] = await Promise.all([waitConnectError(bad), waitConnect(good)]);
        assert.equal(err.message, 'Invalid namespace');
        assert.deepEqual(await ackRoundTrip(good, 'x', [1]), [1]);
      } finally {
        bad.disconnect();
        good.disconnect();
      }
    });

    test('emitWithAck("x", 1, {a:2}): the ack carries the same args', async () => {
      const s = await connectClient(srv.url);
      assert.deepEqual(await ackRoundTrip(s, 'x', [1, { a: 2 }]), [1, { a: 2 }]);
      assert.equal(await s.timeout(5000).emitWithAck('x', 1, { a: 2 }), 1);
      s.disconnect();
    });

    test('ack with no arguments is an empty ack', async () => {
      const s = await connectClient(srv.url);
      assert.deepEqual(await ackRoundTrip(s, 'noargs', []), []);
      s.disconnect();
    });

    test('ack preserves JSON values, unicode and key order exactly', async () => {
      const s = await connectClient(srv.url);
      const payload = {
        z: 1, a: [null, true, false, 0, -1.5, 1e21, 'x'], m: { 'ü': 'héllo ✓ 😀', '': '' },
        nested: { deep: { deeper: [[[]], {}] } }, s: 'line\nbreak "quoted" \\ \u0001 \u2028',
      };
      const reply = await ackRoundTrip(s, 'json', [payload, 'second', 3]);
      assert.deepEqual(reply, [payload, 'second', 3]);
      assert.deepEqual(Object.keys(reply[0]), ['z', 'a', 'm', 'nested', 's'], 'key order kept');
      s.disconnect();
    });

    test('numbers JSON.stringify writes as integers beyond int64 (1e19, 2^63, -(2^63), 2^64) round-trip', async () => {
      // JSON.stringify(1e19) === "10000000000000000000": an ordinary JS number the client may send.
      const s = await connectClient(srv.url);
      for (const v of [2 ** 53, 1e19, 2 ** 63, -(2 ** 63), 2 ** 64, 1e21, 1.5e300]) {
        const reply = await ackRoundTrip(s, 'num', [v], 3000).catch((e) => {
          throw new Error(`emitWithAck("num", ${JSON.stringify(v)}) failed (client connected: ${s.connected}): ${e.message}`);
        });
        assert.deepEqual(reply, [v], `number ${JSON.stringify(v)}`);
      }
      s.disconnect();
    });

    test('large payload (200 KB) round trip', async () => {
      const s = await connectClient(srv.url);
      const big = 'abcdefghij'.repeat(20000);
      assert.deepEqual(await ackRoundTrip(s, 'big', [big], 10000), [big]);
      s.disconnect();
    });

    test('100 acks in flight at once each get their own reply', async () => {
      const s = await connectClient(srv.url);
      const replies = await Promise.all(Array.from({ length: 100 }, (_, i) => ackRoundTrip(s, 'many', [i, `n${i}`])));
      replies.forEach((r, i) => assert.deepEqual(r, [i, `n${i}`]));
      s.disconnect();
    });

    test('an event without ack comes back under the same name with the same args', async () => {
      const s = await connectClient(srv.url);
      const p = nextEvent(s, 'hello');
      s.emit('hello', 'world', 42, { k: [1, 2] });
      assert.deepEqual(await p, ['world', 42, { k: [1, 2] }]);
      s.disconnect();
    });

    test('events come back on /custom too, only to the sender', async () => {
      const a = await connectClient(`${srv.url}/custom`);
      const b = await connectClient(`${srv.url}/custom`);
      let bGot = 0;
      b.on('ping-me', () => bGot++);
      const p = nextEvent(a, 'ping-me');
      a.emit('ping-me', 'only a');
      assert.deepEqual(await p, ['only a']);
      await ackRoundTrip(b, 'sync', []);
      assert.equal(bGot, 0, 'the echo went to another client');
      a.disconnect();
      b.disconnect();
    });

    test('"message" is not echoed in default mode', async () => {
      const s = await connectClient(srv.url);
      let got = 0;
      s.on('message', () => got++);
      s.on('message-back', () => got++);
      s.emit('message', { type: 'nothing' });
      await ackRoundTrip(s, 'sync', []);
      await sleep(100);
      assert.equal(got, 0);
      s.disconnect();
    });

    test('auth accepted: a CONNECT with an auth object connects', async () => {
      const s = await connectClient(srv.url, { auth: { token: 'abc', deny: null } });
      assert.deepEqual(await ackRoundTrip(s, 'x', [1]), [1]);
      s.disconnect();
    });

    test('auth denied: connect_error with the message and data {code:"denied"}', async () => {
      const s = makeClient(srv.url, { auth: { deny: 'go away, you are not welcome' } });
      const err = await waitConnectError(s);
      assert.equal(err.message, 'go away, you are not welcome');
      assert.deepEqual(err.data, { code: 'denied' });
      assert.equal(s.connected, false);
      s.disconnect();
    });

    test('auth denied on /custom too', async () => {
      const s = makeClient(`${srv.url}/custom`, { auth: { deny: 'nope' } });
      const err = await waitConnectError(s);
      assert.equal(err.message, 'nope');
      assert.deepEqual(err.data, { code: 'denied' });
      s.disconnect();
    });

    test('server emit with ack: the client answers and the server reports the ack args', async () => {
      const s = await connectClient(srv.url);
      s.on('question', (payload, cb) => {
        assert.deepEqual(payload, { q: 'life', n: [4, 2] });
        cb('answer', 42, payload);
      });
      const result = nextEvent(s, 'ask:result');
      s.emit('ask', 'question', { q: 'life', n: [4, 2] }, 3000);
      assert.deepEqual(await result, [{ status: 'ok', args: ['answer', 42, { q: 'life', n: [4, 2] }] }]);
      s.disconnect();
    });

    test('server emit with ack on /custom', async () => {
      const s = await connectClient(`${srv.url}/custom`);
      s.on('q', (payload, cb) => cb(payload));
      const result = nextEvent(s, 'ask:result');
      s.emit('ask', 'q', 'in custom', 3000);
      assert.deepEqual(await result, [{ status: 'ok', args: ['in custom'] }]);
      s.disconnect();
    });

    test('server emit with ack times out when the client never answers; a late ack is ignored', async () => {
      const s = await connectClient(srv.url);
      let lateCb;
      let received;
      s.on('silent', (payload, cb) => {
        received = payload;
        lateCb = cb;
      });
      const result = nextEvent(s, 'ask:result', 5000);
      const t0 = performance.now();
      s.emit('ask', 'silent', { x: 1 }, 300);
      assert.deepEqual(await result, [{ status: 'timeout' }]);
      const elapsed = performance.now() - t0;
      assert.deepEqual(received, { x: 1 });
      assert.ok(elapsed >= 250 && elapsed < 2000, `timeout reported after ${elapsed.toFixed(0)} ms, expected ~300`);
      // Answering after the timeout must not produce a second result nor disturb the connection.
      let extra = 0;
      s.on('ask:result', () => extra++);
      lateCb('too late');
      assert.deepEqual(await ackRoundTrip(s, 'x', ['after late ack']), ['after late ack']);
      await sleep(100);
      assert.equal(extra, 0, 'a second ask:result arrived after the timeout');
      s.disconnect();
    });

    test('several server acks pending at once resolve independently', async () => {
      const s = await connectClient(srv.url);
      const cbs = new Map();
      s.on('multi', (payload, cb) => cbs.set(payload, cb));
      const results = [];
      s.on('ask:result', (r) => results.push(r));
      for (let i = 0; i < 5; i++) s.emit('ask', 'multi', i, 5000);
      await withTimeout((async () => { while (cbs.size < 5) await sleep(10); })(), 5000, 'five asks');
      for (const i of [3, 1, 4, 0, 2]) cbs.get(i)(`r${i}`);
      await withTimeout((async () => { while (results.length < 5) await sleep(10); })(), 5000, 'five results');
      assert.deepEqual(results, ['r3', 'r1', 'r4', 'r0', 'r2'].map((r) => ({ status: 'ok', args: [r] })));
      s.disconnect();
    });

    test('client disconnect(): the server keeps serving other clients', async () => {
      const a = await connectClient(srv.url);
      const b = await connectClient(srv.url);
      const reason = nextEvent(a, 'disconnect');
      a.disconnect();
      assert.equal((await reason)[0], 'io client disconnect');
      assert.equal(a.connected, false);
      await assertStillServes(b);
      b.disconnect();
    });

    test('client disconnects one namespace, the other on the same connection keeps working', async () => {
      const m = new Manager(srv.url, clientOptions());
      const a = m.socket('/');
      const b = m.socket('/custom');
      try {
        await Promise.all([waitConnect(a), waitConnect(b)]);
        b.disconnect();
        await sleep(50);
        assert.deepEqual(await ackRoundTrip(a, 'x', ['still']), ['still']);
        b.connect();
        await waitConnect(b);
        assert.deepEqual(await ackRoundTrip(b, 'x', ['again']), ['again']);
      } finally {
        a.disconnect();
        b.disconnect();
      }
    });

    test('server disconnect ("bye"): client sees "io server disconnect", others keep working', async () => {
      const a = await connectClient(srv.url);
      const b = await connectClient(srv.url);
      const reason = nextEvent(a, 'disconnect');
      a.emit('bye');
      assert.equal((await reason)[0], 'io server disconnect');
      await assertStillServes(b);
      b.disconnect();
    });

    test('server disconnect of /custom leaves / on the same connection connected', async () => {
      const m = new Manager(srv.url, clientOptions());
      const a = m.socket('/');
      const b = m.socket('/custom');
      try {
        await Promise.all([waitConnect(a), waitConnect(b)]);
        const reason = nextEvent(b, 'disconnect');
        b.emit('bye');
        assert.equal((await reason)[0], 'io server disconnect');
        assert.equal(a.connected, true);
        assert.deepEqual(await ackRoundTrip(a, 'x', ['main alive']), ['main alive']);
      } finally {
        a.disconnect();
        b.disconnect();
      }
    });

    test('raw: server disconnect sends exactly "41" for / and "41/custom," for /custom', async () => {
      const raw = await openRaw(srv);
      raw.send('42["bye"]');
      await raw.waitFrame('41');
      const raw2 = await openRaw(srv, { nsp: '/custom' });
      raw2.send('42/custom,["bye"]');
      await raw2.waitFrame('41/custom,');
      raw.terminate();
      raw2.terminate();
    });

    test('open packet: exactly sid, upgrades [], defaults 25000/20000 and maxPayload 1 MiB', async () => {
      const raw = new RawWs(srv);
      const open = await raw.handshake();
      assert.deepEqual(Object.keys(open).sort(), ['maxPayload', 'pingInterval', 'pingTimeout', 'sid', 'upgrades']);
      assert.equal(typeof open.sid, 'string');
      assert.match(open.sid, /^[A-Za-z0-9_-]{8,}$/);
      assert.deepEqual(open.upgrades, []);
      assert.equal(open.pingInterval, 25000);
      assert.equal(open.pingTimeout, 20000);
      // Issue 2: the maximum message size defaults to 1 MiB, and maxPayload advertises it.
      assert.equal(open.maxPayload, 1048576);
      assert.equal(raw.frames[0][0], '0', 'the open packet is the first frame');
      raw.terminate();
    });

    test('CONNECT reply is {"sid": ...} only, different from the Engine.IO sid; sids are unique', async () => {
      const raws = await Promise.all(Array.from({ length: 5 }, () => openRaw(srv)));
      const eio = new Set();
      const sio = new Set();
      for (const r of raws) {
        assert.deepEqual(Object.keys(r.connect), ['sid']);
        assert.equal(typeof r.connect.sid, 'string');
        assert.ok(r.connect.sid.length > 0);
        assert.notEqual(r.connect.sid, r.open.sid);
        eio.add(r.open.sid);
        sio.add(r.connect.sid);
        r.terminate();
      }
      assert.equal(eio.size, 5, 'Engine.IO sids repeat');
      assert.equal(sio.size, 5, 'Socket.IO sids repeat');
    });

    test('raw: ack frame bytes are 43<id>[args] (compact JSON)', async () => {
      const raw = await openRaw(srv);
      raw.send('4217["x",1,{"a":2}]');
      await raw.waitFrame('4317[1,{"a":2}]');
      raw.terminate();
    });

    test('raw: server JSON is compact and keeps key order', async () => {
      const raw = await openRaw(srv);
      raw.send('4212[ "x" , {"z":1, "a":2,"m":[1,{"y":0,"b":1}], "":"","n":null,"t":true} ]');
      await raw.waitFrame('4312[{"z":1,"a":2,"m":[1,{"y":0,"b":1}],"":"","n":null,"t":true}]');
      raw.send('42["order",{"b":1,"a":2}]');
      await raw.waitFrame('42["order",{"b":1,"a":2}]');
      raw.terminate();
    });

    test('client disconnects while a server ack is pending: no result, server keeps serving', async () => {
      const a = await connectClient(srv.url);
      const b = await connectClient(srv.url);
      const asked = nextEvent(a, 'pending-q');
      a.emit('ask', 'pending-q', 'never answered', 10000);
      await asked;
      a.disconnect();
      await sleep(100);
      await assertStillServes(b);
      b.disconnect();
    });

    test('raw: namespace CONNECT without trailing comma ("40/custom") is accepted', async () => {
      const raw = await openRaw(srv, { nsp: null });
      raw.send('40/custom');
      await raw.waitFrame(/^40\/custom,\{"sid":"[^"]+"\}$/);
      raw.send('42/custom,5["x"]');
      await raw.waitFrame('43/custom,5[]');
      raw.terminate();
    });
  });

  test('server exits 0 on SIGTERM (no leaks)', async () => {
    closeClients();
    await stopClean(srv);
  });
});

describe('--socketio-echo mode', () => {
  let srv;
  before(async () => {
    srv = await startServer(['--socketio-echo']);
  });

  describe('cases', { concurrency: true }, () => {
    test('on connect the server emits "auth" with the CONNECT auth object', async () => {
      const s = makeClient(srv.url, { auth: { token: 'abc', n: [1, { x: null }] } });
      const auth = nextEvent(s, 'auth');
      await waitConnect(s);
      assert.deepEqual(await auth, [{ token: 'abc', n: [1, { x: null }] }]);
      s.disconnect();
    });

    test('"auth" is {} when the client sent no auth', async () => {
      const s = makeClient(srv.url);
      const auth = nextEvent(s, 'auth');
      await waitConnect(s);
      assert.deepEqual(await auth, [{}]);
      s.disconnect();
    });

    test('"auth" is emitted on /custom too', async () => {
      const s = makeClient(`${srv.url}/custom`, { auth: { who: 'custom' } });
      const auth = nextEvent(s, 'auth');
      await waitConnect(s);
      assert.deepEqual(await auth, [{ who: 'custom' }]);
      s.disconnect();
    });

    test('message -> message-back with the same args', async () => {
      const s = await connectClient(srv.url);
      const back = nextEvent(s, 'message-back');
      const env = { type: 'channel_message', channel: 'c1', event: 'e', payload: { a: [1, 'ü'] } };
      s.emit('message', env, 'second');
      assert.deepEqual(await back, [env, 'second']);
      s.disconnect();
    });

    test('message -> message-back on /custom', async () => {
      const s = await connectClient(`${srv.url}/custom`);
      const back = nextEvent(s, 'message-back');
      s.emit('message', { type: 'x' });
      assert.deepEqual(await back, [{ type: 'x' }]);
      s.disconnect();
    });

    test('unknown namespace still gets "Invalid namespace"', async () => {
      const s = makeClient(`${srv.url}/nope`);
      const err = await waitConnectError(s);
      assert.equal(err.message, 'Invalid namespace');
      s.disconnect();
    });

    test('acks are still answered with their args', async () => {
      const s = await connectClient(srv.url);
      assert.deepEqual(await ackRoundTrip(s, 'x', [1, { a: 2 }]), [1, { a: 2 }]);
      s.disconnect();
    });
  });

  test('server exits 0 on SIGTERM (no leaks)', async () => {
    closeClients();
    await stopClean(srv);
  });
});

describe('server flags', { concurrency: true }, () => {
  test('open packet reflects --ping-interval, --ping-timeout, --max-payload', async () => {
    const srv = await startServer(['--ping-interval', '1234', '--ping-timeout', '567', '--max-payload', '4321']);
    const raw = new RawWs(srv);
    const open = await raw.handshake();
    assert.deepEqual(Object.keys(open).sort(), ['maxPayload', 'pingInterval', 'pingTimeout', 'sid', 'upgrades']);
    assert.deepEqual(open.upgrades, []);
    assert.equal(open.pingInterval, 1234);
    assert.equal(open.pingTimeout, 567);
    assert.equal(open.maxPayload, 4321);
    raw.terminate();
    await stopClean(srv);
  });

  test('--path /rt/ moves the endpoint; /socket.io/ is then not it', async () => {
    const srv = await startServer(['--path', '/rt/']);
    const s = await connectClient(srv.url, { path: '/rt/' });
    assert.deepEqual(await ackRoundTrip(s, 'x', ['rt']), ['rt']);
    const wrong = makeClient(srv.url);
    await waitConnectError(wrong);
    wrong.disconnect();
    s.disconnect();
    await stopClean(srv);
  });
});
