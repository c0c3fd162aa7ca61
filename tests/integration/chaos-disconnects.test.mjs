// Issue 7 chaos: clients that vanish at the worst moment, many at once, against one server:
//   - mid-request: a request (echo, deferred, stats) and server->client asks in flight, then the
//     socket is destroyed (FIN), reset (RST) or closed with a close frame;
//   - mid-frame: half a WebSocket frame (or its header only, or the first fragment of a message)
//     and then the connection ends;
//   - mid-handshake: half an upgrade request; a whole upgrade request and gone before the 101;
//     gone after the open packet, right after CONNECT, right after an attach;
//   - mid-long-poll: a polling session with a view and a pending ask aborts its held GET; a POST
//     cut in the middle of its body; a handshake GET abandoned before its answer.
// A witness keeps round-tripping throughout. Afterwards every connection is gone, every view
// ever attached was disposed exactly once (views_disposed), every ask completed exactly once
// (asks.twice 0), and SIGTERM -> exit 0 (LeakSanitizer clean).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, stopClean, killAll, closeClients, closeTcp, encodeFrame, OP, sleep, withTimeout } from './lib/server.mjs';
import { ChannelTestClient, openMonitor, pollUntil, startWitness } from './lib/channels.mjs';
import { Polling, closePollConns, openConn, rawRequest, eioTarget, TEXT_PLAIN } from './lib/polling.mjs';
import { WireClient, closeWires, tcpConnect, upgradeRequest, randomId, assertEchoInvariants, fdCount } from './lib/wire.mjs';

after(async () => {
  closeClients();
  closeWires();
  closeTcp();
  closePollConns();
  await killAll();
});

/** Ends a connection one of three ways. */
function vanish(w, k) {
  switch (k % 3) {
    case 0: w.sock.destroy(); break; // FIN
    case 1: w.sock.resetAndDestroy(); break; // RST
    default: // a close frame, then gone without waiting for the reply
      w.sendFrame({ opcode: OP.CLOSE, payload: Buffer.from([0x03, 0xe8]) });
      w.sock.end();
  }
}

// Clients per kind (each kind runs all of its clients at once).
const N = { request: 300, frame: 300, handshake: 400, longPoll: 150 };

const msgPacket = (obj) => `42${JSON.stringify(['message', obj])}`;

