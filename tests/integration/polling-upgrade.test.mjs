// The upgrade from long-polling to WebSocket (issue 8; SOCKETIO.md §2.7), driven by hand:
// raw HTTP for the polling side, the `ws` package for the WebSocket side.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import {
  startServer, stopClean, killAll, closeClients, closeTcp, connectClient, assertStillServes, sleep,
  RawWs, httpRaw, withTimeout,
} from './lib/server.mjs';
import {
  Polling, send, eioTarget, assertEioError, MESSAGES, SEP, closePollConns, b64packet, ph,
} from './lib/polling.mjs';

const wss = new Set();
after(async () => {
  for (const w of wss) w.terminate();
  closeClients();
  closeTcp();
  closePollConns();
  await killAll();
});

/** The upgrade WebSocket of a polling session (a probe until "5"). */
function probeWs(srv, sid, opts = {}) {
  const w = new RawWs(srv, { path: `/socket.io/?EIO=4&transport=websocket&sid=${encodeURIComponent(sid)}`, ...opts });
  wss.add(w);
  return w;
}

/** An upgrade WebSocket past the probe exchange ("2probe", "3probe"), before "5". */
async function probed(srv, sid) {
  const w = probeWs(srv, sid);
  await w.opened;
  w.send('2probe');
  await w.waitFrame('3probe');
  return w;
}

async function assertHeld(g, ms = 150, what = 'GET') {
  const early = await Promise.race([g.res, sleep(ms).then(() => null)]);
  assert.equal(early, null, `${what} was answered at once: ${early && `${early.status} ${JSON.stringify(early.text)}`}`);
}

/** A polling session with Socket.IO connected to "/". */
async function connected(srv) {
  const p = new Polling(srv);
  await p.handshake();
  p.sio = await p.connectSio();
  return p;
}

/** A WebSocket that must be refused: resolves with 'status NNN' or 'closed CODE'. */
async function refusedWs(srv, path, headers) {
  const w = new RawWs(srv, { path, headers });
  wss.add(w);
  let outcome;
  try {
    await withTimeout(w.opened, 3000, 'ws open');
  } catch (e) {
    const m = /unexpected HTTP response (\d+)/.exec(e.message);
    outcome = m ? `status ${m[1]}` : `error ${e.message}`;
    return { outcome, w };
  }
  // Opened: it must then be closed by the server without ever carrying the session.
  const info = await w.waitClose(3000);
  return { outcome: `closed ${info.code}`, w };
}

