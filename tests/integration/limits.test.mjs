// Issue 7 limits, each against the echo fixture started with a small bound:
//   --max-queued       a client that stops reading is cut off (slow_consumers), its view is
//                      disposed, its pending requests complete "closed", and a well-behaved client
//                      on the same server keeps its normal latency; server memory stays flat;
//   --max-connections  the connection beyond the bound gets 503 and is closed (refused);
//   --max-views        attach_error "Too many views";
//   --max-channels     the fixture refuses the attach whose channel cannot be opened;
//   --max-pending      "Too many pending requests" / ask:result {"status":"error","error":"limit reached"}.
// Every server ends with SIGTERM -> exit 0 (LeakSanitizer clean with the ASan build).
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, stopClean, killAll, closeClients, closeTcp, sleep, withTimeout } from './lib/server.mjs';
import { ChannelTestClient, openMonitor, pollUntil, envelope, randomId } from './lib/channels.mjs';
import { Polling, closePollConns } from './lib/polling.mjs';
import { WireClient, closeWires, tcpConnect, upgradeRequest, rssBytes } from './lib/wire.mjs';

after(async () => {
  closeClients();
  closeWires();
  closeTcp();
  closePollConns();
  await killAll();
});

const BIG = 'x'.repeat(32 * 1024);

/**
 * A witness that keeps doing echo round trips on its own channel until stop(); resolves with
 * the sorted latencies (ms). Any failed or wrong round trip rejects.
 */
function witnessLoop(mon) {
  const lat = [];
  let stopped = false;
  const done = (async () => {
    let n = 0;
    while (!stopped) {
      const t = performance.now();
      const payload = { n: n++, tag: 'witness' };
      const res = await mon.client.request(mon.channel, 'echo', payload, { ms: 5000 });
      assert.deepEqual(res.payload, payload, `witness round trip ${n}: ${JSON.stringify(res)}`);
      lat.push(performance.now() - t);
      await sleep(5);
    }
    return lat.sort((a, b) => a - b);
  })();
  return { stop: () => ((stopped = true), done), done };
}

function assertNormalLatency(lat, what) {
  assert.ok(lat.length >= 5, `${what}: only ${lat.length} witness round trips`);
  const p50 = lat[lat.length >> 1];
  const max = lat[lat.length - 1];
  assert.ok(p50 < 50 && max < 500, `${what}: witness latency p50 ${p50.toFixed(1)} ms, max ${max.toFixed(1)} ms (${lat.length} round trips)`);
}

