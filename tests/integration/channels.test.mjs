// Views and channels (DESIGN.md §3-4, issue 3) against the echo fixture's "/echo" view, driven
// by the official socket.io-client sending the exact envelopes as `message` events.
//
// One server for the whole file; the tests run one after another because several of them
// assert exact deltas of the server's and the fixture's counters (the `stats` request), which
// are global to the process. A separate monitor connection with its own /echo view reads them.
import { describe, test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, stopClean, killAll, closeClients, sleep } from './lib/server.mjs';
import { ChannelTestClient, openMonitor, pollUntil, envelope, randomId, HEX_ID } from './lib/channels.mjs';

after(async () => {
  closeClients();
  await killAll();
});

const isClose = (channel) => (m) =>
  m && m.type === 'channel_message' && m.channel === channel && m.event === '__close__';

describe('channels and views on /echo', () => {
  let srv;
  let mon;

  before(async () => {
    srv = await startServer();
    mon = await openMonitor(srv.url);
  });

  // Clients a test opens are disconnected after it, also when it fails, so that one failure
  // does not change the counters the later tests and the final check read.
  const opened = [];
  const connect = async () => {
    const c = await ChannelTestClient.connect(srv.url);
    opened.push(c);
    return c;
  };
  afterEach(() => {
    for (const c of opened.splice(0)) c.disconnect();
  });

  /* ---- views ------------------------------------------------------------------------- */

  test('attach /echo answers attach_ack with props.channelId (32 lowercase hex)', async () => {
    const c = await connect();
    const aid = randomId('attach-');
    const ack = await c.attach('/echo', { hello: 'world' }, { attachId: aid });
    assert.equal(ack.type, 'attach_ack', JSON.stringify(ack));
    assert.equal(ack.attachId, aid);
    assert.equal(typeof ack.props, 'object');
    assert.match(ack.props.channelId, HEX_ID);
    // A second view gets a different channel id.
    const ack2 = await c.attach('/echo');
    assert.equal(ack2.type, 'attach_ack');
    assert.match(ack2.props.channelId, HEX_ID);
    assert.notEqual(ack2.props.channelId, ack.props.channelId);
    c.disconnect();
  });

  test('attach to an unknown path answers attach_error "Unknown path: /x"', async () => {
    const c = await connect();
    const aid = randomId('attach-');
    const reply = await c.attach('/x', null, { attachId: aid });
    assert.deepEqual(reply, { type: 'attach_error', attachId: aid, error: 'Unknown path: /x', attachIdSent: aid });
    // The session still attaches a known path afterwards.
    await c.attachEcho();
    c.disconnect();
  });

  test('attach with an attachId already in use answers attach_error; the first view keeps working', async () => {
    const c = await connect();
    const aid = randomId('dup-');
    const first = await c.attach('/echo', null, { attachId: aid });
    assert.equal(first.type, 'attach_ack');
    const before = await mon.stats();
    const from = c.mark();
    const second = await c.attach('/echo', null, { attachId: aid });
    assert.equal(second.type, 'attach_error', JSON.stringify(second));
    assert.equal(second.attachId, aid);
    assert.equal(typeof second.error, 'string');
    assert.ok(second.error.length > 0);
    // Exactly one reply for the duplicate, and no second view or channel was made.
    await c.expectNone((m) => m.attachId === aid && m !== second, { from, ms: 200, what: 'second reply to the duplicate' });
    const after_ = await mon.stats();
    assert.equal(after_.views, before.views, 'views after the refused duplicate');
    assert.equal(after_.channels, before.channels, 'channels after the refused duplicate');
    await c.assertEchoes(first.props.channelId);
    c.disconnect();
  });

  test('attach with a missing or invalid attachId is dropped (no reply) and counted', async () => {
    const c = await connect();
    const { channel } = await c.attachEcho();
    const before = await c.stats(channel);
    const from = c.mark();
    const bad = [
      { type: 'attach', path: '/echo' },
      { type: 'attach', path: '/echo', attachId: null },
      { type: 'attach', path: '/echo', attachId: 42 },
      { type: 'attach', path: '/echo', attachId: '' },
      { type: 'attach', path: '/echo', attachId: { id: 'x' } },
      { type: 'attach', path: '/echo', attachId: ['a'] },
      { type: 'attach', path: '/echo', attachId: true },
      { type: 'attach', path: '/x', attachId: 7 },
    ];
    for (const m of bad) c.send(m);
    await c.assertEchoes(channel); // processed in order: every bad attach was handled before this
    await c.expectNone((m) => m.type === 'attach_ack' || m.type === 'attach_error', { from, ms: 200, what: 'reply to an attach without a usable attachId' });
    const after_ = await c.stats(channel);
    assert.equal(after_.messages_dropped - before.messages_dropped, bad.length, 'messages_dropped delta');
    assert.equal(after_.views, before.views, 'no view was created');
    c.disconnect();
  });

  /* ---- client -> server --------------------------------------------------------------- */

  test('event "echo" is emitted back with the same payload', async () => {
    const c = await connect();
    const { channel } = await c.attachEcho();
    const payload = { text: 'hi', n: [1, 2, { deep: true }], u: 'ünïcødé ✓' };
    const from = c.mark();
    c.emit(channel, 'echo', payload);
    const ev = await c.waitEvent(channel, 'echo', { from });
    assert.deepEqual(ev.payload, payload);
    assert.equal(ev.requestId, undefined, 'an emitted event carries no requestId');
    // Scalars and null round-trip too.
    for (const p of [null, 0, 'str', false, [1, 'two']]) {
      const f = c.mark();
      c.emit(channel, 'echo', p);
      const e = await c.waitEvent(channel, 'echo', { from: f });
      assert.deepEqual(e.payload, p);
    }
    c.disconnect();
  });

  test('request "echo" gets a response with the payload', async () => {
    const c = await connect();
    const { channel } = await c.attachEcho();
    const payload = { a: 1, b: [true, null, 'x'] };
    const res = await c.request(channel, 'echo', payload, { requestId: 'client-rid-1' });
    assert.equal(res.type, 'channel_message');
    assert.equal(res.channel, channel);
    assert.equal(res.responseTo, 'client-rid-1');
    assert.deepEqual(res.payload, payload);
    assert.equal(res.error, undefined);
    assert.ok(res.event === undefined || res.event === null, `response event must be absent or null: ${JSON.stringify(res)}`);
    c.disconnect();
  });

  test('request "fail" gets the error response "failed: boom"', async () => {
    const c = await connect();
    const { channel } = await c.attachEcho();
    const res = await c.request(channel, 'fail', { text: 'boom' });
    assert.equal(res.error, 'failed: boom', JSON.stringify(res));
    assert.equal(res.payload, undefined, 'an error response carries no payload');
    // The channel keeps working after a handler error.
    await c.assertEchoes(channel);
    c.disconnect();
  });

  test('request "defer" is answered later (>= 200 ms) without blocking other requests', async () => {
    const c = await connect();
    const { channel } = await c.attachEcho();
    const t0 = performance.now();
    const deferred = c.request(channel, 'defer', { ms: 200, tag: 'late' }).then((r) => ({ r, t: performance.now() - t0 }));
    const quick = await c.request(channel, 'echo', 'quick');
    const tQuick = performance.now() - t0;
    assert.equal(quick.payload, 'quick');
    const { r, t } = await deferred;
    assert.deepEqual(r.payload, { ms: 200, tag: 'late' });
    assert.equal(r.error, undefined);
    assert.ok(t >= 199, `deferred reply came after ${t.toFixed(1)} ms, expected >= 200`);
    assert.ok(tQuick < t, `the echo (${tQuick.toFixed(1)} ms) should not wait for the deferred reply (${t.toFixed(1)} ms)`);
    c.disconnect();
  });

  test('a request nobody answers (unknown event) gets a null response; an unknown event gets nothing', async () => {
    const c = await connect();
    const { channel } = await c.attachEcho();
    const res = await c.request(channel, 'no-such-event', { x: 1 });
    assert.ok('payload' in res, `response has a payload field: ${JSON.stringify(res)}`);
    assert.equal(res.payload, null);
    assert.equal(res.error, undefined);
    // The fixture's "*" listener ignores requests for its event-only names too: null.
    const res2 = await c.request(channel, 'close', null);
    assert.equal(res2.payload, null, `request "close" (event-only in the fixture) answers null: ${JSON.stringify(res2)}`);
    assert.equal(res2.error, undefined);
    // ... and did not close the channel.
    await c.assertEchoes(channel);
    const from = c.mark();
    c.emit(channel, 'no-such-event', 1);
    await c.assertEchoes(channel);
    await c.expectNone((m) => m.channel === channel && m.event === 'no-such-event', { from, ms: 100 });
    c.disconnect();
  });

  /* ---- server -> client requests -------------------------------------------------------- */

  test('server request answered by the client: ask:result ok with the payload', async () => {
    const c = await connect();
    const { channel } = await c.attachEcho();
    const seen = [];
    c.answer(channel, 'question', (payload, msg) => {
      seen.push(msg);
      return { payload: { answer: 42, echo: payload } };
    });
    const from = c.mark();
    c.emit(channel, 'ask', { event: 'question', payload: { q: 'life?' }, timeout_ms: 5000 });
    const result = await c.waitEvent(channel, 'ask:result', { from });
    assert.deepEqual(result.payload, { status: 'ok', payload: { answer: 42, echo: { q: 'life?' } } });
    assert.equal(seen.length, 1);
    assert.equal(seen[0].event, 'question');
    assert.deepEqual(seen[0].payload, { q: 'life?' });
    assert.match(seen[0].requestId, HEX_ID, 'server request ids are 32 lowercase hex');
    // A second ask gets a fresh request id.
    const from2 = c.mark();
    c.emit(channel, 'ask', { event: 'question', payload: 2, timeout_ms: 0 });
    const r2 = await c.waitEvent(channel, 'ask:result', { from: from2 });
    assert.equal(r2.payload.status, 'ok');
    assert.equal(seen.length, 2);
    assert.match(seen[1].requestId, HEX_ID);
    assert.notEqual(seen[1].requestId, seen[0].requestId);
    c.disconnect();
  });

  test('server request the client does not answer times out (timeout_ms 200); a late answer is dropped', async () => {
    const c = await connect();
    const { channel } = await c.attachEcho();
    const before = await c.stats(channel);
    const from = c.mark();
    const t0 = performance.now();
    c.emit(channel, 'ask', { event: 'ignored', payload: 1, timeout_ms: 200 });
    const req = await c.waitFor((m) => m.channel === channel && m.event === 'ignored' && typeof m.requestId === 'string', { from });
    const result = await c.waitEvent(channel, 'ask:result', { from });
    const t = performance.now() - t0;
    assert.equal(result.payload.status, 'timeout', JSON.stringify(result));
    assert.ok(t >= 199, `timed out after ${t.toFixed(1)} ms, expected >= 200`);
    // Answering after the timeout: dropped, no second ask:result.
    const from2 = c.mark();
    c.send(envelope({ channel, responseTo: req.requestId, payload: 'too late' }));
    await c.assertEchoes(channel);
    await c.expectNone((m) => m.event === 'ask:result', { from: from2, ms: 200, what: 'second ask:result' });
    const after_ = await c.stats(channel);
    assert.equal(after_.asks.timeout - before.asks.timeout, 1);
    assert.equal(after_.asks.ok - before.asks.ok, 0);
    assert.equal(after_.asks.twice, 0);
    assert.equal(after_.messages_dropped - before.messages_dropped, 1, 'the late response is dropped and counted');
    c.disconnect();
  });

  test('server request answered with an error: ask:result status "error" with the text', async () => {
    const c = await connect();
    const { channel } = await c.attachEcho();
    c.answer(channel, 'risky', () => ({ error: 'client says no' }));
    const from = c.mark();
    c.emit(channel, 'ask', { event: 'risky', payload: null, timeout_ms: 5000 });
    const result = await c.waitEvent(channel, 'ask:result', { from });
    assert.deepEqual(result.payload, { status: 'error', error: 'client says no' });
    c.disconnect();
  });

  test('pending server request completes "closed" when the view is detached', async () => {
    const c = await connect();
    const { channel, attachId } = await c.attachEcho();
    const before = await mon.stats();
    const from = c.mark();
    c.emit(channel, 'ask', { event: 'hang', payload: 'p', timeout_ms: 0 });
    await c.waitFor((m) => m.channel === channel && m.event === 'hang' && m.requestId, { from });
    c.detach(attachId);
    await c.waitFor(isClose(channel), { from, what: '__close__ after detach' });
    const after_ = await pollUntil(mon.stats, (s) => s.asks.closed > before.asks.closed);
    assert.equal(after_.asks.closed - before.asks.closed, 1, 'asks.closed delta');
    assert.equal(after_.asks.started - before.asks.started, 1);
    assert.equal(after_.asks.twice, 0);
    // The channel is gone: its ask:result could not be delivered.
    await c.expectNone((m) => m.event === 'ask:result', { from, ms: 100 });
    c.disconnect();
  });

  test('pending server request completes "closed" when the client disconnects', async () => {
    const c = await connect();
    const { channel } = await c.attachEcho();
    const before = await mon.stats();
    const from = c.mark();
    c.emit(channel, 'ask', { event: 'hang', payload: 'p', timeout_ms: 0 });
    await c.waitFor((m) => m.channel === channel && m.event === 'hang' && m.requestId, { from });
    c.disconnect();
    const after_ = await pollUntil(mon.stats, (s) => s.asks.closed > before.asks.closed && s.sessions < before.sessions);
    assert.equal(after_.asks.closed - before.asks.closed, 1, 'asks.closed delta');
    assert.equal(after_.asks.twice, 0);
    assert.equal(before.sessions - after_.sessions, 1, 'sessions delta');
    assert.equal(before.views - after_.views, 1, 'views delta');
    assert.equal(after_.views_disposed - before.views_disposed, 1, 'views_disposed delta');
  });

  test('pending server request completes "closed" when the client sends __close__', async () => {
    const c = await connect();
    const { channel } = await c.attachEcho();
    const other = await c.attachEcho(); // a second view of the same client reads the stats
    const before = await c.stats(other.channel);
    const from = c.mark();
    c.emit(channel, 'ask', { event: 'hang', payload: 'p', timeout_ms: 0 });
    await c.waitFor((m) => m.channel === channel && m.event === 'hang' && m.requestId, { from });
    c.send(envelope({ channel, event: '__close__', payload: null }));
    const after_ = await pollUntil(() => c.stats(other.channel), (s) => s.asks.closed > before.asks.closed);
    assert.equal(after_.asks.closed - before.asks.closed, 1, 'asks.closed delta');
    assert.equal(after_.asks.twice, 0);
    assert.equal(before.channels - after_.channels, 1, 'the channel was released');
    assert.equal(after_.views, before.views, 'the view stays attached');
    await c.expectNone((m) => m.event === 'ask:result', { from, ms: 100 });
    c.disconnect();
  });

  /* ---- closing ---------------------------------------------------------------------------- */

  test('client __close__ releases the channel: later requests get "Channel closed", events are dropped', async () => {
    const c = await connect();
    const { channel, attachId } = await c.attachEcho();
    const other = await c.attachEcho();
    await c.assertEchoes(channel);
    const before = await c.stats(other.channel);
    const from = c.mark();
    c.send(envelope({ channel, event: '__close__', payload: null }));
    const res = await c.request(channel, 'echo', 'after close');
    assert.deepEqual(
      { responseTo: res.responseTo, error: res.error, payload: res.payload },
      { responseTo: res.responseTo, error: 'Channel closed', payload: undefined },
      JSON.stringify(res),
    );
    c.emit(channel, 'echo', 'dropped event');
    await c.assertEchoes(other.channel);
    await c.expectNone((m) => m.channel === channel && m.event === 'echo', { from, ms: 100, what: 'echo on a released channel' });
    const after_ = await c.stats(other.channel);
    assert.equal(before.channels - after_.channels, 1, 'channels delta');
    assert.equal(after_.views, before.views, 'the view is still attached');
    assert.equal(after_.messages_dropped - before.messages_dropped, 2, 'the request and the event to the closed channel are counted');
    // Detaching the view afterwards still disposes it once.
    c.detach(attachId);
    const disposed = await pollUntil(() => c.stats(other.channel), (s) => s.views < after_.views);
    assert.equal(disposed.views_disposed - after_.views_disposed, 1);
    c.disconnect();
  });

  // DESIGN.md §4.1: "Closing a channel (by ps_channel_close, view detach, client __close__, or
  // disconnect) ... sends __close__ to the client if the connection is still up"; docs/API.md:
  // "a client __close__ ... close[s] a channel the same way: ... the client gets __close__ if
  // still connected".
  test('client __close__ is confirmed with the server\'s __close__ (closing "the same way")', async () => {
    const c = await connect();
    const { channel } = await c.attachEcho();
    const from = c.mark();
    c.send(envelope({ channel, event: '__close__', payload: null }));
    await c.assertEchoes((await c.attachEcho()).channel); // processed in order: the close happened
    const close = await c.waitFor(isClose(channel), { from, ms: 1000, what: `__close__ for ${channel} after the client's own __close__` });
    assert.deepEqual(close, { type: 'channel_message', channel, event: '__close__', payload: null });
    c.disconnect();
  });

  test('server "close" sends __close__ to the client; then events are dropped and requests get "Channel closed"', async () => {
    const c = await connect();
    const { channel } = await c.attachEcho();
    const other = await c.attachEcho();
    const before = await c.stats(other.channel);
    const from = c.mark();
    c.emit(channel, 'close', null);
    const close = await c.waitFor(isClose(channel), { from, what: '__close__ from the server' });
    assert.deepEqual(close, { type: 'channel_message', channel, event: '__close__', payload: null });
    const from2 = c.mark();
    c.emit(channel, 'echo', 'after server close');
    const res = await c.request(channel, 'echo', 'req after server close');
    assert.equal(res.error, 'Channel closed', JSON.stringify(res));
    await c.expectNone((m) => m.channel === channel && m.event === 'echo', { from: from2, ms: 100 });
    // Only one __close__.
    await c.expectNone((m) => isClose(channel)(m) && m !== close, { from, ms: 0, what: 'second __close__' });
    const after_ = await c.stats(other.channel);
    assert.equal(before.channels - after_.channels, 1);
    assert.equal(after_.messages_dropped - before.messages_dropped, 2);
    c.disconnect();
  });

  test("a request to another session's channel gets \"Channel closed\" and never reaches it", async () => {
    const a = await connect();
    const b = await connect();
    const va = await a.attachEcho();
    const vb = await b.attachEcho();
    const fromA = a.mark();
    const before = await b.stats(vb.channel);
    const res = await b.request(va.channel, 'echo', 'steal');
    assert.equal(res.error, 'Channel closed', JSON.stringify(res));
    assert.equal(res.channel, va.channel);
    b.emit(va.channel, 'echo', 'foreign event');
    b.emit(va.channel, 'ask', { event: 'x', payload: 1, timeout_ms: 0 });
    b.send(envelope({ channel: va.channel, event: '__close__', payload: null }));
    b.emit(va.channel, 'close', null);
    await b.assertEchoes(vb.channel);
    const after_ = await b.stats(vb.channel);
    assert.equal(after_.messages_dropped - before.messages_dropped, 5);
    assert.equal(after_.asks.started, before.asks.started, 'the foreign ask never reached a handler');
    await a.expectNone(() => true, { from: fromA, ms: 200, what: 'message to A caused by B' });
    // A's channel is untouched (not closed by B's __close__ / close).
    await a.assertEchoes(va.channel);
    a.disconnect();
    b.disconnect();
  });

  test('detach sends __close__, disposes the view exactly once; a second detach is dropped', async () => {
    const c = await connect();
    const { channel, attachId } = await c.attachEcho();
    const before = await mon.stats();
    const from = c.mark();
    c.detach(attachId);
    const close = await c.waitFor(isClose(channel), { from, what: '__close__ after detach' });
    assert.deepEqual(close, { type: 'channel_message', channel, event: '__close__', payload: null });
    const mid = await mon.stats();
    assert.equal(before.views - mid.views, 1, 'views delta');
    assert.equal(before.channels - mid.channels, 1, 'channels delta');
    assert.equal(mid.views_disposed - before.views_disposed, 1, 'views_disposed delta');
    // Second detach of the same attachId: dropped and counted, nothing disposed again.
    const from2 = c.mark();
    c.detach(attachId);
    c.detach('never-attached');
    const res = await c.request(channel, 'echo', 'after detach');
    assert.equal(res.error, 'Channel closed');
    const after_ = await mon.stats();
    assert.equal(after_.views_disposed, mid.views_disposed, 'no second dispose');
    assert.equal(after_.messages_dropped - mid.messages_dropped, 3, 'two detaches and the request are dropped');
    await c.expectNone((m) => m.type !== 'channel_message' || m.event === '__close__', { from: from2, ms: 100 });
    // The attachId may be reused for a new view after detach.
    const again = await c.attach('/echo', null, { attachId });
    assert.equal(again.type, 'attach_ack', JSON.stringify(again));
    assert.notEqual(again.props.channelId, channel, 'channel ids are never reused');
    c.disconnect();
  });

  test('a client that never answers a request without timeout: closed on disconnect, once each', async () => {
    const c = await connect();
    const v1 = await c.attachEcho();
    const v2 = await c.attachEcho();
    const before = await mon.stats();
    const from = c.mark();
    c.emit(v1.channel, 'ask', { event: 'silent', payload: 1, timeout_ms: 0 });
    c.emit(v1.channel, 'ask', { event: 'silent', payload: 2, timeout_ms: 0 });
    c.emit(v2.channel, 'ask', { event: 'silent', payload: 3, timeout_ms: 0 });
    await pollUntil(async () => c.log.slice(from).filter((m) => m.event === 'silent').length, (n) => n === 3);
    assert.equal(c.log.slice(from).filter((m) => m.event === 'silent').length, 3);
    // Still pending after a while: nothing completes them but the disconnect.
    await sleep(200);
    const mid = await mon.stats();
    assert.equal(mid.asks.closed, before.asks.closed);
    assert.equal(mid.asks.started - before.asks.started, 3);
    c.disconnect();
    const after_ = await pollUntil(mon.stats, (s) => s.asks.closed - before.asks.closed >= 3 && s.sessions < before.sessions);
    assert.equal(after_.asks.closed - before.asks.closed, 3, 'asks.closed delta');
    assert.equal(after_.asks.twice, 0, 'no completion twice');
    await sleep(100);
    const later = await mon.stats();
    assert.equal(later.asks.closed, after_.asks.closed, 'no late extra completion');
  });

  test('exactly once: no completion twice and started == ok + timeout + closed + error', async () => {
    const s = await mon.stats();
    assert.equal(s.asks.twice, 0, JSON.stringify(s));
    assert.equal(s.asks.started, s.asks.ok + s.asks.timeout + s.asks.closed + s.asks.error, JSON.stringify(s));
    assert.ok(s.asks.ok >= 2 && s.asks.timeout >= 1 && s.asks.closed >= 6 && s.asks.error >= 1, JSON.stringify(s));
  });

  test('after every client left: only the monitor remains; the server exits 0 on SIGTERM', async () => {
    const s = await pollUntil(mon.stats, (x) => x.sessions === 1 && x.views === 1);
    assert.equal(s.sessions, 1, JSON.stringify(s));
    assert.equal(s.views, 1);
    assert.equal(s.channels, 1);
    mon.close();
    await stopClean(srv, 'echo server (channels)');
  });
});