describe('upgrade from polling to WebSocket (raw)', () => {
  let srv;
  let witness;
  before(async () => {
    srv = await startServer();
    witness = await connectClient(srv.url);
  });
  after(async () => {
    for (const w of wss) w.terminate();
    closeClients();
    await stopClean(srv);
  });

  describe('cases', { concurrency: true }, () => {
    test('2probe -> 3probe; a GET after 3probe gets "6" at once; 5 -> traffic on the WebSocket; polling then 400 code 3', async () => {
      const p = await connected(srv);
      const w = probeWs(srv, p.sid);
      await w.opened;
      assert.deepEqual(w.frames, [], 'the probe must not receive an open packet');
      w.send('2probe');
      await w.waitFrame('3probe');
      const t0 = performance.now();
      const r = await p.get();
      assert.equal(r.status, 200);
      assert.equal(r.text, '6', `GET after 3probe: ${JSON.stringify(r.text)}`);
      assert.ok(r.at - t0 < 150, `the noop took ${(r.at - t0).toFixed(0)} ms`);
      w.send('5');
      await sleep(30);
      // Now on WebSocket: an event and an ack come back on it.
      const from = w.frames.length;
      w.send('42["on-ws",1]');
      await w.waitFrame('42["on-ws",1]', 3000, from);
      w.send('427["acked",2]');
      await w.waitFrame('437[2]', 3000, from);
      // Polling with that sid is refused with code 3.
      assertEioError(await p.get(), 400, 3, MESSAGES[3], 'GET after the upgrade');
      assertEioError(await p.post('42["poll"]'), 400, 3, MESSAGES[3], 'POST after the upgrade');
      // ... and did not end the session.
      w.send('428["still"]');
      await w.waitFrame('438[]', 3000, from);
      w.close(1000);
    });

    test('a GET held before the probe is answered "6" when 3probe is sent', async () => {
      const p = await connected(srv);
      const g = p.startGet({ ms: 5000 });
      await assertHeld(g, 100);
      const w = probeWs(srv, p.sid);
      await w.opened;
      await assertHeld(g, 50, 'GET while the probe is open but silent');
      w.send('2probe');
      const r = await g.res;
      await w.waitFrame('3probe');
      assert.equal(r.status, 200);
      assert.equal(r.text, '6');
      w.send('5');
      const from = w.frames.length;
      w.send('421["x"]');
      await w.waitFrame('431[]', 3000, from);
      w.close(1000);
    });

    test('a GET held when 5 arrives (a client that upgrades without pausing) is released, the session moves', async () => {
      const p = await connected(srv);
      const w = await probed(srv, p.sid);
      assert.equal((await p.get()).text, '6');
      // This GET finds the session upgrading: "6" at once as well.
      assert.equal((await p.get()).text, '6');
      w.send('5');
      const from = w.frames.length;
      w.send('42["moved"]');
      await w.waitFrame('42["moved"]', 3000, from);
      w.close(1000);
    });

    test('packets queued before the upgrade are delivered on the WebSocket in order after 5', async () => {
      const p = await connected(srv);
      // Queued before the probe (no GET takes them).
      await p.postOk(['42["q1",1]', '42["q2",2]'].join(SEP));
      const w = await probed(srv, p.sid);
      // Queued while upgrading, still without a GET.
      await p.postOk(['423["q3"]', '42["q4",4]'].join(SEP));
      await sleep(30);
      assert.deepEqual(w.frames, ['3probe'], 'nothing but 3probe may reach the probe before 5');
      w.send('5');
      await w.waitFrame('42["q4",4]', 3000);
      assert.deepEqual(w.frames, ['3probe', '42["q1",1]', '42["q2",2]', '433[]', '42["q4",4]']);
      // Afterwards traffic continues in order.
      w.send('42["after"]');
      await w.waitFrame('42["after"]');
      w.close(1000);
    });

    test('queued binary packets (base64 on polling) arrive as binary frames after 5', async () => {
      const p = await connected(srv);
      const head = `452-${JSON.stringify(['bin', ph(0), { x: ph(1) }])}`;
      await p.postOk([head, b64packet([1, 2, 3]), b64packet([0xff, 0])].join(SEP));
      const w = await probed(srv, p.sid);
      w.send('5');
      await w.waitFrame((f) => Buffer.isBuffer(f) && f.length === 2, 3000);
      assert.equal(w.frames.length, 4, JSON.stringify(w.frames.map(String)));
      assert.equal(w.frames[1], head);
      assert.deepEqual(w.frames[2], Buffer.from([1, 2, 3]));
      assert.deepEqual(w.frames[3], Buffer.from([0xff, 0]));
      w.close(1000);
    });

    test('a second WebSocket with the same sid after the upgrade is accepted, then closed (1008) untouched', async () => {
      const p = await connected(srv);
      const w = await probed(srv, p.sid);
      w.send('5');
      await sleep(30);
      const { outcome, w: w2 } = await refusedWs(srv, `/socket.io/?EIO=4&transport=websocket&sid=${p.sid}`);
      assert.equal(outcome, 'closed 1008', `second WebSocket: ${outcome}`);
      assert.ok(!w2.frames.includes('3probe'), 'the second WebSocket was probed');
      // The first one still carries the session.
      const from = w.frames.length;
      w.send('421["first"]');
      await w.waitFrame('431[]', 3000, from);
      w.close(1000);
    });

    test('a second WebSocket while a probe is under way is accepted, then closed; the first probe completes', async () => {
      const p = await connected(srv);
      const w = await probed(srv, p.sid);
      const { outcome } = await refusedWs(srv, `/socket.io/?EIO=4&transport=websocket&sid=${p.sid}`);
      assert.equal(outcome, 'closed 1008', `second WebSocket: ${outcome}`);
      w.send('5');
      const from = w.frames.length;
      w.send('421["x"]');
      await w.waitFrame('431[]', 3000, from);
      w.close(1000);
    });

    test('the upgrade request over raw HTTP for an upgraded session -> 101, then a close frame 1008 and nothing else', async () => {
      const p = await connected(srv);
      const w = await probed(srv, p.sid);
      w.send('5');
      await sleep(30);
      const key = crypto.randomBytes(16).toString('base64');
      const r = await httpRaw(srv,
        `GET /socket.io/?EIO=4&transport=websocket&sid=${p.sid} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`, { ms: 3000, head: true });
      assert.equal(r.status, 101, `${r.status} ${r.text}`);
      // The first frame is the server's close: 0x88, length, code 1008.
      await withTimeout((async () => { while (r.conn.buf.length < 4 && !r.conn.ended) await sleep(5); })(), 3000, 'close frame');
      assert.equal(r.conn.buf[0], 0x88, `first frame: ${r.conn.buf.toString('hex')}`);
      assert.equal(r.conn.buf.readUInt16BE(2), 1008);
      r.conn.destroy();
      w.close(1000);
    });

    for (const [name, bad] of [
      ['a message (4hello)', '4hello'],
      ['a pong (3)', '3'],
      ['5 before 2probe', '5'],
      ['2 without probe', '2'],
      ['2probX', '2probX'],
      ['2probe as a binary frame', Buffer.from('2probe')],
    ]) {
      test(`a probe that sends ${name} is closed; the session keeps working on polling`, async () => {
        const p = await connected(srv);
        const w = probeWs(srv, p.sid);
        await w.opened;
        w.send(bad);
        await w.waitClose(3000);
        assert.ok(!w.frames.includes('3probe'));
        await p.postOk('42["still-polling",1]');
        assert.deepEqual(await p.collect(1), ['42["still-polling",1]']);
        // A new, correct upgrade still works afterwards.
        const w2 = await probed(srv, p.sid);
        w2.send('5');
        const from = w2.frames.length;
        w2.send('421["x"]');
        await w2.waitFrame('431[]', 3000, from);
        w2.close(1000);
      });
    }

    test('a probe that sends garbage after 3probe is closed; GETs are no longer answered "6"', async () => {
      const p = await connected(srv);
      const w = await probed(srv, p.sid);
      w.send('4nope');
      await w.waitClose(3000);
      await sleep(20);
      const g = p.startGet();
      await assertHeld(g, 150, 'GET after the aborted upgrade');
      await p.postOk('42["back"]');
      assert.equal((await g.res).text, '42["back"]');
    });

    test('a probe closed by the client before 5: the session stays on polling', async () => {
      const p = await connected(srv);
      const w = await probed(srv, p.sid);
      w.close(1000);
      await w.waitClose(3000);
      await sleep(20);
      const g = p.startGet();
      await assertHeld(g, 150, 'GET after the probe closed');
      await p.postOk('421["poll",3]');
      assert.equal((await g.res).text, '431[3]');
    });

    test('after the upgrade, closing the WebSocket ends the session (sid unknown)', async () => {
      const p = await connected(srv);
      const w = await probed(srv, p.sid);
      w.send('5');
      await sleep(30);
      w.close(1000);
      await w.waitClose(3000);
      await sleep(50);
      assertEioError(await p.get(), 400, 1, MESSAGES[1], 'GET after the WebSocket closed');
    });

    test('an upgrade WebSocket with the sid of a session opened on WebSocket is refused', async () => {
      const w = new RawWs(srv);
      wss.add(w);
      const open = await w.handshake();
      const { outcome } = await refusedWs(srv, `/socket.io/?EIO=4&transport=websocket&sid=${open.sid}`);
      assert.equal(outcome, 'closed 1008', `WebSocket with a WebSocket session's sid: ${outcome}`);
      await w.connectNs('/');
      w.send('421["x",1]');
      await w.waitFrame('431[1]');
      w.terminate();
    });

    test('an upgrade probe for a session closed by the client (POST 1) is refused with code 1', async () => {
      const p = await connected(srv);
      await p.postOk('1');
      await sleep(20);
      const { outcome } = await refusedWs(srv, `/socket.io/?EIO=4&transport=websocket&sid=${p.sid}`);
      assert.equal(outcome, 'status 400');
    });

    test('the server ending the session during the probe closes the probe too (duplicate GET)', async () => {
      const p = await connected(srv);
      const w = await probed(srv, p.sid);
      // A protocol error on polling while upgrading: an invalid packet closes the session.
      const r = await p.post('9');
      assert.equal(r.status, 400);
      await w.waitClose(3000);
      assertEioError(await p.get(), 400, 1, MESSAGES[1], 'GET after the session ended');
    });
  });

  test('the witness client is still served', async () => {
    await assertStillServes(witness);
  });
});