describe('--max-queued 65536: slow consumers', () => {
  test('a WebSocket client that stops reading while echo events pour out is cut off; others unaffected', { timeout: 60000 }, async () => {
    // ASan's quarantine keeps freed memory resident (up to 256 MiB): off for this server, so
    // that its RSS shows what it holds.
    const srv = await startServer(['--max-queued', '65536'], { env: { ASAN_OPTIONS: 'detect_leaks=1:quarantine_size_mb=0' } });
    const mon = await openMonitor(srv.url);
    const before = await mon.stats();

    const w = await WireClient.connect(srv);
    const { channel } = await w.attachEcho();
    // Three server->client requests that the client never answers: pending when it is cut off.
    for (let i = 0; i < 3; i++) w.emit(channel, 'ask', { event: 'hang', payload: i, timeout_ms: 0 });
    await w.waitFor((m) => m.event === 'hang' && m.payload === 2 && m.requestId);
    assert.equal((await w.request(channel, 'echo', 'before')).payload, 'before');

    const rss0 = rssBytes(srv.proc.pid);
    let rssMax = rss0;
    const sampler = setInterval(() => (rssMax = Math.max(rssMax, rssBytes(srv.proc.pid))), 10);
    const witness = witnessLoop(mon);
    await sleep(100);
    w.pause();
    const t0 = performance.now();
    let sent = 0;
    // Up to 64 MiB of echo events (each answered with as much output) while not reading.
    while (!w.ended && sent < 2048 && performance.now() - t0 < 30000) {
      w.emit(channel, 'echo', { i: sent++, big: BIG });
      if (sent % 16 === 0) await sleep(2);
      while (w.sock.writableLength > 1 << 20 && !w.ended) await sleep(5);
    }
    await withTimeout(w.ended_, 10000, `slow client never disconnected (sent ${sent} x 32 KiB)`);
    const cutAfter = performance.now() - t0;
    const st = await pollUntil(() => mon.stats(), (s) => s.sessions === before.sessions, { ms: 5000 });
    await sleep(500);
    clearInterval(sampler);
    const lat = await witness.stop();

    assert.equal(st.sessions, before.sessions, 'the slow session is gone');
    assert.equal(st.views, before.views, 'its view is gone');
    assert.equal(st.channels, before.channels, 'its channel is gone');
    assert.equal(st.views_disposed, before.views_disposed + 1, 'its view was disposed once');
    assert.equal(st.asks.started - before.asks.started, 3);
    assert.equal(st.asks.closed - before.asks.closed, 3, `its 3 pending requests completed closed: ${JSON.stringify(st.asks)}`);
    assert.equal(st.asks.twice, 0);
    assert.ok(sent < 2048, `cut off only after ${sent} x 32 KiB`);
    assertNormalLatency(lat, 'during the flood');
    assert.ok(rssMax - rss0 < 8 * 1024 * 1024, `server RSS grew by ${((rssMax - rss0) / 1048576).toFixed(1)} MiB (sent ${sent} x 32 KiB, cut after ${cutAfter.toFixed(0)} ms)`);
    await mon.client.assertEchoes(mon.channel, 'after the cut');
    assert.equal(st.slow_consumers, (before.slow_consumers ?? 0) + 1, `stats.slow_consumers after the cut: ${JSON.stringify(st)}`);
    mon.close();
    await stopClean(srv);
  });

  test('a client that stops reading while its own asks send big requests to it is cut off; the asks complete closed', { timeout: 60000 }, async () => {
    const srv = await startServer(['--max-queued', '65536']);
    const mon = await openMonitor(srv.url);
    const before = await mon.stats();
    const w = await WireClient.connect(srv);
    const { channel } = await w.attachEcho();
    await sleep(50);
    const witness = witnessLoop(mon);
    w.pause();
    let sent = 0;
    const t0 = performance.now();
    while (!w.ended && sent < 2048 && performance.now() - t0 < 30000) {
      w.emit(channel, 'ask', { event: 'big', payload: { i: sent++, big: BIG }, timeout_ms: 0 });
      if (sent % 16 === 0) await sleep(2);
      while (w.sock.writableLength > 1 << 20 && !w.ended) await sleep(5);
    }
    await withTimeout(w.ended_, 10000, `slow client never disconnected (sent ${sent} asks)`);
    const st = await pollUntil(() => mon.stats(), (s) => s.sessions === before.sessions, { ms: 5000 });
    await sleep(500);
    const lat = await witness.stop();
    const started = st.asks.started - before.asks.started;
    assert.ok(started > 0 && started <= sent, `asks started ${started} of ${sent} sent`);
    assert.equal(st.asks.closed - before.asks.closed, started, `every pending request completed closed: ${JSON.stringify(st.asks)}`);
    assert.equal(st.asks.ok + st.asks.timeout + st.asks.error, before.asks.ok + before.asks.timeout + before.asks.error);
    assert.equal(st.asks.twice, 0);
    assert.equal(st.views_disposed, before.views_disposed + 1);
    assert.equal(st.views, before.views);
    assertNormalLatency(lat, 'during the ask flood');
    assert.equal(st.slow_consumers, (before.slow_consumers ?? 0) + 1, `stats.slow_consumers: ${JSON.stringify(st)}`);
    mon.close();
    await stopClean(srv);
  });

  test('a long-polling client that stops polling while output piles up is cut off', { timeout: 30000 }, async () => {
    const srv = await startServer(['--max-queued', '65536']);
    const mon = await openMonitor(srv.url);
    const before = await mon.stats();
    const p = new Polling(srv);
    await p.handshake();
    await p.connectSio();
    const attachId = randomId('a-');
    await p.postOk(`42${JSON.stringify(['message', { type: 'attach', path: '/echo', attachId }])}`);
    const [ackPkt] = await p.collect(1);
    const ack = JSON.parse(ackPkt.slice(2))[1];
    assert.equal(ack.type, 'attach_ack', ackPkt);
    const channel = ack.props.channelId;
    p.postOk(`42${JSON.stringify(['message', envelope({ channel, event: 'ask', payload: { event: 'hang', payload: 1, timeout_ms: 0 } })])}`);
    // No GET from now on: every echo stays queued on the server.
    let sent = 0;
    for (; sent < 16; sent++) {
      const r = await p.post(`42${JSON.stringify(['message', envelope({ channel, event: 'echo', payload: { i: sent, big: BIG } })])}`);
      if (r.status !== 200) break;
      const s = await mon.stats();
      if (s.sessions === before.sessions) break;
    }
    const st = await pollUntil(() => mon.stats(), (s) => s.sessions === before.sessions, { ms: 5000 });
    assert.equal(st.sessions, before.sessions, `the polling session was not cut off after ${sent} x 32 KiB queued`);
    assert.ok(sent <= 3, `cut off only after ${sent} x 32 KiB queued (limit 64 KiB)`);
    assert.equal(st.views_disposed, before.views_disposed + 1);
    assert.equal(st.asks.closed - before.asks.closed, 1);
    await p.assertGone('cut-off polling session', 'GET');
    await mon.client.assertEchoes(mon.channel);
    assert.equal(st.slow_consumers, (before.slow_consumers ?? 0) + 1, `stats.slow_consumers: ${JSON.stringify(st)}`);
    mon.close();
    await stopClean(srv);
  });

  test('a client that reads keeps working with output far beyond the bound in total', { timeout: 30000 }, async () => {
    const srv = await startServer(['--max-queued', '65536']);
    const mon = await openMonitor(srv.url);
    const before = await mon.stats();
    const w = await WireClient.connect(srv);
    const { channel } = await w.attachEcho();
    // 200 x 32 KiB = 6.4 MiB, in windows of 1 (each waits for its answer).
    for (let i = 0; i < 200; i++) {
      const res = await w.request(channel, 'echo', { i, big: BIG });
      assert.equal(res.payload.i, i);
    }
    const st = await mon.stats();
    assert.equal(st.slow_consumers ?? 0, before.slow_consumers ?? 0);
    assert.equal(st.sessions, before.sessions + 1);
    w.destroy();
    mon.close();
    await stopClean(srv);
  });
});

