// Issue 7 chaos: channel ids are checked against the owning session. 50 socket.io clients each
// attach /echo, learn every other client's channel id, and all at once throw everything at the
// 49 foreign channels: events, requests, asks (which would make the server send a request to
// the owner), "close", "__close__", deferred requests, responses to made-up request ids.
// Nobody may receive anything they did not cause, every foreign request is answered exactly once
// with "Channel closed", no foreign handler runs (no ask starts), and every channel still works.
// Ends with SIGTERM -> exit 0 (LeakSanitizer clean).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, stopClean, killAll, closeClients, sleep } from './lib/server.mjs';
import { ChannelTestClient, openMonitor, pollUntil, envelope, randomId } from './lib/channels.mjs';
import { assertEchoInvariants } from './lib/wire.mjs';

after(async () => {
  closeClients();
  await killAll();
});

test('50 clients try every other client\'s channel ids at once: refused, and nobody sees anything they did not cause', { timeout: 120000 }, async () => {
  const N = 50;
  const srv = await startServer();
  const mon = await openMonitor(srv.url);
  const before = await mon.stats();
  const clients = await Promise.all(Array.from({ length: N }, () => ChannelTestClient.connect(srv.url)));
  const views = [];
  for (const c of clients) views.push(await c.attachEcho());
  const channels = views.map((v) => v.channel);
  assert.equal(new Set(channels).size, N, 'channel ids are unique');
  // Any request the server sends to a client now would come from a foreign ask: record it.
  const requestsSeen = clients.map(() => []);
  clients.forEach((c, i) => c.answer(channels[i], '*', (payload, msg) => void requestsSeen[i].push(msg)));
  const marks = clients.map((c) => c.mark());

  // Everyone attacks everyone else, concurrently.
  const sentRequests = clients.map(() => new Set());
  for (let i = 0; i < N; i++) {
    const c = clients[i];
    for (let j = 0; j < N; j++) {
      if (j === i) continue;
      const ch = channels[j];
      const from = { from: i, to: j };
      c.emit(ch, 'echo', from);
      c.emit(ch, 'ask', { event: 'stolen', payload: from, timeout_ms: 0 });
      c.emit(ch, 'close', from);
      c.send(envelope({ channel: ch, event: '__close__', payload: null }));
      c.send(envelope({ channel: ch, responseTo: randomId('r-'), payload: from }));
      for (const event of ['echo', 'defer', 'stats', 'fail']) {
        const requestId = randomId(`${event}-`);
        sentRequests[i].add(requestId);
        c.send(envelope({ channel: ch, event, payload: event === 'defer' ? { ms: 10 } : from, requestId }));
      }
    }
  }

  // Every foreign request gets exactly one answer: the error "Channel closed".
  await Promise.all(
    clients.map((c, i) =>
      pollUntil(
        async () => c.log.slice(marks[i]).filter((m) => m && sentRequests[i].has(m.responseTo)).length,
        (n) => n >= sentRequests[i].size,
        { ms: 60000, every: 50 },
      ),
    ),
  );
  await sleep(300); // room for anything late (a duplicate, a deferred reply)
  for (let i = 0; i < N; i++) {
    const got = clients[i].log.slice(marks[i]);
    const answers = new Map();
    for (const m of got) {
      if (m && sentRequests[i].has(m.responseTo)) {
        assert.equal(m.error, 'Channel closed', `client ${i}: a foreign request was answered: ${JSON.stringify(m)}`);
        assert.equal(m.payload, undefined);
        answers.set(m.responseTo, (answers.get(m.responseTo) ?? 0) + 1);
      }
    }
    assert.equal(answers.size, sentRequests[i].size, `client ${i}: ${answers.size} of ${sentRequests[i].size} foreign requests answered`);
    for (const [id, n] of answers) assert.equal(n, 1, `client ${i}: ${id} answered ${n} times`);
    // Nothing else arrived: no event, request, __close__ or response it did not cause.
    const uncaused = got.filter((m) => !(m && sentRequests[i].has(m.responseTo)));
    assert.deepEqual(uncaused, [], `client ${i} received something it did not cause`);
    assert.deepEqual(requestsSeen[i], [], `client ${i} received a server request caused by someone else`);
    assert.equal(clients[i].connected, true, `client ${i} was disconnected`);
  }

  const mid = await mon.stats();
  assert.equal(mid.asks.started, before.asks.started, 'a foreign ask reached a handler');
  assert.equal(mid.channels, before.channels + N, 'a foreign close closed a channel');
  assert.equal(mid.views, before.views + N);
  assert.equal(mid.protocol_errors, before.protocol_errors);

  // Each channel still works for its owner, including a server request.
  await Promise.all(
    clients.map(async (c, i) => {
      await c.assertEchoes(channels[i], `owner ${i}`);
      c.answer(channels[i], 'mine', (p) => ({ payload: p }));
      const from = c.mark();
      c.emit(channels[i], 'ask', { event: 'mine', payload: i, timeout_ms: 5000 });
      const r = await c.waitEvent(channels[i], 'ask:result', { from, ms: 10000 });
      assert.deepEqual(r.payload, { status: 'ok', payload: i });
    }),
  );

  for (const c of clients) c.disconnect();
  const end = await pollUntil(() => mon.stats(), (s) => s.views === before.views, { ms: 10000 });
  assertEchoInvariants(end, { viewsAttached: before.views_disposed + N, what: 'after the id attack' });
  assert.equal(end.asks.ok - before.asks.ok, N);
  assert.equal(end.channels, before.channels);
  mon.close();
  await stopClean(srv);
});
