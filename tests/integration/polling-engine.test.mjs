// Engine.IO alone (issue 8): `--path /engine.io/ --engine-echo` echoes every message packet,
// text or binary, over WebSocket and over long-polling (binary as b + base64), across the
// upgrade, and with the official engine.io-client.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Socket as EioSocket } from 'engine.io-client';
import {
  startServer, stopClean, killAll, closeTcp, RawWs, sleep, once, withTimeout,
} from './lib/server.mjs';
import { Polling, SEP, closePollConns, b64packet, MESSAGES, assertEioError } from './lib/polling.mjs';

const wss = new Set();
const eios = new Set();
after(async () => {
  for (const w of wss) w.terminate();
  for (const e of eios) e.close();
  closeTcp();
  closePollConns();
  await killAll();
});

const WS_PATH = '/engine.io/?EIO=4&transport=websocket';

function rawWs(srv, path = WS_PATH, opts = {}) {
  const w = new RawWs(srv, { path, ...opts });
  wss.add(w);
  return w;
}

describe('--path /engine.io/ --engine-echo', () => {
  let srv;
  before(async () => {
    srv = await startServer(['--path', '/engine.io/', '--engine-echo']);
  });
  after(async () => {
    for (const w of wss) w.terminate();
    for (const e of eios) e.close();
    await stopClean(srv);
  });

  describe('cases', { concurrency: true }, () => {
    test('WebSocket: 4hello -> 4hello, a binary frame -> the same binary frame, in order', async () => {
      const w = rawWs(srv);
      const open = await w.handshake();
      assert.deepEqual(open.upgrades, []);
      w.send('4hello');
      w.send(Buffer.from([1, 2, 3, 4]));
      w.send('4é✓');
      w.send('4');
      w.send('40'); // a Socket.IO CONNECT is just a message here: echoed, no 40{"sid"}
      w.send(Buffer.alloc(0));
      await w.waitFrame((f) => Buffer.isBuffer(f) && f.length === 0, 3000);
      assert.deepEqual(w.frames.slice(1).map((f) => (Buffer.isBuffer(f) ? { bin: [...f] } : f)), [
        '4hello', { bin: [1, 2, 3, 4] }, '4é✓', '4', '40', { bin: [] },
      ]);
      w.close(1000);
    });

    test('polling: 4hello -> 4hello; bAQIDBA== -> bAQIDBA==; a mixed payload comes back identical', async () => {
      const p = new Polling(srv, { path: '/engine.io/' });
      await p.handshake();
      await p.postOk('4hello');
      assert.deepEqual(await p.poll(), ['4hello']);
      await p.postOk('bAQIDBA==');
      assert.deepEqual(await p.poll(), ['bAQIDBA==']);
      const mixed = ['4a', 'bAQIDBA==', '4b', b64packet([0, 255, 254, 1, 2]), '4é✓', '40'];
      await p.postOk(mixed.join(SEP));
      const g = await p.get();
      assert.equal(g.text, mixed.join(SEP));
    });

    test('polling: base64 of every byte value and of 1, 2, 3 bytes (padding) round-trips', async () => {
      const p = new Polling(srv, { path: '/engine.io/' });
      await p.handshake();
      const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
      const packets = [b64packet(all), b64packet([250]), b64packet([250, 251]), b64packet([250, 251, 252])];
      await p.postOk(packets.join(SEP));
      assert.equal((await p.get()).text, packets.join(SEP));
    });

    test('polling: an empty binary message (b) -> b', async () => {
      const p = new Polling(srv, { path: '/engine.io/' });
      await p.handshake();
      await p.postOk('b');
      assert.deepEqual(await p.poll(), ['b']);
    });

    test('polling: invalid base64 -> 400 and the session is closed', async () => {
      const p = new Polling(srv, { path: '/engine.io/' });
      await p.handshake();
      const r = await p.post('b@@@@');
      assert.equal(r.status, 400, `${r.status} ${r.text}`);
      await p.assertGone('after invalid base64');
    });

    test('polling answer to a WebSocket binary: after the upgrade, queued blobs arrive as binary frames', async () => {
      const p = new Polling(srv, { path: '/engine.io/' });
      await p.handshake();
      await p.postOk(['4before', 'bAQIDBA=='].join(SEP)); // echoes queued on polling
      const w = rawWs(srv, `${WS_PATH}&sid=${p.sid}`);
      await w.opened;
      w.send('2probe');
      await w.waitFrame('3probe');
      w.send('5');
      await w.waitFrame((f) => Buffer.isBuffer(f));
      assert.equal(w.frames[1], '4before');
      assert.deepEqual(w.frames[2], Buffer.from([1, 2, 3, 4]));
      w.send('4after');
      await w.waitFrame('4after');
      assertEioError(await p.get(), 400, 3, MESSAGES[3], 'polling after the upgrade');
      w.close(1000);
    });

    test('/socket.io/ is not the Engine.IO endpoint under --path /engine.io/', async () => {
      const p = new Polling(srv, { path: '/socket.io/' });
      const r = await p.get().catch((e) => ({ status: -1, text: e.message }));
      assert.notEqual(r.status, 200, `GET /socket.io/ handshake answered 200: ${r.text}`);
    });

    for (const [name, opts, finalTransport] of [
      ['polling only', { transports: ['polling'] }, 'polling'],
      ['default transports (upgrade)', {}, 'websocket'],
      ['websocket only', { transports: ['websocket'] }, 'websocket'],
    ]) {
      test(`engine.io-client, ${name}: text and binary messages echoed`, async () => {
        const e = new EioSocket(`ws://${srv.host}:${srv.port}`, { path: '/engine.io/', ...opts });
        eios.add(e);
        const msgs = [];
        e.on('message', (m) => msgs.push(m));
        await once(e, 'open', 5000);
        if (finalTransport === 'websocket' && e.transport.name !== 'websocket') await once(e, 'upgrade', 5000);
        e.send('hello');
        e.send(Buffer.from([1, 2, 3, 4]));
        e.send('é✓');
        await withTimeout((async () => { while (msgs.length < 3) await sleep(10); })(), 5000, 'echoes');
        assert.equal(msgs[0], 'hello');
        assert.deepEqual([...new Uint8Array(msgs[1])], [1, 2, 3, 4]);
        assert.equal(msgs[2], 'é✓');
        assert.equal(e.transport.name, finalTransport);
        e.close();
      });
    }
  });
});