test('clients vanishing mid-request, mid-frame, mid-handshake and mid-long-poll leave nothing behind', { timeout: 120000 }, async (t) => {
  const srv = await startServer(['--ping-interval', '1000', '--ping-timeout', '3000']);
  const mon = await openMonitor(srv.url);
  const wit = await ChannelTestClient.connect(srv.url);
  const witView = await wit.attachEcho();
  const base = await mon.stats();
  const baseFds = fdCount(srv.proc.pid);
  let attached = 0; // views acknowledged to the test's clients (monitor and witness aside)
  let maybeAttached = 0; // attaches sent and then cut before their answer
  const failures = [];

  // Witness: echo round trips all along.
  const witness = startWitness(wit, witView.channel, { ms: 5000, every: 10 });

  const run = async (what, n, fn) => {
    await Promise.all(
      Array.from({ length: n }, (_, k) =>
        fn(k).catch((e) => failures.push(`${what} #${k}: ${e.stack || e}`)),
      ),
    );
  };

  // ---- mid-request ---------------------------------------------------------------------
  await run('mid-request', N.request, async (k) => {
    const w = await WireClient.connect(srv);
    const { channel } = await w.attachEcho();
    attached++;
    w.emit(channel, 'ask', { event: 'hang', payload: k, timeout_ms: 0 });
    w.emit(channel, 'ask', { event: 'later', payload: k, timeout_ms: 60000 });
    if (k % 2 === 0) await w.waitFor((m) => m.event === 'later' && m.requestId);
    w.sendRequest(channel, 'defer', { ms: k % 4 === 0 ? 5 : 60000 });
    w.sendRequest(channel, 'echo', { k });
    w.sendRequest(channel, 'stats', null);
    if (k % 5 === 0) w.sendRequest(channel, 'echo', { k, big: 'y'.repeat(200000) });
    if (k % 3 === 1) await sleep(k % 7);
    vanish(w, k);
  });

  // ---- mid-frame -----------------------------------------------------------------------
  await run('mid-frame', N.frame, async (k) => {
    const w = await WireClient.connect(srv);
    const { channel } = await w.attachEcho();
    attached++;
    w.emit(channel, 'ask', { event: 'hang', payload: k, timeout_ms: 0 });
    const text = msgPacket({ type: 'channel_message', channel, event: 'echo', requestId: randomId(), payload: 'z'.repeat(k % 2 ? 100 : 70000) });
    const frame = encodeFrame({ opcode: OP.TEXT, payload: text });
    switch (k % 4) {
      case 0: w.write(frame.subarray(0, frame.length >> 1)); break; // half the payload
      case 1: w.write(frame.subarray(0, 1)); break; // one byte of header
      case 2: w.write(frame.subarray(0, text.length > 65535 ? 6 : 4)); break; // header, no mask key
      default: // a first fragment, the rest never comes
        w.sendFrame({ fin: false, opcode: OP.TEXT, payload: text.slice(0, 50) });
    }
    await sleep(k % 5);
    if (k % 2) w.sock.end();
    else vanish(w, k);
  });

  // ---- mid-handshake -------------------------------------------------------------------
  await run('mid-handshake', N.handshake, async (k) => {
    switch (k % 8) {
      case 0: { // half an upgrade request
        const s = await tcpConnect(srv);
        const up = upgradeRequest(srv);
        s.write(up.slice(0, 10 + (k % 60)));
        await sleep(k % 4);
        s.destroy();
        break;
      }
      case 1: { // a whole upgrade request, gone before reading the 101
        const s = await tcpConnect(srv);
        s.write(upgradeRequest(srv));
        if (k % 16 === 1) s.resetAndDestroy();
        else s.destroy();
        break;
      }
      case 2: { // upgraded, open packet read, gone before CONNECT
        const w = new WireClient(srv, '/socket.io/?EIO=4&transport=websocket', true);
        await w._handshake(10000);
        await w.waitText(/^0\{/);
        vanish(w, k);
        break;
      }
      case 3: { // CONNECT sent, gone before its answer
        const w = new WireClient(srv, '/socket.io/?EIO=4&transport=websocket', true);
        await w._handshake(10000);
        await w.waitText(/^0\{/);
        w.sendText('40');
        vanish(w, k);
        break;
      }
      case 4: { // attach sent, gone before its answer
        const w = await WireClient.connect(srv);
        w.send({ type: 'attach', path: '/echo', attachId: randomId('a-') });
        maybeAttached++;
        vanish(w, k);
        break;
      }
      case 5: { // attach, then an ask and a detach and gone
        const w = await WireClient.connect(srv);
        const v = await w.attachEcho();
        attached++;
        w.emit(v.channel, 'ask', { event: 'hang', payload: k, timeout_ms: 0 });
        w.detach(v.attachId);
        vanish(w, k);
        break;
      }
      case 6: { // a polling handshake abandoned before its answer
        const c = openConn(srv);
        c.write(rawRequest('GET', eioTarget()));
        c.destroy();
        break;
      }
      default: { // an upgrade with a body of garbage right behind it, then gone
        const s = await tcpConnect(srv);
        s.write(upgradeRequest(srv) + '\x81\xfe\x00');
        await sleep(1);
        s.destroy();
      }
    }
  });

  // ---- mid-long-poll -------------------------------------------------------------------
  await run('mid-long-poll', N.longPoll, async (k) => {
    const p = new Polling(srv);
    await p.handshake();
    await p.connectSio();
    if (k % 3 === 2) { // a POST cut in the middle of its body
      const c = openConn(srv);
      const body = msgPacket({ type: 'attach', path: '/echo', attachId: randomId('a-') });
      const bytes = rawRequest('POST', p.target(), { headers: { 'Content-Type': TEXT_PLAIN }, body });
      c.write(bytes.subarray(0, bytes.length - 10));
      await sleep(2);
      c.destroy();
      const g = p.startGet({ ms: 5000 });
      await sleep(5);
      g.conn.destroy();
      return;
    }
    const attachId = randomId('a-');
    await p.postOk(msgPacket({ type: 'attach', path: '/echo', attachId }));
    const [ackPkt] = await p.collect(1);
    const ack = JSON.parse(ackPkt.slice(2))[1];
    assert.equal(ack.type, 'attach_ack', ackPkt);
    attached++;
    const channel = ack.props.channelId;
    await p.postOk(msgPacket({ type: 'channel_message', channel, event: 'ask', payload: { event: 'hang', payload: k, timeout_ms: 0 } }));
    await p.postOk(msgPacket({ type: 'channel_message', channel, event: 'defer', requestId: randomId(), payload: { ms: 60000 } }));
    if (k % 3 === 0) {
      // The queued server request is taken by a GET, then the next (held) GET is aborted.
      const [req] = await p.collect(1);
      assert.match(req, /"hang"/);
    } // else the GET below finds the request queued and its answer is dropped unread: the
    // session then ends by ping timeout.
    const g = p.startGet({ ms: 5000 });
    await sleep(20 + (k % 10));
    g.conn.destroy();
  });

  // Abandoned polling handshakes and Engine.IO sessions that never connected go by ping timeout
  // (1 + 3 s); everything else went at once.
  const end = await pollUntil(
    () => mon.stats(),
    (s) => s.connections === base.connections && s.sessions === base.sessions && s.views === base.views,
    { ms: 30000, every: 100 },
  );
  const witLat = await witness.stop();
  assert.deepEqual(failures, [], 'a chaos client failed before it could vanish');
  assert.equal(end.connections, base.connections, `connections left: ${JSON.stringify(end)}`);
  assert.equal(end.sessions, base.sessions, `sessions left: ${JSON.stringify(end)}`);
  assert.equal(end.channels, base.channels);
  assertEchoInvariants(end, { monitorViews: base.views, what: 'after the vanishing clients' });
  const disposed = end.views_disposed - base.views_disposed;
  assert.ok(
    disposed >= attached && disposed <= attached + maybeAttached,
    `views disposed ${disposed}, attached ${attached} (+ up to ${maybeAttached} cut before their ack)`,
  );
  // At least the asks that were seen arriving (an RST may drop the others unread).
  assert.ok(end.asks.started - base.asks.started >= N.request, 'the asks were started');
  assert.ok(witLat[witLat.length - 1] < 2000, `witness max latency ${witLat[witLat.length - 1].toFixed(0)} ms`);
  await wit.assertEchoes(witView.channel, 'witness after the chaos');
  t.diagnostic(`views attached ${attached} (+${maybeAttached} cut before the ack), disposed ${disposed}, asks ${JSON.stringify(end.asks)}`);
  t.diagnostic(`witness ${witLat.length} round trips, p50 ${witLat[witLat.length >> 1].toFixed(1)} ms, max ${witLat[witLat.length - 1].toFixed(1)} ms`);
  const fds = await pollUntil(async () => fdCount(srv.proc.pid), (n) => n <= baseFds, { ms: 5000 });
  assert.ok(fds <= baseFds, `server fds ${fds}, before the chaos ${baseFds}`);
  wit.disconnect();
  mon.close();
  await stopClean(srv);
});