describe('--max-connections 20', () => {
  test('the 21st connection gets 503 and is closed; refused counts it; after some close, new connections work', { timeout: 30000 }, async () => {
    const srv = await startServer(['--max-connections', '20']);
    const mon = await openMonitor(srv.url); // connection 1
    const before = await mon.stats();
    assert.equal(before.connections, 1);
    const conns = [];
    for (let i = 0; i < 19; i++) conns.push(await tcpConnect(srv));
    // Each one is served (keep-alive): they are all counted as open.
    await Promise.all(
      conns.map(async (s) => {
        s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
        await pollUntil(async () => s.data.toString('latin1'), (t) => /\r\n\r\n/.test(t), { ms: 5000, every: 10 });
        assert.match(s.data.toString('latin1'), /^HTTP\/1\.1 200 /);
        s.data = Buffer.alloc(0);
      }),
    );
    assert.equal((await mon.stats()).connections, 20);

    const over = await tcpConnect(srv);
    const closedAt = await withTimeout(over.closeP, 5000, 'the 21st connection closed by the server');
    assert.match(over.data.toString('latin1'), /^HTTP\/1\.1 503 /, `21st connection got ${JSON.stringify(over.data.toString('latin1'))}`);
    assert.ok(closedAt);

    // A WebSocket upgrade beyond the bound is refused the same way, before any upgrade.
    const up = await tcpConnect(srv);
    up.write(upgradeRequest(srv));
    await withTimeout(up.closeP, 5000, 'the refused upgrade closed by the server');
    assert.match(up.data.toString('latin1'), /^HTTP\/1\.1 503 /);
    assert.doesNotMatch(up.data.toString('latin1'), / 101 /);
    await assert.rejects(WireClient.connect(srv), /503/);

    let st = await mon.stats();
    const refusedAfter3 = st;
    assert.equal(st.connections, 20);
    await mon.client.assertEchoes(mon.channel, 'the monitor at the bound');

    // Close five; five new ones fit again (a WebSocket client among them), the sixth does not.
    for (const s of conns.splice(0, 5)) s.destroy();
    st = await pollUntil(() => mon.stats(), (s) => s.connections === 15, { ms: 5000 });
    assert.equal(st.connections, 15);
    const w = await WireClient.connect(srv);
    const { channel } = await w.attachEcho();
    const res = await w.request(channel, 'echo', 'fits again');
    assert.equal(res.payload, 'fits again');
    for (let i = 0; i < 4; i++) conns.push(await tcpConnect(srv));
    await sleep(100);
    for (const s of conns) assert.equal(s.destroyed, false, 'an admitted connection was closed');
    const sixth = await tcpConnect(srv);
    await withTimeout(sixth.closeP, 5000, 'the connection beyond the bound closed');
    assert.match(sixth.data.toString('latin1'), /^HTTP\/1\.1 503 /);
    st = await mon.stats();
    assert.equal(st.connections, 20);

    for (const s of conns) s.destroy();
    w.destroy();
    assert.equal(refusedAfter3.refused, (before.refused ?? 0) + 3, `stats.refused after 3 refusals: ${JSON.stringify(refusedAfter3)}`);
    assert.equal(st.refused, (before.refused ?? 0) + 4, `stats.refused after 4 refusals: ${JSON.stringify(st)}`);
    mon.close();
    await stopClean(srv);
  });
});

