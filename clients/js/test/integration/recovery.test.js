// pulsec-client across recovered reconnects (connection state recovery, which the echo server
// offers by default): the client's TCP connection is destroyed under it, as a network failure
// would (no close handshake), while the server streams events and the client has requests in
// flight both ways. The session comes back: same view, same bridge, every event once and in
// order, every request answered once (incr counts them), the server's requests handled once.

import { test, after } from "node:test";
import assert from "node:assert/strict";

import { startEcho, stopClean, waitFor, withTimeout } from "./echo-server.js";
import { newClient, closeClients, openEcho } from "./helpers.js";

let server;
after(async () => {
  closeClients();
  if (server) await server.stop("SIGKILL");
});

/** Destroys the client's TCP connection under socket.io-client (WebSocket transport). */
function cut(client) {
  const tcp = client.socket.io.engine?.transport?.ws?._socket;
  assert.ok(tcp, "a WebSocket transport with a TCP socket");
  tcp.destroy();
}

test("a recovered reconnect loses nothing and does nothing twice", { timeout: 60000 }, async () => {
  server = await startEcho();
  const client = newClient(server.url, { reconnectionDelay: 20, reconnectionDelayMax: 50 });
  const connects = [];
  client.on("connect", ({ recovered }) => connects.push(recovered));
  const errors = [];
  client.on("error", (e) => errors.push(e));
  const { view, bridge } = await openEcho(client, {});
  const channelId = view.props.channelId;

  const ticks = [];
  bridge.on("tick", ({ n }) => ticks.push(n));
  const handled = new Map();
  bridge.on("q", ({ i }) => {
    handled.set(i, (handled.get(i) ?? 0) + 1);
    return { i };
  });
  const results = [];
  bridge.on("ask:result", (r) => results.push(r));

  await bridge.request("stream", { event: "tick", count: 500, interval_ms: 2 }, { timeout: 5000 });
  const incr = [];
  const asks = [];
  for (let i = 0; i < 100; i++) incr.push(bridge.request("incr", { key: "k" }, { timeout: 30000 }));
  for (let i = 0; i < 20; i++) asks.push(bridge.request("ask", { event: "q", payload: { i }, timeout_ms: 30000 }, { timeout: 30000 }));

  for (let k = 0; k < 3; k++) {
    await waitFor(() => ticks.length > (k + 1) * 60, { timeout: 10000, what: "events flowing" });
    const before = connects.length;
    cut(client);
    await waitFor(() => connects.length > before, { timeout: 10000, what: "the reconnect" });
    assert.equal(connects.at(-1), true, "recovered");
    assert.equal(client.recovered, true);
    assert.equal(client.socket.recovered, true);
  }

  const values = await withTimeout(Promise.all(incr), 30000, "incr requests");
  assert.deepEqual([...values].sort((a, b) => a - b), Array.from({ length: 100 }, (_, i) => i + 1));
  await withTimeout(Promise.all(asks), 30000, "ask requests");
  await waitFor(() => ticks.length >= 500 && results.length >= 20, { timeout: 30000, what: "every event and ask result" });
  assert.deepEqual(ticks, Array.from({ length: 500 }, (_, i) => i + 1), "every event once, in order");
  assert.equal(results.length, 20);
  assert.ok(results.every((r) => r.status === "ok"));
  assert.deepEqual([...handled.values()].filter((n) => n !== 1), [], "server requests handled once");
  assert.equal(handled.size, 20);

  assert.equal(view.state, "attached");
  assert.equal(view.props.channelId, channelId, "same channel id");
  assert.equal(client.channel(channelId), bridge);
  assert.equal(bridge.closed, false);
  const st = await bridge.request("stats", null, { timeout: 5000 });
  assert.equal(st.sessions_total, 1);
  assert.equal(st.sessions_resumed, 3);
  assert.equal(st.asks.twice, 0);
  assert.deepEqual(errors, []);
  client.close();
  await stopClean(server, "echo server (recovery)");
  server = null;
});
