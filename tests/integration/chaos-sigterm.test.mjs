// Issue 7 chaos: SIGTERM under load. 200 clients (150 raw channel clients, 20 of which never
// answer the close frame, and 50 socket.io-client) do echo requests back to back, with deferred
// replies and server->client asks pending, when the server gets SIGTERM with
// --shutdown-grace 1000. Every client must see its connection close (close frame 1001, then
// the TCP close; socket.io-client: "transport close"), the server must exit 0 (LeakSanitizer
// clean) within the grace + 1 s, nothing may arrive after a client's close frame, and no request
// may be answered twice or with the wrong payload.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, assertCleanExit, killAll, closeClients, closeTcp, sleep, withTimeout } from './lib/server.mjs';
import { ChannelTestClient, openMonitor, envelope, randomId } from './lib/channels.mjs';
import { WireClient, closeWires } from './lib/wire.mjs';

after(async () => {
  closeClients();
  closeWires();
  closeTcp();
  await killAll();
});

const GRACE = 1000;
const N_RAW = 150;
const N_DEAF = 20; // raw clients that never answer the close frame
const N_SIO = 50;

test('SIGTERM under load: every client sees the close, exit 0 within grace + 1 s, nothing after the close', { timeout: 60000 }, async (t) => {
  const srv = await startServer(['--shutdown-grace', String(GRACE)]);
  const raws = await Promise.all(
    Array.from({ length: N_RAW }, (_, i) => WireClient.connect(srv, { closeReply: i >= N_DEAF, timeoutMs: 20000 })),
  );
  const sios = await Promise.all(Array.from({ length: N_SIO }, () => ChannelTestClient.connect(srv.url, { timeout: 20000 })));
  const all = [...raws, ...sios];
  const views = await Promise.all(all.map((c) => c.attachEcho()));
  const sioAfterDisconnect = sios.map(() => []);
  sios.forEach((c, i) => {
    c.socket.on('disconnect', () => c.socket.onAny((...a) => sioAfterDisconnect[i].push(a)));
  });

  let stopping = false;
  const answered = all.map(() => 0);
  const problems = [];
  const loops = all.map(async (c, i) => {
    const { channel } = views[i];
    // Pending work the shutdown must complete: a server request nobody answers, a long defer.
    c.emit(channel, 'ask', { event: 'hang', payload: i, timeout_ms: 0 });
    c.send(envelope({ channel, event: 'defer', payload: { ms: 30000 }, requestId: randomId('long-') }));
    for (let n = 0; ; n++) {
      const isRaw = i < N_RAW;
      if (isRaw ? c.ended || c.closeFrame : !c.connected) return;
      const requestId = randomId(`r${i}-`);
      const event = n % 5 === 4 ? 'defer' : 'echo';
      const payload = event === 'defer' ? { ms: 20, i, n } : { i, n };
      const from = c.mark();
      c.send(envelope({ channel, event, payload, requestId }));
      let res;
      try {
        res = await c.waitFor((m) => m && m.responseTo === requestId, { from, ms: 15000, what: `response ${i}/${n}` });
      } catch (e) {
        if (stopping) return; // closed before its answer: fine, it is never answered
        throw e;
      }
      if (JSON.stringify(res.payload) !== JSON.stringify(payload)) problems.push(`client ${i}: ${JSON.stringify(res)} for ${JSON.stringify(payload)}`);
      answered[i]++;
    }
  });
  const loopsDone = Promise.all(loops.map((p, i) => p.catch((e) => problems.push(`client ${i}: ${e.stack || e}`))));

  await sleep(1500);
  const mon = await openMonitor(srv.url);
  const st = await mon.stats();
  assert.equal(st.asks.twice, 0);
  assert.ok(st.asks.started >= all.length, `asks started ${st.asks.started}`);
  const answeredBefore = answered.reduce((a, b) => a + b, 0);
  assert.ok(answered.every((n) => n > 0), 'every client got answers before the stop');

  stopping = true;
  const t0 = performance.now();
  const stopped = srv.stop('SIGTERM', GRACE + 10000);
  const exitAt = srv.exited.then(() => performance.now());
  const closes = await Promise.all(
    raws.map((c) => withTimeout(c.ended_, GRACE + 3000, 'TCP close').then(() => c.endedAt - t0)),
  );
  const sioReasons = await Promise.all(
    sios.map((c) => withTimeout(c.waitDisconnect(GRACE + 3000), GRACE + 3500, 'disconnect').then((d) => d.reason)),
  );
  const result = await stopped;
  const exitMs = (await exitAt) - t0;
  await loopsDone;
  mon.close();

  assertCleanExit(result, 'server stopped under load');
  assert.ok(exitMs < GRACE + 1000, `server exited ${exitMs.toFixed(0)} ms after SIGTERM (grace ${GRACE} ms)`);
  for (let i = 0; i < N_RAW; i++) {
    const c = raws[i];
    assert.equal(c.closeFrame?.code, 1001, `raw client ${i}: close frame ${JSON.stringify(c.closeFrame)}`);
    assert.deepEqual(c.afterClose.map((f) => f.text.slice(0, 100)), [], `raw client ${i}: frames after the close frame`);
    const late = c.log.filter((m) => m.__at > c.closeFrame.at);
    assert.deepEqual(late, [], `raw client ${i}: messages after the close`);
    // Each request answered at most once.
    const counts = new Map();
    for (const m of c.log) if (typeof m.responseTo === 'string') counts.set(m.responseTo, (counts.get(m.responseTo) ?? 0) + 1);
    for (const [id, n] of counts) assert.equal(n, 1, `raw client ${i}: ${id} answered ${n} times`);
  }
  for (let i = 0; i < N_SIO; i++) {
    assert.equal(sioReasons[i], 'transport close', `socket.io client ${i} disconnect reason`);
    assert.deepEqual(sioAfterDisconnect[i], [], `socket.io client ${i}: events after its disconnect`);
    const counts = new Map();
    for (const m of sios[i].log) if (m && typeof m.responseTo === 'string') counts.set(m.responseTo, (counts.get(m.responseTo) ?? 0) + 1);
    for (const [id, n] of counts) assert.equal(n, 1, `socket.io client ${i}: ${id} answered ${n} times`);
  }
  assert.deepEqual(problems, []);
  // The clients that answered the close were let go at once; the deaf ones at the grace.
  const replying = closes.slice(N_DEAF).sort((a, b) => a - b);
  const deaf = closes.slice(0, N_DEAF).sort((a, b) => a - b);
  t.diagnostic(
    `${answeredBefore} answers in 1.5 s before SIGTERM; exit after ${exitMs.toFixed(0)} ms; ` +
      `TCP closed after ${replying[0].toFixed(0)}..${replying[replying.length - 1].toFixed(0)} ms (close answered), ` +
      `${deaf[0].toFixed(0)}..${deaf[deaf.length - 1].toFixed(0)} ms (close never answered)`,
  );
  assert.ok(deaf[0] >= GRACE - 100, `a client that never answered the close was dropped after ${deaf[0].toFixed(0)} ms, before the grace`);
});