describe('--max-connections 20 under a connect storm', () => {
  test('300 simultaneous connects: exactly 20 open, every other one 503 and counted; all freed after', { timeout: 30000 }, async () => {
    const srv = await startServer(['--max-connections', '20']);
    const mon = await openMonitor(srv.url);
    const before = await mon.stats();
    const socks = await Promise.all(Array.from({ length: 300 }, () => tcpConnect(srv)));
    const st = await pollUntil(() => mon.stats(), (s) => (s.refused ?? 0) - (before.refused ?? 0) >= 281, { ms: 5000 });
    await sleep(100);
    const refused = socks.filter((s) => /^HTTP\/1\.1 503 /.test(s.data.toString('latin1')));
    const open = socks.filter((s) => !s.destroyed && s.data.length === 0);
    assert.equal(open.length, 19, 'admitted beside the monitor');
    assert.equal(refused.length, 281);
    await Promise.all(refused.map((s) => withTimeout(s.closeP, 5000, 'refused connection closed')));
    assert.equal(st.connections, 20);
    await mon.client.assertEchoes(mon.channel, 'monitor during the storm');
    for (const s of socks) s.destroy();
    const end = await pollUntil(() => mon.stats(), (s) => s.connections === 1, { ms: 5000 });
    assert.equal(end.connections, 1);
    const w = await WireClient.connect(srv);
    assert.equal((await w.request((await w.attachEcho()).channel, 'echo', 'after the storm')).payload, 'after the storm');
    w.destroy();
    assert.equal(st.refused - (before.refused ?? 0), 281, `stats.refused: ${JSON.stringify(st)}`);
    mon.close();
    await stopClean(srv);
  });
});