describe('upgrade heartbeat (--ping-interval 300 --ping-timeout 200)', () => {
  let srv;
  before(async () => {
    srv = await startServer(['--ping-interval', '300', '--ping-timeout', '200']);
  });
  after(async () => {
    for (const w of wss) w.terminate();
    await stopClean(srv);
  });

  test('after the upgrade the pings come on the WebSocket and pongs there keep the session', async () => {
    const p = await connected(srv);
    const w = probeWs(srv, p.sid, { autoPong: true });
    await w.opened;
    w.send('2probe');
    await w.waitFrame('3probe');
    w.send('5');
    await sleep(1200);
    const pings = w.frames.filter((f) => f === '2').length;
    assert.ok(pings >= 2, `${pings} pings on the WebSocket in 1.2 s`);
    assert.equal(w.closeInfo, null, 'closed');
    const from = w.frames.length;
    w.send('421["hb"]');
    await w.waitFrame('431[]', 3000, from);
    w.close(1000);
  });

  test('a pending ping queued on polling before the upgrade is flushed to the WebSocket; answering it there keeps the session', async () => {
    const p = await connected(srv);
    await p.untilSinceOpen(320); // the first ping is now queued on polling, no GET took it
    const w = probeWs(srv, p.sid, { autoPong: true });
    await w.opened;
    w.send('2probe');
    await w.waitFrame('3probe');
    w.send('5');
    await w.waitFrame('2', 1000);
    await sleep(600);
    assert.equal(w.closeInfo, null, `closed: ${JSON.stringify(w.closeInfo)}`);
    w.close(1000);
  });

  test('a probe does not answer pings for the session: no pong on polling -> session and probe closed at ~500 ms', async () => {
    const p = await connected(srv);
    const w = probeWs(srv, p.sid, { autoPong: false });
    await w.opened;
    w.send('2probe');
    await w.waitFrame('3probe');
    // Never sends 5, never pongs: the session's heartbeat still runs on polling.
    await w.waitClose(3000);
    const dt = performance.now() - p.openedAt;
    assert.ok(dt >= 450 && dt < 1200, `probe closed ${dt.toFixed(0)} ms after the handshake`);
    assertEioError(await p.get(), 400, 1, MESSAGES[1], 'GET after the ping timeout');
  });
});
