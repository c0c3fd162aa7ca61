// Malformed `message` payloads (DESIGN.md §3: "Anything else ... gets a clear error to that
// client where a reply is expected, is otherwise dropped and counted, and never crashes or
// disturbs another client"). Each case checks: no crash, the right reply or none, the
// messages_dropped counter, the same connection still serving an echo request, and a witness
// client on another connection unaffected. Runs against the sanitizer build, so the final
// SIGTERM exit code also proves no memory error or leak along the way.
import { describe, test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, stopClean, killAll, closeClients, sleep } from './lib/server.mjs';
import { ChannelTestClient, pollUntil, envelope, randomId } from './lib/channels.mjs';

after(async () => {
  closeClients();
  await killAll();
});

const MAX_PAYLOAD = 1048576; // the server's default max WebSocket message (1 MiB)

describe('malformed message payloads', () => {
  let srv;
  let w; // witness: another connection that must never be disturbed
  let wch;

  before(async () => {
    srv = await startServer();
    w = await ChannelTestClient.connect(srv.url);
    ({ channel: wch } = await w.attachEcho());
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

  /** A fresh client with an /echo view, and its stats before the case. */
  async function subject() {
    const c = await connect();
    const { channel, attachId } = await c.attachEcho();
    const before = await c.stats(channel);
    return { c, channel, attachId, before, from: c.mark() };
  }

  /** After a case: the same connection echoes, the witness echoes, and nothing leaked to the witness. */
  async function stillFine(c, channel, wFrom) {
    await c.assertEchoes(channel, 'same-connection');
    await w.assertEchoes(wch, 'witness');
    if (wFrom !== undefined) {
      const stray = w.log.slice(wFrom).filter((m) => !(m.type === 'channel_message' && m.channel === wch && m.responseTo));
      assert.deepEqual(stray, [], 'witness received something it did not ask for');
    }
  }

  /** The connection either still echoes or was closed by the server (both acceptable after bad JSON). */
  async function echoesOrClosed(c, channel, tag) {
    try {
      await c.assertEchoes(channel, tag);
      return true;
    } catch (e) {
      if (!c.disconnectInfo) throw e;
      return false;
    }
  }

  test('not an object (string, number, array, null, boolean, no argument, two arguments): dropped, counted', async () => {
    const { c, channel, before, from } = await subject();
    const wFrom = w.mark();
    c.sendArgs('just a string');
    c.sendArgs(12345);
    c.sendArgs([{ type: 'attach', path: '/echo', attachId: 'in-array' }]);
    c.sendArgs(null);
    c.sendArgs(true);
    c.sendArgs();
    c.sendArgs({ type: 'attach', path: '/echo', attachId: 'two-args' }, 'extra');
    await stillFine(c, channel, wFrom);
    const after_ = await c.stats(channel);
    assert.equal(after_.messages_dropped - before.messages_dropped, 7, 'messages_dropped delta');
    assert.equal(after_.views, before.views, 'no view attached by a malformed message');
    const replies = c.log.slice(from).filter((m) => !(m.type === 'channel_message' && m.responseTo));
    assert.deepEqual(replies, [], 'no reply to dropped messages');
    assert.ok(c.connected);
    c.disconnect();
  });

  test('missing, non-string or unknown type: dropped, counted, never dispatched', async () => {
    const { c, channel, before, from } = await subject();
    const wFrom = w.mark();
    const bad = [
      { channel, event: 'echo', payload: 'no type' },
      { channel, event: 'echo', payload: 'no type req', requestId: 'r-notype' },
      { type: 5, channel, event: 'echo', payload: 'num type' },
      { type: null, channel, event: 'echo', payload: 'null type' },
      { type: ['channel_message'], channel, event: 'echo', payload: 'array type' },
      { type: 'bogus', channel, event: 'echo', payload: 'bogus' },
      { type: 'CHANNEL_MESSAGE', channel, event: 'echo', payload: 'case', requestId: 'r-case' },
      { type: '', channel, event: 'echo' },
      {},
    ];
    for (const m of bad) c.send(m);
    await stillFine(c, channel, wFrom);
    const after_ = await c.stats(channel);
    assert.equal(after_.messages_dropped - before.messages_dropped, bad.length, 'messages_dropped delta');
    const stray = c.log.slice(from).filter((m) => m.event === 'echo' || m.responseTo === 'r-notype' || m.responseTo === 'r-case');
    assert.deepEqual(stray, [], 'nothing of a typeless/unknown message was dispatched or answered');
    c.disconnect();
  });

  test('channel_message without a usable channel: dropped, counted, no reply', async () => {
    const { c, channel, before, from } = await subject();
    const wFrom = w.mark();
    const bad = [
      envelope({ event: 'echo', payload: 1, requestId: 'r-nochan' }),
      envelope({ channel: 42, event: 'echo', payload: 1, requestId: 'r-numchan' }),
      envelope({ channel: '', event: 'echo', payload: 1, requestId: 'r-emptychan' }),
      envelope({ channel: null, event: 'echo', payload: 1 }),
      envelope({ channel: [channel], event: 'echo', payload: 1, requestId: 'r-arraychan' }),
    ];
    for (const m of bad) c.send(m);
    await stillFine(c, channel, wFrom);
    const after_ = await c.stats(channel);
    assert.equal(after_.messages_dropped - before.messages_dropped, bad.length, 'messages_dropped delta');
    const stray = c.log.slice(from).filter((m) => m.event === 'echo' || /^r-(no|num|empty|array)chan$/.test(m.responseTo));
    assert.deepEqual(stray, [], 'no reply and no dispatch');
    c.disconnect();
  });

  test('request with bad fields (non-string/empty/missing event, error of the wrong type) gets an "Invalid message" error', async () => {
    const { c, channel, before, from } = await subject();
    const wFrom = w.mark();
    const cases = [
      { rid: 'r-numevent', msg: { event: 5, payload: 1 } },
      { rid: 'r-objevent', msg: { event: { name: 'echo' }, payload: 1 } },
      { rid: 'r-emptyevent', msg: { event: '', payload: 1 } },
      { rid: 'r-noevent', msg: { payload: 1 } },
      { rid: 'r-nullevent', msg: { event: null, payload: 1 } },
      { rid: 'r-arrayevent', msg: { event: ['echo'], payload: 1 } },
      { rid: 'r-numerror', msg: { event: 'echo', payload: 1, error: 7 } },
    ];
    const responses = await Promise.all(
      cases.map(({ rid, msg }) => c.request(channel, undefined, undefined, { requestId: rid, extra: msg })),
    );
    for (let i = 0; i < cases.length; i++) {
      const r = responses[i];
      assert.equal(r.responseTo, cases[i].rid);
      assert.equal(typeof r.error, 'string', `error response expected for ${JSON.stringify(cases[i])}: ${JSON.stringify(r)}`);
      assert.ok(r.error.startsWith('Invalid message'), `"${r.error}" should start with "Invalid message" (${JSON.stringify(cases[i])})`);
      assert.equal(r.payload, undefined);
    }
    // Exactly one response each, and the handler never saw them (no echo event, no success).
    await c.expectNone((m) => m.event === 'echo', { from, ms: 50 });
    for (const { rid } of cases) assert.equal(c.log.slice(from).filter((m) => m.responseTo === rid).length, 1, `one response to ${rid}`);
    // The same shapes as events (no requestId): dropped without reply.
    c.send(envelope({ channel, event: 5, payload: 'x' }));
    c.send(envelope({ channel, payload: 'no event' }));
    c.send(envelope({ channel, event: '', payload: 'x' }));
    await stillFine(c, channel, wFrom);
    const after_ = await c.stats(channel);
    assert.equal(after_.messages_dropped - before.messages_dropped, cases.length + 3, 'every invalid message counted');
    c.disconnect();
  });

  test('both event and responseTo, unknown responseTo, bad responseTo: dropped, counted, not dispatched', async () => {
    const { c, channel, before, from } = await subject();
    const wFrom = w.mark();
    c.send(envelope({ channel, event: 'echo', responseTo: 'x', payload: 'both' }));
    c.send(envelope({ channel, responseTo: 'no-such-request', payload: 'unknown' }));
    c.send(envelope({ channel, responseTo: 'no-such-request', error: 'unknown error' }));
    c.send(envelope({ channel: 'f'.repeat(32), responseTo: 'x', payload: 'unknown channel' }));
    c.send(envelope({ channel, responseTo: 17, payload: 'numeric responseTo' }));
    c.send(envelope({ channel, responseTo: '', payload: 'empty responseTo' }));
    // With a requestId too: it must not be dispatched; if answered at all, with an error.
    c.send(envelope({ channel, event: 'echo', responseTo: 'y', requestId: 'r-both', payload: 'both+rid' }));
    await stillFine(c, channel, wFrom);
    const after_ = await c.stats(channel);
    assert.equal(after_.messages_dropped - before.messages_dropped, 7, 'messages_dropped delta');
    const echoes = c.log.slice(from).filter((m) => m.event === 'echo');
    assert.deepEqual(echoes, [], 'a message with both event and responseTo must not reach the handler');
    for (const r of c.log.slice(from).filter((m) => m.responseTo === 'r-both')) {
      assert.equal(typeof r.error, 'string', `r-both may only get an error: ${JSON.stringify(r)}`);
      assert.ok(r.error.startsWith('Invalid message'), r.error);
    }
    c.disconnect();
  });

  test('invalid requestId (number, object, array, boolean, empty): dropped, counted, not dispatched', async () => {
    const { c, channel, before, from } = await subject();
    const wFrom = w.mark();
    const rids = [5, { id: 'x' }, ['r'], true, ''];
    for (const requestId of rids) c.send(envelope({ channel, event: 'echo', payload: { rid: requestId }, requestId }));
    // An ask with a bad requestId must not start a server request either.
    c.send(envelope({ channel, event: 'ask', payload: { event: 'q', payload: 1, timeout_ms: 0 }, requestId: 9 }));
    await stillFine(c, channel, wFrom);
    const after_ = await c.stats(channel);
    assert.equal(after_.messages_dropped - before.messages_dropped, rids.length + 1, 'messages_dropped delta');
    assert.equal(after_.asks.started, before.asks.started, 'the bad ask was not dispatched');
    const stray = c.log.slice(from).filter((m) => m.event === 'echo' || m.event === 'q' || (m.responseTo !== undefined && typeof m.responseTo !== 'string') || m.responseTo === '');
    assert.deepEqual(stray, [], 'no dispatch and no reply');
    c.disconnect();
  });

  test('oversized client ids (channel, requestId, event, attachId of 100 000 chars): no crash, bounded replies', async () => {
    const { c, channel, from } = await subject();
    const wFrom = w.mark();
    const long = 'z'.repeat(100000);
    c.send(envelope({ channel: long, event: 'echo', payload: 1, requestId: 'r-longchan' }));
    c.send(envelope({ channel, event: 'echo', payload: 'long rid', requestId: long }));
    c.send(envelope({ channel, event: long, payload: 1, requestId: 'r-longevent' }));
    c.send(envelope({ channel, event: 'echo', payload: 1, responseTo: long }));
    c.send({ type: 'attach', path: '/echo', attachId: long });
    c.send({ type: 'attach', path: long, attachId: 'a-longpath' });
    c.send({ type: 'detach', attachId: long });
    await stillFine(c, channel, wFrom);
    await sleep(50);
    for (const m of c.log.slice(from)) {
      // Whatever comes back must not be a success for an oversized id, and must stay small.
      assert.ok(JSON.stringify(m).length < 2000 || m.responseTo === long, `unexpectedly large reply: ${JSON.stringify(m).slice(0, 300)}`);
      if (m.responseTo === 'r-longevent' && m.error === undefined) assert.equal(m.payload, null);
    }
    const longPath = c.log.slice(from).find((m) => m.attachId === 'a-longpath');
    if (longPath) assert.equal(longPath.type, 'attach_error', JSON.stringify(longPath).slice(0, 300));
    c.disconnect();
  });

  test('1 MB string payload within max-payload: request and event echo it intact', async () => {
    const { c, channel, from } = await subject();
    const wFrom = w.mark();
    const big = 'x'.repeat(1000000);
    const res = await c.request(channel, 'echo', { big }, { ms: 15000 });
    assert.equal(res.error, undefined);
    assert.equal(res.payload.big.length, big.length);
    assert.ok(res.payload.big === big, 'payload intact');
    c.emit(channel, 'echo', big);
    const ev = await c.waitEvent(channel, 'echo', { from, ms: 15000 });
    assert.ok(ev.payload === big, 'event payload intact');
    await stillFine(c, channel, wFrom);
    c.disconnect();
  });

  test('a message over max-payload closes that connection with 1009; others unaffected', async () => {
    const { c, channel, before } = await subject();
    const wFrom = w.mark();
    const big = 'y'.repeat(MAX_PAYLOAD + 1000);
    c.send(envelope({ channel, event: 'echo', payload: big, requestId: 'r-too-big' }));
    const info = await c.waitDisconnect(10000);
    const code = info.details?.context?.code;
    assert.equal(code, 1009, `close code (disconnect reason ${info.reason}): ${code}`);
    assert.equal(c.log.filter((m) => m.responseTo === 'r-too-big').length, 0, 'never dispatched');
    await w.assertEchoes(wch, 'witness');
    const after_ = await pollUntil(() => w.stats(wch), (s) => s.sessions < before.sessions);
    assert.equal(before.sessions - after_.sessions, 1, 'the session closed');
    assert.equal(before.views - after_.views, 1, 'its view was disposed');
    assert.equal(before.channels - after_.channels, 1, 'its channel closed');
    const stray = w.log.slice(wFrom).filter((m) => !(m.channel === wch && m.responseTo));
    assert.deepEqual(stray, []);
  });

  test('deep nesting (10 000 nested arrays / objects) is refused without harm; 500 levels echo fine', async (t) => {
    const { c, channel } = await subject();
    const wFrom = w.mark();
    // Moderate nesting is ordinary data.
    let nested = 'leaf';
    for (let i = 0; i < 500; i++) nested = [nested];
    const ok = await c.request(channel, 'echo', nested);
    assert.deepEqual(ok.payload, nested, '500 nested arrays echo back');

    const before = await w.stats(wch);
    const deepArr = '['.repeat(10000) + ']'.repeat(10000);
    const deepObj = '{"a":'.repeat(10000) + '1' + '}'.repeat(10000);
    const packet = (payload, rid) =>
      `2["message",{"type":"channel_message","channel":"${channel}","event":"echo","payload":${payload},"requestId":"${rid}"}]`;
    const from = c.mark();
    c.sendRawPacket(packet(deepArr, 'r-deep-arr'));
    c.sendRawPacket(packet(deepObj, 'r-deep-obj'));
    // Either the message was dropped (connection alive, no success reply) or the connection
    // was closed cleanly; in both cases the server keeps serving.
    const alive = await echoesOrClosed(c, channel, 'after deep nesting');
    const succ = c.log.slice(from).filter((m) => (m.responseTo === 'r-deep-arr' || m.responseTo === 'r-deep-obj') && m.error === undefined);
    assert.deepEqual(succ.map((m) => m.responseTo), [], 'a 10 000-deep payload must not be dispatched');
    t.diagnostic(`after 10 000-deep payloads the connection is ${alive ? 'still open' : 'closed'}; replies: ${c.describe(from).slice(0, 300)}`);
    if (!alive) {
      const again = await connect();
      const v = await again.attachEcho();
      await again.assertEchoes(v.channel, 'new connection after deep nesting');
      again.disconnect();
    }
    await w.assertEchoes(wch, 'witness');
    const stray = w.log.slice(wFrom).filter((m) => !(m.channel === wch && m.responseTo));
    assert.deepEqual(stray, []);
    const after_ = await w.stats(wch);
    assert.ok(
      after_.messages_dropped > before.messages_dropped || after_.protocol_errors > before.protocol_errors,
      `the refusal is counted (dropped ${before.messages_dropped}->${after_.messages_dropped}, protocol_errors ${before.protocol_errors}->${after_.protocol_errors})`,
    );
    c.disconnect();
  });

  test('bad JSON in the Socket.IO packet (truncated, lone surrogate): no crash; the server keeps serving', async (t) => {
    const pkts = [
      `2["message",{"type":"attach","path":"/echo","attachId":"trunc"`,
      `2["message",{"type":"channel_message","channel":"x","event":"echo","payload":"\\ud800","requestId":"r-sur"}]`,
      `2["message",{"type":"attach","path":"/echo","attachId":"a",}]`,
      `2["message",NaN]`,
    ];
    for (const p of pkts) {
      const { c, channel } = await subject();
      const from = c.mark();
      c.sendRawPacket(p);
      const alive = await echoesOrClosed(c, channel, `after ${p}`);
      const acks = c.log.slice(from).filter((m) => m.type === 'attach_ack');
      assert.deepEqual(acks, [], `no view attached by ${p}`);
      t.diagnostic(`${p.slice(0, 60)}: connection ${alive ? 'still open' : `closed (${c.disconnectInfo?.reason})`}`);
      await w.assertEchoes(wch, 'witness');
      c.disconnect();
    }
    const again = await connect();
    const v = await again.attachEcho();
    await again.assertEchoes(v.channel);
    again.disconnect();
  });

  test('afterwards: only the witness remains, no pending work; the server exits 0 on SIGTERM', async () => {
    const s = await pollUntil(() => w.stats(wch), (x) => x.sessions === 1 && x.views === 1 && x.channels === 1);
    assert.deepEqual({ sessions: s.sessions, views: s.views, channels: s.channels }, { sessions: 1, views: 1, channels: 1 }, JSON.stringify(s));
    assert.equal(s.asks.twice, 0);
    w.disconnect();
    await stopClean(srv, 'echo server (malformed messages)');
  });
});