describe('--max-views 3', () => {
  test('the 4th attach gets attach_error "Too many views"; after a detach, attach works again', async () => {
    const srv = await startServer(['--max-views', '3']);
    const mon = await openMonitor(srv.url);
    const before = await mon.stats();
    const c = await ChannelTestClient.connect(srv.url);
    const views = [];
    for (let i = 0; i < 3; i++) views.push(await c.attachEcho());
    const fourth = await c.attach('/echo');
    assert.equal(fourth.type, 'attach_error', JSON.stringify(fourth));
    assert.equal(fourth.error, 'Too many views');
    // The refused attach changed nothing: the three views all work.
    for (const v of views) await c.assertEchoes(v.channel);
    let st = await mon.stats();
    assert.equal(st.views, before.views + 3);
    assert.equal(st.views_disposed, before.views_disposed);
    // Another session has its own bound.
    const d = await ChannelTestClient.connect(srv.url);
    for (let i = 0; i < 3; i++) await d.attachEcho();
    assert.equal((await d.attach('/echo')).error, 'Too many views');
    d.disconnect();

    c.detach(views[1].attachId);
    await c.waitFor((m) => m.event === '__close__' && m.channel === views[1].channel);
    const again = await c.attachEcho();
    await c.assertEchoes(again.channel);
    assert.equal((await c.attach('/echo')).error, 'Too many views');
    st = await pollUntil(() => mon.stats(), (s) => s.views === before.views + 3, { ms: 5000 });
    assert.equal(st.views, before.views + 3);
    assert.equal(st.views_disposed, before.views_disposed + 1 + 3, 'one detach + the other session\'s three');
    c.disconnect();
    st = await pollUntil(() => mon.stats(), (s) => s.views === before.views, { ms: 5000 });
    assert.equal(st.views_disposed, before.views_disposed + 7);
    mon.close();
    await stopClean(srv);
  });
});

describe('--max-channels 2 --max-views 5', () => {
  test('the 3rd /echo view cannot open its channel: attach refused, nothing leaks, the others work', async () => {
    const srv = await startServer(['--max-channels', '2', '--max-views', '5']);
    const mon = await openMonitor(srv.url);
    const before = await mon.stats();
    const c = await ChannelTestClient.connect(srv.url);
    const a = await c.attachEcho();
    const b = await c.attachEcho();
    const third = await c.attach('/echo');
    assert.equal(third.type, 'attach_error', `3rd attach with 2 channels open: ${JSON.stringify(third)}`);
    assert.equal(typeof third.error, 'string');
    await c.assertEchoes(a.channel);
    await c.assertEchoes(b.channel);
    let st = await mon.stats();
    assert.equal(st.channels, before.channels + 2);
    assert.equal(st.views, before.views + 2);
    assert.equal(st.views_disposed, before.views_disposed, 'a refused view is never disposed');
    // The server closing one channel frees a slot.
    c.emit(a.channel, 'close', null);
    await c.waitFor((m) => m.event === '__close__' && m.channel === a.channel);
    const fourth = await c.attachEcho();
    await c.assertEchoes(fourth.channel);
    assert.equal((await c.attach('/echo')).type, 'attach_error');
    c.detach(b.attachId);
    await c.waitFor((m) => m.event === '__close__' && m.channel === b.channel);
    const fifth = await c.attachEcho();
    await c.assertEchoes(fifth.channel);
    c.disconnect();
    st = await pollUntil(() => mon.stats(), (s) => s.views === before.views, { ms: 5000 });
    // Attached: a, b, fourth, fifth.
    assert.equal(st.views_disposed, before.views_disposed + 4);
    assert.equal(st.channels, before.channels);
    mon.close();
    await stopClean(srv);
  });
});

