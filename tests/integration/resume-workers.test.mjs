// Connection state recovery with workers (issue 12 with issue 11): `echo --workers 2`. The
// kernel picks a worker for every new TCP connection, so a reconnecting client may land on the
// worker that does not hold its session. pulsec-client names the session in its handshake
// (`pulsec_resume`, its last Socket.IO id, which names the worker) and the worker it lands on
// hands the connection to the owner, so every reconnect recovers, over WebSocket and polling.
// The plain socket.io-client sends no such hint: landing on the owner it recovers, landing on
// the other worker it gets a clean fresh session (the owner's copy waits out its window).

import { test, after } from 'node:test';
import assert from 'node:assert/strict';

import { startServer, stopClean, killAll, withTimeout, io } from './lib/server.mjs';
import { CutProxy } from './lib/proxy.mjs';
import { recoveringClient, attachEcho, streamRecorder, pool, checkCounter, until, cutAndWait } from './lib/resume.mjs';

const clients = new Set();
const proxies = new Set();
after(async () => {
  for (const c of clients) c.close();
  for (const p of proxies) await p.close();
  await killAll();
});

async function workersServer() {
  const srv = await startServer(['--workers', '2', '--resume-window', '60000', '--ping-interval', '1000', '--ping-timeout', '2000']);
  const proxy = await CutProxy.start(srv.port);
  proxies.add(proxy);
  return { srv, proxy };
}

for (const transport of ['websocket', 'polling']) {
  test(`pulsec-client over ${transport}: every reconnect reaches the worker holding the session`, async () => {
    const { srv, proxy } = await workersServer();
    const client = recoveringClient(proxy.url, { transports: [transport] });
    clients.add(client);
    const { bridge, channelId } = await attachEcho(client);
    const home = (await bridge.request('stats', null, { timeout: 10000 })).worker;
    const ticks = streamRecorder(bridge, 'tick');
    await bridge.request('stream', { event: 'tick', count: 600, interval_ms: 3 }, { timeout: 10000 });
    const values = pool(100, 2, () => bridge.request('incr', { key: 'w' }, { timeout: 30000 }));
    // At least 8 reconnects, and as many more (up to 30) as it takes for one of them to have
    // landed on the other worker and been handed over (the kernel's pick is a hash).
    let st;
    for (let i = 0; i < 30; i++) {
      assert.equal(await cutAndWait(proxy, client), true, `reconnect ${i + 1} recovered`);
      st = await bridge.request('stats', null, { timeout: 10000 });
      assert.equal(st.worker, home, 'same worker');
      if (i >= 7 && st.taken_over > 0) break;
    }
    assert.ok(st.taken_over > 0, 'no reconnect was handed over by the other worker');
    checkCounter(await withTimeout(values, 30000, 'incr requests'), 100);
    await until(() => ticks.done(600), { ms: 30000, what: 'every event' });
    ticks.check(600);
    assert.equal(client.channel(channelId), bridge);
    st = await bridge.request('stats', null, { timeout: 10000 });
    assert.ok(st.sessions_resumed >= 8);
    assert.equal(st.resume_failed, 0);
    client.close();
    await stopClean(srv, `echo --workers 2 (${transport})`);
  });
}

test('the plain socket.io-client: recovered on the owner, a clean fresh session on the other worker', async () => {
  const { srv, proxy } = await workersServer();
  const socket = io(proxy.url, { transports: ['websocket'], reconnectionDelay: 20, reconnectionDelayMax: 50, forceNew: true });
  try {
    await withTimeout(new Promise((r) => socket.once('connect', r)), 10000, 'connect');
    const outcomes = { recovered: 0, fresh: 0 };
    for (let i = 0; i < 30 && !(outcomes.recovered && outcomes.fresh); i++) {
      const before = socket.id;
      proxy.cutAll();
      await withTimeout(new Promise((r) => socket.once('connect', r)), 10000, 'reconnect');
      if (socket.recovered) {
        assert.equal(socket.id, before, 'a recovered socket keeps its id');
        outcomes.recovered++;
      } else {
        assert.notEqual(socket.id, before);
        outcomes.fresh++;
      }
      // Either way the connection serves.
      const reply = await withTimeout(new Promise((r) => socket.emit('ack-me', i, (...a) => r(a))), 5000, 'ack');
      assert.deepEqual(reply, [i]);
    }
    assert.ok(outcomes.fresh > 0, `never landed on the other worker: ${JSON.stringify(outcomes)}`);
    assert.ok(outcomes.recovered > 0, `never landed on the owner: ${JSON.stringify(outcomes)}`);
  } finally {
    socket.disconnect();
  }
  await stopClean(srv, 'echo --workers 2 (plain client)');
});
