// Engine.IO long-polling over raw HTTP, byte-exact (issue 8; SOCKETIO.md §2.1, §2.3, §2.6):
// handshake and open packet, POST/GET with Socket.IO packets, batching with \x1e, held GETs,
// the error table, octet-stream and oversized bodies, duplicate and aborted GETs, client
// close, invalid packets, binary packets as base64, heartbeat timing (300/200 ms), and
// shutdown with a held GET.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, stopClean, killAll, closeClients, closeTcp, connectClient, assertStillServes, sleep, RawWs,
} from './lib/server.mjs';
import {
  Polling, send, startRequest, eioTarget, assertEioError, MESSAGES, SEP, OPEN_RE, TEXT_PLAIN,
  closePollConns, openConn, b64packet, ph, rawRequest,
} from './lib/polling.mjs';

after(async () => {
  closeClients();
  closeTcp();
  closePollConns();
  await killAll();
});

/** Asserts that a GET with nothing queued is held for at least `ms`. */
async function assertHeld(g, ms = 150, what = 'GET') {
  const early = await Promise.race([g.res.then((r) => r), sleep(ms).then(() => null)]);
  assert.equal(early, null, `${what} was answered at once: ${early && `${early.status} ${JSON.stringify(early.text)}`}`);
}

describe('long-polling over raw HTTP (defaults)', () => {
  let srv;
  let witness;
  before(async () => {
    srv = await startServer();
    witness = await connectClient(srv.url);
  });
  after(async () => {
    closeClients();
    await stopClean(srv);
  });

  /** A bad-input case: afterwards the already-connected socket.io client must still be served. */
  const badTest = (name, fn) =>
    test(name, async () => {
      await fn();
      await assertStillServes(witness);
    });

  describe('cases', { concurrency: true }, () => {
    test('handshake: 200 text/plain; charset=UTF-8, exactly the five keys, fresh URL-safe sids', async () => {
      const r = await send(srv, 'GET', '/socket.io/?EIO=4&transport=polling&t=x');
      assert.equal(r.status, 200);
      assert.equal(r.headers['content-type'], 'text/plain; charset=UTF-8');
      assert.equal(Number(r.headers['content-length']), r.body.length);
      assert.match(r.headers['cache-control'] || '', /no-store/);
      const m = OPEN_RE.exec(r.text);
      assert.ok(m, `not the exact open packet: ${JSON.stringify(r.text)}`);
      const open = JSON.parse(r.text.slice(1));
      assert.deepEqual(Object.keys(open), ['sid', 'upgrades', 'pingInterval', 'pingTimeout', 'maxPayload']);
      assert.deepEqual(open.upgrades, ['websocket']);
      assert.equal(open.pingInterval, 25000);
      assert.equal(open.pingTimeout, 20000);
      assert.equal(open.maxPayload, 1048576);
      const sids = new Set([open.sid]);
      for (let i = 0; i < 20; i++) {
        const p = new Polling(srv);
        sids.add((await p.handshake()).sid);
      }
      assert.equal(sids.size, 21, 'sids are not unique');
    });

    test('query keys in any order, with extra keys, still open a session', async () => {
      const r = await send(srv, 'GET', '/socket.io/?foo=bar&transport=polling&x=%20y&EIO=4&t=abc');
      assert.equal(r.status, 200);
      assert.match(r.text, OPEN_RE);
    });

    test('POST 40 -> 200 "ok" text/html, then GET -> exactly 40{"sid":...} (not the Engine.IO sid)', async () => {
      const p = new Polling(srv);
      await p.handshake();
      const r = await p.post('40');
      assert.equal(r.status, 200);
      assert.equal(r.text, 'ok');
      assert.equal(r.headers['content-type'], 'text/html');
      assert.equal(r.headers['content-length'], '2');
      const g = await p.get();
      assert.equal(g.status, 200);
      assert.equal(g.headers['content-type'], 'text/plain; charset=UTF-8');
      assert.match(g.text, /^40\{"sid":"[A-Za-z0-9_-]+"\}$/);
      const reply = JSON.parse(g.text.slice(2));
      assert.deepEqual(Object.keys(reply), ['sid']);
      assert.notEqual(reply.sid, p.sid, 'the Socket.IO id must differ from the Engine.IO sid');
    });

    test('events and acks: 42 comes back, 4217[ev,...args] is acked as 4317[...args]', async () => {
      const p = new Polling(srv);
      await p.handshake();
      await p.connectSio();
      await p.postOk('42["hello","world",{"n":1}]');
      assert.deepEqual(await p.poll(), ['42["hello","world",{"n":1}]']);
      await p.postOk('4217["x",1,"é✓"]');
      assert.deepEqual(await p.poll(), ['4317[1,"é✓"]']);
      await p.postOk('4218["noargs"]');
      assert.deepEqual(await p.poll(), ['4318[]']);
    });

    test('a POST with several packets joined by \\x1e -> both acks come back, batched in one GET body', async () => {
      const p = new Polling(srv);
      await p.handshake();
      await p.connectSio();
      await p.postOk(`421["x",1]${SEP}422["y",2]`);
      const g = await p.get();
      assert.equal(g.status, 200);
      assert.equal(g.text, `431[1]${SEP}432[2]`);
    });

    test('several server packets queued -> one GET body joined by \\x1e, in order, no trailing separator', async () => {
      const p = new Polling(srv);
      await p.handshake();
      await p.connectSio();
      await p.postOk(['42["a",1]', '42["b",2]', '42["c",3]', '423["d",4]'].join(SEP));
      const g = await p.get();
      assert.equal(g.text, ['42["a",1]', '42["b",2]', '42["c",3]', '433[4]'].join(SEP));
    });

    test('CONNECT and a first event in the same POST -> reply then event in one GET body', async () => {
      const p = new Polling(srv);
      await p.handshake();
      await p.postOk(`40${SEP}42["early"]`);
      const g = await p.get();
      assert.equal(g.packets.length, 2, g.text);
      assert.match(g.packets[0], /^40\{"sid":"[^"]+"\}$/);
      assert.equal(g.packets[1], '42["early"]');
    });

    test('a GET with nothing queued is held, then answered by the next server packet', async () => {
      const p = new Polling(srv);
      await p.handshake();
      await p.connectSio();
      const g = p.startGet();
      await assertHeld(g, 200);
      await p.postOk('42["wake",true]');
      const r = await g.res;
      assert.equal(r.status, 200);
      assert.equal(r.text, '42["wake",true]');
    });

    test('server emit with ack over polling: ask -> 420[...] -> client 430[...] -> ask:result', async () => {
      const p = new Polling(srv);
      await p.handshake();
      await p.connectSio();
      await p.postOk('42["ask","question",{"q":1},5000]');
      const [q] = await p.collect(1);
      const m = /^42(\d+)\["question",\{"q":1\}\]$/.exec(q);
      assert.ok(m, `server emit with ack: ${q}`);
      await p.postOk(`43${m[1]}["answer",2]`);
      assert.deepEqual(await p.collect(1), ['42["ask:result",{"status":"ok","args":["answer",2]}]']);
    });

    test('bye -> the server sends 41; the session stays open for another CONNECT', async () => {
      const p = new Polling(srv);
      await p.handshake();
      await p.connectSio();
      await p.postOk('42["bye"]');
      assert.deepEqual(await p.collect(1), ['41']);
      await p.connectSio();
      await p.postOk('421["again",1]');
      assert.deepEqual(await p.collect(1), ['431[1]']);
    });

    test('/custom namespace over polling', async () => {
      const p = new Polling(srv);
      await p.handshake();
      await p.connectSio('/custom');
      await p.postOk('42/custom,5["x",true]');
      assert.deepEqual(await p.collect(1), ['43/custom,5[true]']);
    });

    test('keep-alive: handshake, POSTs and GETs on one TCP connection', async () => {
      const conn = openConn(srv);
      const p = new Polling(srv);
      await p.handshake({ conn });
      await p.postOk('40', { conn });
      const g = await p.get({ conn });
      assert.match(g.text, /^40\{/);
      await p.postOk('42["same-conn"]', { conn });
      assert.equal((await p.get({ conn })).text, '42["same-conn"]');
      conn.destroy();
    });

    test('a client POST of 41 then 1 (what socket.disconnect() sends) closes the session', async () => {
      const p = new Polling(srv);
      await p.handshake();
      await p.connectSio();
      await p.postOk(`41${SEP}1`);
      await sleep(50);
      await p.assertGone('after 41+1', 'GET');
      await p.assertGone('after 41+1', 'POST');
    });

    // ---- the error table of §2.1 ----

    badTest('transport=foo -> 400 {"code":0,"message":"Transport unknown"}', async () => {
      assertEioError(await send(srv, 'GET', '/socket.io/?EIO=4&transport=foo&t=x'), 400, 0, MESSAGES[0], 'transport=foo');
    });

    badTest('transport missing -> 400 code 0', async () => {
      assertEioError(await send(srv, 'GET', '/socket.io/?EIO=4&t=x'), 400, 0, MESSAGES[0], 'no transport');
    });

    badTest('unknown sid -> 400 {"code":1,"message":"Session ID unknown"} for GET and POST', async () => {
      assertEioError(await send(srv, 'GET', eioTarget({ sid: 'AAAAAAAAAAAAAAAAAAAA' })), 400, 1, MESSAGES[1], 'GET unknown sid');
      assertEioError(
        await send(srv, 'POST', eioTarget({ sid: 'AAAAAAAAAAAAAAAAAAAA' }), { body: '40', headers: { 'Content-Type': TEXT_PLAIN } }),
        400, 1, MESSAGES[1], 'POST unknown sid',
      );
    });

    badTest('POST without sid -> 400 {"code":2,"message":"Bad handshake method"}', async () => {
      const r = await send(srv, 'POST', eioTarget(), { body: '40', headers: { 'Content-Type': TEXT_PLAIN } });
      assertEioError(r, 400, 2, MESSAGES[2], 'POST handshake');
    });

    badTest('GET transport=websocket without Upgrade -> 400 {"code":3,"message":"Bad request"} (with and without sid)', async () => {
      assertEioError(await send(srv, 'GET', '/socket.io/?EIO=4&transport=websocket'), 400, 3, MESSAGES[3], 'plain GET websocket');
      const p = new Polling(srv);
      await p.handshake();
      const r = await send(srv, 'GET', eioTarget({ transport: 'websocket', sid: p.sid, t: false }));
      assertEioError(r, 400, 3, MESSAGES[3], 'plain GET websocket with a polling sid');
      // That bad request did not end the polling session.
      await p.connectSio();
    });

    badTest('EIO=3, EIO=5, EIO missing -> 400 {"code":5,"message":"Unsupported protocol version"}', async () => {
      for (const q of ['EIO=3&transport=polling', 'EIO=5&transport=polling', 'transport=polling']) {
        assertEioError(await send(srv, 'GET', `/socket.io/?${q}&t=x`), 400, 5, MESSAGES[5], q);
      }
    });

    // ---- POST rules ----

    badTest('POST with Content-Type: application/octet-stream -> 400 and the session is closed', async () => {
      const p = new Polling(srv);
      await p.handshake();
      await p.connectSio();
      const r = await p.post('42["x"]', { contentType: 'application/octet-stream' });
      assert.equal(r.status, 400, `octet-stream POST: ${r.status} ${r.text}`);
      await p.assertGone('after an octet-stream POST');
    });

    badTest('POST with an invalid packet (9) -> 400 and the session is closed', async () => {
      const p = new Polling(srv);
      await p.handshake();
      await p.connectSio();
      const r = await p.post('9');
      assert.equal(r.status, 400, `POST "9": ${r.status} ${r.text}`);
      await p.assertGone('after an invalid packet');
    });

    badTest('POST with an empty packet between separators -> 400 and the session is closed', async () => {
      const p = new Polling(srv);
      await p.handshake();
      await p.connectSio();
      const r = await p.post(`42["a"]${SEP}${SEP}42["b"]`);
      assert.equal(r.status, 400, `POST with an empty packet: ${r.status} ${r.text}`);
      await p.assertGone('after an empty packet');
    });

    badTest('POST of a client ping "2" -> session closed (invalid heartbeat direction)', async () => {
      const p = new Polling(srv);
      await p.handshake();
      const r = await p.post('2');
      assert.equal(r.status, 400, `POST "2": ${r.status} ${r.text}`);
      await p.assertGone('after a client ping');
    });

    // ---- GET rules ----

    badTest('a second concurrent GET: the held one gets 200 "1", the duplicate 400, later requests 400 code 1', async () => {
      const p = new Polling(srv);
      await p.handshake();
      await p.connectSio();
      const g1 = p.startGet();
      await assertHeld(g1, 100, 'first GET');
      const r2 = await p.get();
      assert.equal(r2.status, 400, `duplicate GET: ${r2.status} ${r2.text}`);
      const r1 = await g1.res;
      assert.equal(r1.status, 200);
      assert.equal(r1.text, '1');
      await p.assertGone('after a duplicate GET', 'GET');
      await p.assertGone('after a duplicate GET', 'POST');
    });

    badTest('overlapping POSTs are each handled whole, in the order their bodies complete', async () => {
      // SOCKETIO.md §2.6 has the reference close a session on overlapping POSTs, because it
      // would interleave their packets. pulsec handles a POST only once its body is complete,
      // so two POSTs can't interleave: both are accepted, in completion order (docs/PROTOCOL.md).
      const p = new Polling(srv);
      await p.handshake();
      await p.connectSio();
      const first = openConn(srv);
      const bytes = rawRequest('POST', p.target(), { headers: { 'Content-Type': TEXT_PLAIN }, body: '42["first",1]' });
      await first.write(bytes.subarray(0, bytes.length - 5)); // headers and part of the body
      await sleep(100);
      const r2 = await p.post('42["second",2]');
      await first.write(bytes.subarray(bytes.length - 5));
      const r1 = await first.readResponse();
      first.destroy();
      assert.equal(r2.status, 200);
      assert.equal(r1.status, 200);
      const got = await p.get();
      assert.equal(got.text, '42["second",2]\x1e42["first",1]');
    });

    badTest('polling with the sid of a session opened on WebSocket -> 400 code 3', async () => {
      const w = new RawWs(srv);
      const open = await w.handshake();
      const p = new Polling(srv);
      p.sid = open.sid;
      assertEioError(await p.get(), 400, 3, MESSAGES[3], 'GET with a WebSocket sid');
      assertEioError(await p.post('40'), 400, 3, MESSAGES[3], 'POST with a WebSocket sid');
      // The WebSocket session is unaffected.
      await w.connectNs('/');
      w.terminate();
    });

    badTest('a client that aborts its held GET -> session closed (next request 400 code 1)', async () => {
      const p = new Polling(srv);
      await p.handshake();
      await p.connectSio();
      const g = p.startGet();
      await assertHeld(g, 100);
      g.conn.destroy();
      await sleep(100);
      await p.assertGone('after an aborted GET', 'POST');
      await p.assertGone('after an aborted GET', 'GET');
    });

    test('POST "1" with a held GET: POST ok, the GET is answered "6" (noop, as the Engine.IO spec says), later requests 400 code 1', async () => {
      const p = new Polling(srv);
      await p.handshake();
      await p.connectSio();
      const g = p.startGet();
      await assertHeld(g, 100);
      const r = await p.post('1');
      assert.equal(r.status, 200, `POST "1": ${r.status} ${r.text}`);
      assert.equal(r.text, 'ok');
      const held = await g.res;
      assert.equal(held.status, 200);
      assert.equal(held.text, '6', `held GET after the client close: ${JSON.stringify(held.text)}`);
      await p.assertGone('after POST 1', 'GET');
      await p.assertGone('after POST 1', 'POST');
    });

    test('POST "1" without a held GET -> later requests 400 code 1', async () => {
      const p = new Polling(srv);
      await p.handshake();
      await p.postOk('1');
      await p.assertGone('after POST 1');
    });

    test('a Socket.IO protocol error closes the session: the held GET gets a payload ending in "1"', async () => {
      // A Socket.IO protocol violation (an event on a namespace not joined) closes the Engine.IO
      // session: the held GET must be answered with a payload ending in "1".
      const p = new Polling(srv);
      await p.handshake();
      const g = p.startGet();
      await assertHeld(g, 100);
      const r = await p.post('42["not-connected"]');
      assert.ok(r.status === 200 || r.status === 400, `POST: ${r.status}`);
      const held = await g.res;
      assert.equal(held.status, 200);
      assert.equal(held.packets.at(-1), '1', `held GET: ${JSON.stringify(held.text)}`);
      await p.assertGone('after a protocol error');
    });

    // ---- binary (Socket.IO BINARY_EVENT / BINARY_ACK over polling: b + base64) ----

    test('binary event over polling: 451-[...placeholder] + bAQID -> the same two packets back', async () => {
      const p = new Polling(srv);
      await p.handshake();
      await p.connectSio();
      const head = `451-${JSON.stringify(['bin', ph(0)])}`;
      await p.postOk(`${head}${SEP}${b64packet([1, 2, 3])}`);
      assert.deepEqual(await p.collect(2), [head, 'bAQID']);
    });

    test('binary ack over polling: 452-7[...] + 2 blobs -> 462-7[...] + the same 2 blobs in order', async () => {
      const p = new Polling(srv);
      await p.handshake();
      await p.connectSio();
      const args = [{ a: ph(0) }, [ph(1)]];
      await p.postOk(`452-7${JSON.stringify(['bin', ...args])}${SEP}${b64packet([1, 2])}${SEP}${b64packet([3, 4, 255])}`);
      const got = await p.collect(3);
      assert.deepEqual(got, [`462-7${JSON.stringify(args)}`, b64packet([1, 2]), b64packet([3, 4, 255])]);
    });

    test('binary ask: the server asks with a blob, the client acks with a blob -> ask:result carries it', async () => {
      const p = new Polling(srv);
      await p.handshake();
      await p.connectSio();
      await p.postOk(`451-${JSON.stringify(['ask', 'q', ph(0), 5000])}${SEP}${b64packet([9, 8])}`);
      const [qhead, qblob] = await p.collect(2);
      const m = /^451-(\d+)\["q",\{"_placeholder":true,"num":0\}\]$/.exec(qhead);
      assert.ok(m, `server binary emit with ack: ${qhead}`);
      assert.equal(qblob, b64packet([9, 8]));
      await p.postOk(`461-${m[1]}${JSON.stringify([ph(0)])}${SEP}${b64packet([7])}`);
      const res = await p.collect(2);
      assert.deepEqual(res, [`451-${JSON.stringify(['ask:result', { status: 'ok', args: [ph(0)] }])}`, b64packet([7])]);
    });

    badTest('a blob nobody expects (b... without a binary header) -> 400 or a closed session, not a crash', async () => {
      const p = new Polling(srv);
      await p.handshake();
      await p.connectSio();
      await p.post(b64packet([1, 2, 3]));
      await sleep(50);
      await p.assertGone('after an unexpected blob');
    });
  });
});

describe('long-polling limits (--max-payload 1000)', () => {
  let srv;
  before(async () => {
    srv = await startServer(['--max-payload', '1000']);
  });
  after(async () => {
    await stopClean(srv);
  });

  test('the open packet announces maxPayload 1000', async () => {
    const p = new Polling(srv);
    const open = await p.handshake();
    assert.equal(open.maxPayload, 1000);
  });

  test('a POST body of exactly 1000 bytes is accepted; 1001 bytes -> 413', async () => {
    const p = new Polling(srv);
    await p.handshake();
    await p.connectSio();
    const body = (n) => {
      const pre = '42["pad","';
      const post = '"]';
      return pre + 'x'.repeat(n - pre.length - post.length) + post;
    };
    assert.equal(Buffer.byteLength(body(1000)), 1000);
    await p.postOk(body(1000));
    assert.deepEqual(await p.collect(1), [body(1000)]);
    const r = await p.post(body(1001));
    assert.equal(r.status, 413, `1001-byte POST: ${r.status} ${r.text}`);
  });

  test('a much larger POST -> 413 at once (the body need not be read)', async () => {
    const p = new Polling(srv);
    await p.handshake();
    const r = await p.post(`42["big","${'y'.repeat(200000)}"]`, { ms: 5000 });
    assert.equal(r.status, 413);
  });
});

describe('--websocket-only', () => {
  let srv;
  before(async () => {
    srv = await startServer(['--websocket-only']);
  });
  after(async () => {
    await stopClean(srv);
  });

  test('polling handshake and polling POST -> 400 code 0 "Transport unknown"', async () => {
    assertEioError(await send(srv, 'GET', eioTarget()), 400, 0, MESSAGES[0], 'polling handshake');
    assertEioError(
      await send(srv, 'POST', eioTarget({ sid: 'AAAAAAAAAAAAAAAAAAAA' }), { body: '40', headers: { 'Content-Type': TEXT_PLAIN } }),
      400, 0, MESSAGES[0], 'polling POST',
    );
  });

  test('WebSocket still works', async () => {
    const s = await connectClient(srv.url);
    await assertStillServes(s);
    s.disconnect();
  });
});

describe('polling heartbeat (--ping-interval 300 --ping-timeout 200)', () => {
  let srv;
  before(async () => {
    srv = await startServer(['--ping-interval', '300', '--ping-timeout', '200']);
  });
  after(async () => {
    await stopClean(srv);
  });

  describe('cases', { concurrency: true }, () => {
    // The server's timers start between the handshake's request (sent) and its answer
    // (openedAt): "not before" counts from the first, "not much after" from the second, so that
    // a client slow to read the answer on a loaded machine does not see the ping "early".
    test('a held GET returns exactly "2" ~300 ms after the handshake', async () => {
      const p = new Polling(srv);
      const sent = performance.now();
      const open = await p.handshake();
      assert.equal(open.pingInterval, 300);
      assert.equal(open.pingTimeout, 200);
      const r = await p.get();
      assert.equal(r.status, 200);
      assert.equal(r.text, '2');
      const early = r.at - sent;
      const dt = r.at - p.openedAt;
      assert.ok(early >= 298 && dt <= 420, `ping ${early.toFixed(1)} ms after the handshake was sent, ${dt.toFixed(1)} ms after its answer, expected ~300`);
    });

    test('answering each ping with POST "3" keeps the session: pings every ~300 ms after the pong', async () => {
      const p = new Polling(srv);
      await p.handshake();
      await p.connectSio();
      let last = p.openedAt;
      for (let i = 0; i < 5; i++) {
        const r = await p.get({ ms: 2000 });
        assert.equal(r.status, 200, `ping ${i}: ${r.status} ${r.text}`);
        assert.equal(r.text, '2', `ping ${i}`);
        const dt = r.at - last;
        assert.ok(dt >= 270 && dt <= 450, `ping ${i} ${dt.toFixed(1)} ms after the previous pong`);
        await p.postOk('3');
        last = performance.now();
      }
      // 350 ms after a fresh pong: the next ping is queued and the session alive.
      await sleep(350 - (performance.now() - last));
      const r = await p.get();
      assert.equal(r.status, 200);
      assert.equal(r.text, '2', 'the ping queued ~300 ms after the pong');
      await p.postOk('3');
      await p.postOk('421["alive",1]');
      assert.deepEqual(await p.collect(1), ['431[1]']);
    });

    test('not answering: the held GET gets "1" at ~500 ms (pingInterval + pingTimeout); gone at 700 ms', async () => {
      const p = new Polling(srv);
      const sent = performance.now();
      await p.handshake();
      const ping = await p.get();
      assert.equal(ping.text, '2');
      // At 350 ms the session is alive: the GET is held, not refused.
      await p.untilSinceOpen(350);
      const g = p.startGet({ ms: 3000 });
      await assertHeld(g, 60, 'GET at 350 ms');
      const r = await g.res;
      assert.equal(r.status, 200);
      assert.equal(r.text, '1', `held GET at the ping timeout: ${JSON.stringify(r.text)}`);
      const early = r.at - sent;
      const dt = r.at - p.openedAt;
      assert.ok(early >= 498 && dt <= 620, `session closed ${early.toFixed(1)} ms after the handshake was sent, ${dt.toFixed(1)} ms after its answer, expected ~500`);
      await p.untilSinceOpen(700);
      await p.assertGone('at 700 ms');
    });

    test('not answering and not polling: a request at 450 ms works, the session is gone at 700 ms', async () => {
      const p = new Polling(srv);
      await p.handshake();
      const ping = await p.get();
      assert.equal(ping.text, '2');
      await p.untilSinceOpen(450);
      // A Socket.IO CONNECT at 450 ms is still accepted (other traffic does not reset the timer).
      await p.postOk('40');
      await p.untilSinceOpen(700);
      await p.assertGone('at 700 ms', 'POST');
      await p.assertGone('at 700 ms', 'GET');
    });

    test('a late pong (after the timeout) does not revive the session', async () => {
      const p = new Polling(srv);
      await p.handshake();
      assert.equal((await p.get()).text, '2');
      await p.untilSinceOpen(650);
      const r = await p.post('3');
      assertEioError(r, 400, 1, MESSAGES[1], 'late pong');
    });
  });
});

describe('--connect-timeout 300 on polling', () => {
  let srv;
  before(async () => {
    srv = await startServer(['--connect-timeout', '300']);
  });
  after(async () => {
    await stopClean(srv);
  });

  test('no CONNECT: the server closes the polling session at ~300 ms, the held GET gets "1"', async () => {
    const p = new Polling(srv);
    await p.handshake();
    const r = await p.get({ ms: 3000 });
    assert.equal(r.status, 200);
    assert.equal(r.packets.at(-1), '1', `held GET: ${JSON.stringify(r.text)}`);
    const dt = r.at - p.openedAt;
    assert.ok(dt >= 270 && dt <= 500, `closed ${dt.toFixed(1)} ms after the handshake, expected ~300`);
    await p.assertGone('after the connect timeout');
  });

  test('no CONNECT and no GET held: the next GET is answered "1" (SOCKETIO.md §2.8: "pending (or next) GET"), then 400 code 1', async () => {
    const p = new Polling(srv);
    await p.handshake();
    await p.untilSinceOpen(450);
    const r = await p.get({ ms: 3000 });
    assert.equal(r.status, 200, `the first GET after the server closed the session: ${r.status} ${JSON.stringify(r.text)}`);
    assert.equal(r.packets.at(-1), '1', `the first GET after the server closed the session: ${JSON.stringify(r.text)}`);
    await p.assertGone('after the close was delivered');
  });

  test('with a CONNECT in time the session stays', async () => {
    const p = new Polling(srv);
    await p.handshake();
    await p.connectSio();
    await sleep(500);
    await p.postOk('421["late",1]');
    assert.deepEqual(await p.collect(1), ['431[1]']);
    await p.postOk('1');
  });
});

describe('shutdown with a held GET', () => {
  test('SIGTERM answers a held GET with "1" and the server exits 0', async () => {
    const srv = await startServer();
    const p = new Polling(srv);
    await p.handshake();
    await p.connectSio();
    const g = p.startGet({ ms: 5000 });
    await assertHeld(g, 100);
    const stopped = stopClean(srv, 'server with a held GET');
    const r = await g.res;
    assert.equal(r.status, 200);
    assert.equal(r.packets.at(-1), '1', `held GET at shutdown: ${JSON.stringify(r.text)}`);
    await stopped;
  });
});
