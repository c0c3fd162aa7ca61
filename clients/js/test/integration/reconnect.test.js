// pulsec-client across server restarts: the echo server is stopped (SIGTERM, then a crash with
// SIGKILL) and a new one started on the same port. While it is away the client keeps its
// bridges and pending requests (the server offered recovery, so the session might come back);
// the new server has never heard of it and answers with a fresh session: then open bridges
// close with ChannelClosed, their pending requests reject, the view is attached again by
// itself, and onProps delivers the new props, whose new channel works. (Recovered reconnects:
// recovery.test.js.)

import { test, after } from "node:test";
import assert from "node:assert/strict";

import { ChannelClosed } from "../../src/index.js";
import { startEcho, stopClean, freePort, waitFor, withTimeout } from "./echo-server.js";
import { HEX32, newClient, closeClients, stats, askResults, ask } from "./helpers.js";

let server;
after(async () => {
  closeClients();
  if (server) await server.stop("SIGKILL");
});

test("views re-attach after the server restarts on the same port", { timeout: 60000 }, async () => {
  const port = await freePort();
  server = await startEcho({ port });
  const client = newClient(server.url);
  const statuses = [];
  client.on("status", (s) => statuses.push(s));
  const errors = [];
  client.on("error", (e) => errors.push(e));

  const view = await client.attach("/echo", { who: "reconnect" });
  const props = [];
  view.onProps((p, v) => {
    assert.equal(v, view);
    props.push(p);
  });
  // A second view whose props nobody follows: it is re-attached all the same.
  const quiet = await client.attach("/echo", { who: "quiet" });

  /** One drop of the connection with `kill`, a new server on the same port, checks. */
  async function cycle(kill, expectReason, unknownId) {
    const oldId = view.props.channelId;
    const bridge = client.channel(oldId);
    assert.equal(bridge.closed, false);
    const quietBridge = client.channel(quiet.props.channelId);
    const closed = new Promise((resolve) => bridge.onClose(resolve));
    const pending = bridge.request("defer", { ms: 10000 }, { timeout: 20000 });
    const pendingNoTimeout = bridge.request("defer", { ms: 20000 });
    pending.catch(() => {});
    pendingNoTimeout.catch(() => {});
    // Let both requests reach the server before it goes away.
    assert.equal(await bridge.request("echo", "sync", { timeout: 2000 }), "sync");
    const seenProps = props.length;

    await kill();

    await waitFor(() => client.status === "reconnecting", { what: "status reconnecting" });
    // While away, everything waits for the server to recover the session.
    assert.equal(bridge.closed, false);
    assert.equal(view.state, "attached");
    const unknown = client.channel(unknownId);
    assert.equal(unknown.closed, false, "a new id may be of the session that comes back");

    server = await startEcho({ port });

    // This server does not know the session: a fresh one, and everything of the old closes.
    const err = await withTimeout(closed, 10000, "the bridge closing on the fresh session");
    assert.ok(err instanceof ChannelClosed, `not a ChannelClosed: ${err}`);
    if (expectReason) assert.equal(err.reason, expectReason);
    await assert.rejects(pending, ChannelClosed);
    await assert.rejects(pendingNoTimeout, ChannelClosed);
    assert.equal(bridge.closed, true);
    assert.equal(quietBridge.closed, true);
    assert.equal(unknown.closed, true);
    assert.throws(() => bridge.emit("echo", 1), ChannelClosed);
    assert.equal(client.recovered, false);

    const next = await waitFor(() => props[seenProps], { timeout: 10000, what: "onProps after the re-attach" });
    assert.equal(client.status, "connected");
    assert.equal(view.state, "attached");
    assert.deepEqual(Object.keys(next), ["channelId"]);
    assert.match(next.channelId, HEX32);
    assert.notEqual(next.channelId, oldId, "a new channel id after the re-attach");
    assert.equal(view.props, next);
    await waitFor(() => quiet.state === "attached" && quiet.props.channelId !== quietBridge.id, {
      what: "the second view re-attached",
    });

    // The old id stays closed; the new channel works both ways.
    assert.equal(client.channel(oldId), bridge);
    assert.equal(bridge.closed, true);
    const fresh = client.channel(next.channelId);
    assert.equal(fresh.closed, false);
    assert.deepEqual(await fresh.request("echo", { after: "restart" }, { timeout: 2000 }), { after: "restart" });
    const results = askResults(fresh);
    fresh.on("q", (p) => `pong ${p}`);
    ask(fresh, "q", "ping", 1000);
    assert.deepEqual(await results.next(), { status: "ok", payload: "pong ping" });
    const echoes = [];
    fresh.on("echo", (p) => echoes.push(p));
    fresh.emit("echo", "live");
    await waitFor(() => echoes.length === 1, { what: "echo on the new channel" });

    // The new server sees exactly this client's two views, once each.
    const st = await stats(fresh);
    assert.equal(st.sessions, 1);
    assert.equal(st.views, 2);
    assert.equal(st.channels, 2);
  }

  // A graceful restart: SIGTERM (and the old server exits 0), new server on the same port.
  await cycle(() => stopClean(server, "first echo server"), "disconnect", "0".repeat(32));
  // A crash: SIGKILL, the connection just drops.
  await cycle(() => server.stop("SIGKILL"), "disconnect", "1".repeat(32));

  assert.deepEqual(statuses.filter((s) => s !== "connecting"), [
    "connected",
    "reconnecting",
    "connected",
    "reconnecting",
    "connected",
  ]);
  assert.deepEqual(errors, []);
  client.close();
  await stopClean(server, "last echo server");
  server = null;
});
