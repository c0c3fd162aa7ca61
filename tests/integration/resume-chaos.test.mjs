// Connection state recovery under random cuts (issue 12's "done means"): pulsec-client over the
// official socket.io-client, through a proxy that cuts every connection about every 200 ms,
// while the server streams 5,000 events, the client makes 2,000 requests (incr: a request
// handled twice would show in the counter) and the server makes 500 requests of the client.
// Zero lost, zero duplicated, order kept, every request completed exactly once, one session
// throughout. Over WebSocket and over long-polling.
//
// `make test` runs it at that size; `make soak` sets RESUME_SOAK=N to multiply every count by N
// (and the run's length with it).

import { test, after } from 'node:test';
import assert from 'node:assert/strict';

import { startServer, stopClean, killAll, withTimeout } from './lib/server.mjs';
import { CutProxy } from './lib/proxy.mjs';
import { recoveringClient, attachEcho, streamRecorder, askRecorder, pool, checkCounter, until } from './lib/resume.mjs';

const SCALE = Math.max(1, Number(process.env.RESUME_SOAK) || 1);
const EVENTS = 5000 * SCALE;
const REQUESTS = 2000 * SCALE;
const ASKS = 500 * SCALE;
const TIMEOUT = 240000 * SCALE;

const clients = new Set();
const proxies = new Set();
after(async () => {
  for (const c of clients) c.close();
  for (const p of proxies) await p.close();
  await killAll();
});

/** A seeded generator, so that a failing run's cut moments can be replayed. */
function lcg(seed) {
  let x = seed >>> 0;
  return () => ((x = (Math.imul(x, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

async function chaos(t, transports, args) {
  const seed = Number(process.env.RESUME_SEED) || (Date.now() & 0xffff);
  t.diagnostic(`seed ${seed} (RESUME_SEED replays the cut moments)`);
  const srv = await startServer(['--resume-window', '60000', ...args]);
  const proxy = await CutProxy.start(srv.port);
  proxies.add(proxy);
  const client = recoveringClient(proxy.url, { transports });
  clients.add(client);
  const { view, bridge, channelId } = await attachEcho(client);
  const ticks = streamRecorder(bridge, 'tick');
  const asks = askRecorder(bridge, 'q');
  const started = Date.now();

  // The stream paces itself (1 ms timers); requests and asks keep a few in flight each.
  await bridge.request('stream', { event: 'tick', count: EVENTS, interval_ms: 1 }, { timeout: 30000 });
  proxy.chaos({ everyMs: 200, jitter: 0.5, rnd: lcg(seed) });
  const requests = pool(REQUESTS, 8, () => bridge.request('incr', { key: 'chaos' }, { timeout: TIMEOUT }));
  const askDone = pool(ASKS, 4, (i) =>
    bridge.request('ask', { event: 'q', payload: { i }, timeout_ms: TIMEOUT }, { timeout: TIMEOUT }),
  );
  const values = await withTimeout(requests, TIMEOUT, 'every incr request');
  await withTimeout(askDone, TIMEOUT, 'every ask request');
  await until(() => ticks.done(EVENTS) && asks.done(ASKS), { ms: TIMEOUT, what: 'every event and ask' });
  proxy.stopChaos();
  const cuts = proxy.cuts;
  await until(() => client.status === 'connected', { ms: 20000, what: 'the last reconnect' });

  ticks.check(EVENTS);
  asks.check(ASKS);
  checkCounter(values, REQUESTS);
  assert.equal(await bridge.request('get', { key: 'chaos' }, { timeout: 10000 }), REQUESTS);
  assert.ok(cuts >= 10, `only ${cuts} cuts`);
  const fresh = client.log.connects.slice(1).filter((r) => !r).length;
  assert.equal(fresh, 0, `${fresh} reconnects got a fresh session`);
  assert.equal(client.channel(channelId), bridge);
  assert.equal(bridge.closed, false);
  assert.equal(view.props.channelId, channelId);
  const st = await bridge.request('stats', null, { timeout: 10000 });
  assert.equal(st.sessions_total, 1, 'one session throughout');
  assert.equal(st.views_disposed, 0);
  assert.equal(st.asks.twice, 0);
  assert.equal(st.asks.ok, ASKS);
  assert.equal(st.resume_failed, 0);
  assert.deepEqual(client.log.errors, []);
  t.diagnostic(
    `${transports[0]}: ${EVENTS} events, ${REQUESTS} requests, ${ASKS} server requests in ${Date.now() - started} ms; ` +
      `${cuts} cuts, ${client.log.connects.length - 1} recovered reconnects, server resumed ${st.sessions_resumed}`,
  );
  client.close();
  await stopClean(srv, `echo server (chaos, ${transports[0]})`);
}

test('random cuts every ~200 ms over WebSocket: nothing lost, nothing twice, requests exactly once', { timeout: TIMEOUT + 60000 }, (t) =>
  chaos(t, ['websocket'], ['--ping-interval', '1000', '--ping-timeout', '2000']),
);

test('random cuts every ~200 ms over long-polling: the same', { timeout: TIMEOUT + 60000 }, (t) =>
  chaos(t, ['polling'], ['--ping-interval', '1000', '--ping-timeout', '1000']),
);
