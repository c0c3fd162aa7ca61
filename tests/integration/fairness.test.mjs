// Issue 16, item 4: fairness under heavy senders. Eight clients send 256 KB channel events as
// fast as the server takes them, while a light client asks for the fixture's `stats` again and
// again. A connection reads at most PS__CONN_READ_BUDGET (64 KiB) per loop pass, and busy
// connections read in turns, one per pass (src/net.h), so between two answers to the light
// client the server handles only about one heavy message: counted with the server's own
// messages_in, which makes the check independent of the machine's speed and load. Before,
// libuv read up to 2 MiB per connection per pass, and dozens of heavy messages went before each
// light request. The light client's latency is reported (bench/scenarios/fairness.mjs measures
// it against its target); here it only has to keep getting answers. Nothing is lost: every
// heavy message sent is counted by the server, in order per connection.
// The server ends with SIGTERM -> exit 0 (LeakSanitizer clean with the ASan build).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, stopClean, killAll, closeTcp, TcpWs, OP, encodeFrame, sleep } from './lib/server.mjs';
import { WireClient, closeWires, rssBytes } from './lib/wire.mjs';

after(async () => {
  closeWires();
  closeTcp();
  await killAll();
});

const HEAVY = 8;
const MESSAGE = 256 * 1024;
const LIGHT_ROUNDS = 40;

/** A raw client that attached /echo; send() writes one big channel event. */
async function heavySender(srv) {
  const c = await (await TcpWs.connect(srv)).engineAndConnect();
  c.sendText(`42${JSON.stringify(['message', { type: 'attach', path: '/echo', attachId: 'h' }])}`);
  const ack = await c.waitText(/attach_ack/, 10000);
  const channel = JSON.parse(ack.text.slice(2))[1].props.channelId;
  const frame = encodeFrame({
    opcode: OP.TEXT,
    payload: `42${JSON.stringify(['message', { type: 'channel_message', channel, event: 'bulk', payload: 'x'.repeat(MESSAGE) }])}`,
  });
  let stopped = false;
  let sent = 0;
  const pump = (async () => {
    while (!stopped && !c.ended) {
      c.sock.write(frame);
      sent++;
      while (c.sock.writableLength > 4 * MESSAGE && !stopped && !c.ended) await sleep(2);
    }
  })();
  return {
    c,
    /* Stops sending and resolves, once every frame is in the kernel, with how many were sent. */
    stop: async () => {
      stopped = true;
      await pump;
      while (c.sock.writableLength > 0 && !c.ended) await sleep(5);
      return sent;
    },
  };
}

test(`${HEAVY} clients sending ${MESSAGE / 1024} KiB messages as fast as they can: about one of them is handled between two answers to a light client`, { timeout: 180000 }, async (t) => {
  // ASan's quarantine keeps freed memory resident (up to 256 MiB): off, so that RSS shows what the
  // server holds.
  const srv = await startServer([], { env: { ASAN_OPTIONS: 'detect_leaks=1:quarantine_size_mb=0' } });
  const light = await WireClient.connect(srv);
  const { channel } = await light.attachEcho();
  const base = await light.stats(channel);
  const senders = [];
  for (let i = 0; i < HEAVY; i++) senders.push(await heavySender(srv));
  const rss0 = rssBytes(srv.proc.pid);
  let rssMax = rss0;
  // Every heavy sender has a backlog in the kernel before the light client starts asking.
  await sleep(1000);

  const deltas = [];
  const lat = [];
  let prev = (await light.stats(channel)).messages_in;
  for (let i = 0; i < LIGHT_ROUNDS; i++) {
    const t0 = performance.now();
    const st = await light.stats(channel);
    lat.push(performance.now() - t0);
    // Packets the server received between the two answers: this request, and heavy messages.
    deltas.push(st.messages_in - prev - 1);
    prev = st.messages_in;
    rssMax = Math.max(rssMax, rssBytes(srv.proc.pid));
  }
  let sent = 0;
  for (const s of senders) sent += await s.stop();

  const sorted = [...deltas].sort((a, b) => a - b);
  const latSorted = [...lat].sort((a, b) => a - b);
  const q = (a, f) => a[Math.min(a.length - 1, Math.floor(a.length * f))];
  t.diagnostic(`heavy messages handled per light round trip: median ${q(sorted, 0.5)}, p90 ${q(sorted, 0.9)}, max ${sorted[sorted.length - 1]}; ` +
    `light latency median ${q(latSorted, 0.5).toFixed(1)} ms, p90 ${q(latSorted, 0.9).toFixed(1)} ms, max ${latSorted[latSorted.length - 1].toFixed(1)} ms; ` +
    `${sent} heavy messages sent; RSS ${(rss0 / 1048576).toFixed(1)} -> max ${(rssMax / 1048576).toFixed(1)} MiB`);
  // Turns: at most one busy connection reads per pass, and a light request is read in the
  // next pass; so one heavy message, sometimes two or three when several complete in the
  // passes a round trip spans, goes before it. Before the turns it was dozens.
  assert.ok(q(sorted, 0.5) <= 3, `median ${q(sorted, 0.5)} heavy messages per light round trip: ${JSON.stringify(deltas)}`);
  assert.ok(q(sorted, 0.9) <= 6, `p90 ${q(sorted, 0.9)} heavy messages per light round trip: ${JSON.stringify(deltas)}`);
  assert.ok(sorted.reduce((a, b) => a + b, 0) > 0, 'the heavy senders were not served at all');
  // The heavy input waits in the kernel: the server holds about a message per connection.
  assert.ok(rssMax - rss0 < HEAVY * 4 * MESSAGE + 32 * 1048576, `server RSS grew by ${((rssMax - rss0) / 1048576).toFixed(1)} MiB`);

  // Nothing was lost: once the senders stop, the server counts every message they sent.
  // Counted since `base`: the senders' CONNECT and attach, every heavy message, and each of the
  // light client's requests after `base`.
  let asked = 1 + LIGHT_ROUNDS;
  const want = () => 2 * HEAVY + sent + asked;
  let end;
  for (let i = 0; i < 600; i++) {
    end = await light.stats(channel);
    asked++;
    if (end.messages_in - base.messages_in >= want()) break;
    await sleep(100);
  }
  assert.equal(end.messages_in - base.messages_in, want(), `server counted ${end.messages_in - base.messages_in} packets; ${sent} heavy messages and ${asked} requests were sent`);
  assert.equal(end.protocol_errors, base.protocol_errors);
  for (const s of senders) s.c.destroy();
  light.destroy();
  await stopClean(srv);
});