describe('--max-pending 4', () => {
  test('5 deferred requests in flight on one channel: the 5th gets "Too many pending requests"', async () => {
    const srv = await startServer(['--max-pending', '4']);
    const c = await ChannelTestClient.connect(srv.url);
    const v = await c.attachEcho();
    const other = await c.attachEcho();
    const from = c.mark();
    const ids = [];
    const t0 = performance.now();
    for (let i = 0; i < 5; i++) {
      const requestId = randomId('d-');
      ids.push(requestId);
      c.send(envelope({ channel: v.channel, event: 'defer', payload: { ms: 500, i }, requestId }));
    }
    const fifth = await c.waitFor((m) => m.responseTo === ids[4], { from, what: '5th response' });
    assert.equal(fifth.error, 'Too many pending requests', JSON.stringify(fifth));
    assert.ok(performance.now() - t0 < 400, 'the refusal is immediate');
    // The bound is per channel: another channel still takes deferred requests meanwhile.
    const elsewhere = await c.request(other.channel, 'defer', { ms: 10 });
    assert.deepEqual(elsewhere.payload, { ms: 10 });
    for (let i = 0; i < 4; i++) {
      const r = await c.waitFor((m) => m.responseTo === ids[i], { from, ms: 3000, what: `deferred reply ${i}` });
      assert.deepEqual(r.payload, { ms: 500, i });
      assert.equal(r.error, undefined);
    }
    // Each requestId answered exactly once.
    for (const id of ids) assert.equal(c.log.filter((m) => m.responseTo === id).length, 1);
    // Slots are free again.
    const again = await Promise.all([0, 1, 2, 3].map((i) => c.request(v.channel, 'defer', { ms: 20, i })));
    for (const r of again) assert.equal(r.error, undefined, JSON.stringify(r));
    c.disconnect();
    await stopClean(srv);
  });

  test('5 unanswered server asks: the 5th ask:result is {"status":"error","error":"limit reached"}', async () => {
    const srv = await startServer(['--max-pending', '4']);
    const c = await ChannelTestClient.connect(srv.url);
    const v = await c.attachEcho();
    const other = await c.attachEcho();
    const before = await c.stats(other.channel);
    const from = c.mark();
    for (let i = 0; i < 5; i++) c.emit(v.channel, 'ask', { event: 'q', payload: i, timeout_ms: 0 });
    const result = await c.waitEvent(v.channel, 'ask:result', { from });
    assert.deepEqual(result.payload, { status: 'error', error: 'limit reached' });
    await sleep(100);
    const asked = c.log.slice(from).filter((m) => m.event === 'q' && m.requestId);
    assert.deepEqual(asked.map((m) => m.payload), [0, 1, 2, 3], 'exactly the first four reached the client');
    assert.equal(c.log.slice(from).filter((m) => m.event === 'ask:result').length, 1);
    // Another channel is not affected.
    c.answer(other.channel, 'q', (p) => ({ payload: p }));
    const mo = c.mark();
    c.emit(other.channel, 'ask', { event: 'q', payload: 'other', timeout_ms: 0 });
    const ro = await c.waitEvent(other.channel, 'ask:result', { from: mo });
    assert.deepEqual(ro.payload, { status: 'ok', payload: 'other' });
    // Answering one frees one slot.
    const m1 = c.mark();
    c.send(envelope({ channel: v.channel, responseTo: asked[0].requestId, payload: 'a0' }));
    const r0 = await c.waitEvent(v.channel, 'ask:result', { from: m1 });
    assert.deepEqual(r0.payload, { status: 'ok', payload: 'a0' });
    const m2 = c.mark();
    c.emit(v.channel, 'ask', { event: 'q', payload: 5, timeout_ms: 0 });
    await c.waitFor((m) => m.event === 'q' && m.payload === 5 && m.requestId, { from: m2 });
    c.emit(v.channel, 'ask', { event: 'q', payload: 6, timeout_ms: 0 });
    const r6 = await c.waitEvent(v.channel, 'ask:result', { from: m2 });
    assert.deepEqual(r6.payload, { status: 'error', error: 'limit reached' });
    const st = await c.stats(other.channel);
    assert.equal(st.asks.error - before.asks.error, 0, 'a refused ask never started, so it never completes');
    assert.equal(st.asks.started - before.asks.started, 6, '4 + other + 1');
    assert.equal(st.asks.ok - before.asks.ok, 2);
    c.disconnect();
    const mon = await openMonitor(srv.url);
    const end = await pollUntil(() => mon.stats(), (s) => s.views === 1, { ms: 5000 });
    assert.equal(end.asks.closed - before.asks.closed, 4, 'the 4 still pending completed closed on disconnect');
    assert.equal(end.asks.twice, 0);
    mon.close();
    await stopClean(srv);
  });
});
