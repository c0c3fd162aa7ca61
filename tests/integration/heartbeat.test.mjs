// Engine.IO heartbeat and connect timeout, with short intervals:
// --ping-interval 300 --ping-timeout 200 (the timing of the official conformance suites).
// Contains the one slow test of the integration run (~61 s: an idle connection survives
// past 60 s); it runs concurrently with the other cases of this file.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, stopClean, killAll, connectClient, ackRoundTrip, assertStillServes,
  closeClients, closeRaws, RawWs, openRaw, sleep, once,
} from './lib/server.mjs';

after(async () => {
  closeClients();
  closeRaws();
  await killAll();
});

const HB = ['--ping-interval', '300', '--ping-timeout', '200'];

describe('heartbeat (ping interval 300 ms, ping timeout 200 ms)', () => {
  let srv;
  let witness;
  before(async () => {
    srv = await startServer(HB);
    witness = await connectClient(srv.url);
  });

  describe('cases', { concurrency: true }, () => {
    test('[slow ~61 s] an idle socket.io-client stays connected past 60 s', { timeout: 90000 }, async () => {
      const s = await connectClient(srv.url);
      const id = s.id;
      let pings = 0;
      const disconnects = [];
      s.io.on('ping', () => pings++);
      s.on('disconnect', (reason) => disconnects.push(reason));
      await sleep(61000);
      assert.deepEqual(disconnects, [], 'the idle client was disconnected');
      assert.equal(s.connected, true);
      assert.equal(s.id, id, 'the client reconnected (socket id changed)');
      // 61 s / 300 ms = ~200 pings; leave room for a slow sanitizer build.
      assert.ok(pings >= 120, `only ${pings} pings in 61 s with a 300 ms interval`);
      assert.deepEqual(await ackRoundTrip(s, 'after-idle', ['still here']), ['still here']);
      s.disconnect();
    });

    test('the server pings every ~300 ms and a client answering "3" stays connected', async () => {
      const raw = await openRaw(srv);
      const t0 = raw.openedAt;
      await sleep(2000);
      assert.equal(raw.closeInfo, null, `closed: ${JSON.stringify(raw.closeInfo)}`);
      const pings = raw.frames.filter((f) => f === '2').length;
      assert.ok(pings >= 4 && pings <= 8, `${pings} pings in 2 s with a 300 ms interval`);
      raw.send('42["x"]');
      await raw.waitFrame('42["x"]');
      raw.terminate();
      assert.ok(t0 > 0);
    });

    test('the first ping comes ~300 ms after the open packet', async () => {
      const raw = new RawWs(srv);
      await raw.handshake();
      const t0 = performance.now();
      await raw.waitFrame('2', 3000);
      const dt = performance.now() - t0;
      assert.ok(dt >= 200 && dt < 1000, `first ping after ${dt.toFixed(0)} ms`);
      raw.terminate();
    });

    test('a client that never answers pings is closed at ~500 ms after open', async () => {
      const raw = new RawWs(srv, { autoPong: false });
      await raw.handshake();
      raw.send('40');
      await raw.waitFrame(/^40\{/);
      await raw.waitClose(5000);
      const dt = raw.closedAt - raw.openedAt;
      assert.ok(raw.frames.includes('2'), 'the server never pinged');
      assert.ok(dt >= 400 && dt <= 1500, `closed ${dt.toFixed(0)} ms after open, expected ~500`);
      await assertStillServes(witness);
    });

    test('timers are millisecond-accurate: unanswered sessions close near 500 ms, not on a coarse tick', async () => {
      const times = [];
      for (let i = 0; i < 3; i++) {
        const raw = new RawWs(srv, { autoPong: false });
        await raw.handshake();
        raw.send('40');
        await raw.waitClose(5000);
        times.push(raw.closedAt - raw.openedAt);
      }
      times.sort((x, y) => x - y);
      assert.ok(times[1] >= 450 && times[1] < 800, `median close after ${times[1].toFixed(0)} ms (all: ${times.map((t) => t.toFixed(0))})`);
    });

    test('other traffic does not replace the pong: a chatty client that never pongs is dropped', async () => {
      const raw = new RawWs(srv, { autoPong: false });
      await raw.handshake();
      raw.send('40');
      await raw.waitFrame(/^40\{/);
      const timer = setInterval(() => {
        if (!raw.closeInfo) raw.send('42["chat"]');
      }, 50);
      try {
        await raw.waitClose(5000);
      } finally {
        clearInterval(timer);
      }
      const dt = raw.closedAt - raw.openedAt;
      assert.ok(dt >= 400 && dt <= 1500, `closed ${dt.toFixed(0)} ms after open, expected ~500`);
      await assertStillServes(witness);
    });

    test('a socket.io-client whose engine stops answering pings is dropped by the server', async () => {
      const s = await connectClient(srv.url);
      // Drop the engine's pongs: the server's pings go unanswered.
      const engine = s.io.engine;
      const origSend = engine._sendPacket.bind(engine);
      engine._sendPacket = (type, ...rest) => (type === 'pong' ? undefined : origSend(type, ...rest));
      const [reason] = await once(s, 'disconnect', 5000);
      assert.equal(reason, 'transport close');
      await assertStillServes(witness);
    });
  });

  test('server exits 0 on SIGTERM (no leaks)', async () => {
    closeClients();
    await stopClean(srv);
  });
});

describe('--connect-timeout 300', () => {
  let srv;
  let witness;
  before(async () => {
    srv = await startServer(['--connect-timeout', '300']);
    witness = await connectClient(srv.url);
  });

  describe('cases', { concurrency: true }, () => {
    test('a WebSocket that sends no CONNECT ("40") is closed', async () => {
      const raw = new RawWs(srv);
      await raw.handshake();
      await raw.waitClose(5000);
      const dt = raw.closedAt - raw.openedAt;
      assert.ok(dt >= 200 && dt <= 1500, `closed ${dt.toFixed(0)} ms after open, expected ~300`);
      await assertStillServes(witness);
    });

    test('a connection that sent CONNECT in time stays open past the timeout', async () => {
      const s = await connectClient(srv.url);
      await sleep(1000);
      assert.equal(s.connected, true);
      assert.deepEqual(await ackRoundTrip(s, 'x', [1]), [1]);
      s.disconnect();
    });
  });

  test('server exits 0 on SIGTERM (no leaks)', async () => {
    closeClients();
    await stopClean(srv);
  });
});
