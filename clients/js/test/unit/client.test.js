// The client: connection status, views (attach, props, detach, re-attach after a reconnect),
// what a dropped connection does to bridges, reference-counted channels, and close().

import { test } from "node:test";
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import {
  createClient,
  PulseClient,
  View,
  AttachError,
  ChannelClosed,
} from "../../src/index.js";
import { FakeSocket, tick, collectErrors } from "../support/fake-socket.js";

function setup(socketOptions) {
  const socket = new FakeSocket(socketOptions);
  const client = createClient({ socket });
  return { socket, client, errors: collectErrors(client) };
}

/** Attaches and answers the attach with `props`; returns the view. */
async function attached(socket, client, path, props, serverProps) {
  const pending = client.attach(path, props);
  const sent = socket.take().find((m) => m.type === "attach" && m.path === path);
  socket.serverSend({ type: "attach_ack", attachId: sent.attachId, props: serverProps });
  return pending;
}

// ---- status -------------------------------------------------------------------------------

test("status follows the socket: connecting, connected, reconnecting, disconnected", () => {
  const { socket, client } = setup({ connected: false });
  assert.ok(client instanceof PulseClient);
  assert.equal(client.status, "connecting");
  const seen = [];
  const off = client.on("status", (s) => seen.push(s));
  socket.open();
  assert.equal(client.status, "connected");
  socket.drop();
  assert.equal(client.status, "reconnecting");
  socket.open();
  socket.drop("io server disconnect"); // socket.io-client does not come back from this one
  assert.equal(client.status, "disconnected");
  socket.open();
  off();
  socket.drop();
  assert.deepEqual(seen, ["connected", "reconnecting", "connected", "disconnected", "connected"]);
  assert.equal(client.socket, socket);
});

test("an injected connected socket starts as connected", () => {
  const { client } = setup();
  assert.equal(client.status, "connected");
});

test("connect_error: reported with the server's reason; status depends on retrying", () => {
  const { socket, client } = setup({ connected: false });
  const errs = [];
  const statuses = [];
  client.on("connect_error", (e) => errs.push(e.message));
  client.on("status", (s) => statuses.push(s));
  socket.fail(new Error("xhr poll error"), { active: true });
  assert.equal(client.status, "connecting");
  socket.fail(new Error("Unauthorized"), { active: false });
  assert.equal(client.status, "disconnected");
  assert.deepEqual(errs, ["xhr poll error", "Unauthorized"]);
  assert.deepEqual(statuses, ["disconnected"]);
});

test("status: reconnecting while the Manager retries, disconnected once it gives up", () => {
  const socket = new FakeSocket();
  socket.io = new EventEmitter(); // the Manager
  const client = createClient({ socket });
  socket.drop();
  assert.equal(client.status, "reconnecting");
  socket.fail(new Error("websocket error"));
  assert.equal(client.status, "reconnecting");
  socket.io.emit("reconnect_attempt", 1);
  assert.equal(client.status, "reconnecting");
  socket.io.emit("reconnect_failed");
  assert.equal(client.status, "disconnected");
  client.close();
  assert.equal(socket.io.listenerCount("reconnect_attempt"), 0);
});

test("on() refuses unknown client events", () => {
  const { client } = setup();
  assert.throws(() => client.on("nope", () => {}), TypeError);
});

// ---- views --------------------------------------------------------------------------------

test("attach resolves with a view carrying the server's props", async () => {
  const { socket, client } = setup();
  const view = await attached(socket, client, "/chat", { room: 1 }, { channelId: "ch1" });
  assert.ok(view instanceof View);
  assert.deepEqual(view.props, { channelId: "ch1" });
  assert.equal(view.path, "/chat");
  assert.equal(view.state, "attached");
  assert.match(view.attachId, /^[0-9a-f]{32}$/);
});

test("attach rejects with AttachError carrying the server's attach_error text", async () => {
  const { socket, client } = setup();
  const pending = client.attach("/missing", null);
  const { attachId } = socket.take()[0];
  socket.serverSend({ type: "attach_error", attachId, error: "No route for /missing" });
  const err = await pending.catch((e) => e);
  assert.ok(err instanceof AttachError);
  assert.equal(err.message, "No route for /missing");
  assert.equal(err.code, "EREMOTE");
  assert.equal(err.path, "/missing");
  // The view is gone: later messages for it are ignored.
  socket.serverSend({ type: "attach_ack", attachId, props: {} });
  assert.deepEqual(socket.take(), []);
});

test("view_props updates props and calls onProps subscribers", async () => {
  const { socket, client } = setup();
  const view = await attached(socket, client, "/counter", null, { count: 0 });
  const seen = [];
  const off = view.onProps((p, v) => seen.push([p, v === view]));
  socket.serverSend({ type: "view_props", attachId: view.attachId, props: { count: 1 } });
  assert.deepEqual(view.props, { count: 1 });
  off();
  socket.serverSend({ type: "view_props", attachId: view.attachId, props: { count: 2 } });
  assert.deepEqual(view.props, { count: 2 });
  assert.deepEqual(seen, [[{ count: 1 }, true]]);
});

test("view_props before the ack: attach resolves with the latest props", async () => {
  const { socket, client } = setup();
  const pending = client.attach("/x");
  const { attachId } = socket.take()[0];
  socket.serverSend({ type: "attach_ack", attachId, props: { v: 1 } });
  socket.serverSend({ type: "view_props", attachId, props: { v: 2 } });
  const view = await pending;
  assert.deepEqual(view.props, { v: 2 });
});

test("detach sends detach once and ignores later messages for the view", async () => {
  const { socket, client } = setup();
  const view = await attached(socket, client, "/a", null, { n: 1 });
  const seen = [];
  view.onProps((p) => seen.push(p));
  view.detach();
  view.detach();
  assert.equal(view.state, "detached");
  assert.deepEqual(socket.take(), [{ type: "detach", attachId: view.attachId }]);
  socket.serverSend({ type: "view_props", attachId: view.attachId, props: { n: 2 } });
  assert.deepEqual(seen, []);
  // A detached view is not attached again after a reconnect.
  socket.drop();
  socket.open();
  assert.deepEqual(socket.take(), []);
});

test("attach while not connected waits for the connection", async () => {
  const { socket, client } = setup({ connected: false });
  const pending = client.attach("/later", { a: 1 });
  assert.deepEqual(socket.take(), []);
  socket.open();
  const [m] = socket.take();
  assert.deepEqual(m, { type: "attach", path: "/later", attachId: m.attachId, props: { a: 1 } });
  socket.serverSend({ type: "attach_ack", attachId: m.attachId, props: "ok" });
  assert.equal((await pending).props, "ok");
});

test("an attach pending across a drop is sent again on reconnect", async () => {
  const { socket, client } = setup();
  const pending = client.attach("/slow");
  const first = socket.take()[0];
  socket.drop();
  socket.open();
  const again = socket.take()[0];
  assert.deepEqual(again, first);
  socket.serverSend({ type: "attach_ack", attachId: again.attachId, props: 1 });
  assert.equal((await pending).props, 1);
});

// ---- connection loss and reconnect ---------------------------------------------------------

test("a dropped connection closes every bridge and rejects pending requests", async () => {
  const { socket, client } = setup();
  const a = client.channel("a");
  const b = client.channel("b");
  const pa = a.request("x", null, { timeout: 5000 });
  const pb = b.request("y");
  const closes = [];
  a.onClose((e) => closes.push(e.reason));
  socket.take();
  socket.drop("ping timeout");
  for (const p of [pa, pb]) {
    const err = await p.catch((e) => e);
    assert.ok(err instanceof ChannelClosed);
    assert.equal(err.reason, "disconnect");
    assert.match(err.message, /ping timeout/);
  }
  assert.deepEqual(closes, ["disconnect"]);
  assert.equal(a.closed, true);
  assert.equal(b.closed, true);
  assert.throws(() => a.emit("x"), ChannelClosed);
  assert.deepEqual(socket.take(), []); // nothing sent on a dead connection
  // After the reconnect the old ids stay closed (the server never reuses ids).
  socket.open();
  assert.equal(client.channel("a"), a);
  assert.equal(a.closed, true);
});

test("channel(id) while not connected gives a closed bridge", () => {
  const { client } = setup({ connected: false });
  const ch = client.channel("early");
  assert.equal(ch.closed, true);
  assert.throws(() => ch.emit("x"), ChannelClosed);
  assert.equal(client.channel("early"), ch);
});

test("views are attached again after a reconnect, with the same attachId; onProps gets the new props", async () => {
  const { socket, client } = setup();
  const view = await attached(socket, client, "/chat", { room: "r" }, { channelId: "old" });
  const bridge = client.channel("old");
  const seen = [];
  view.onProps((p) => seen.push(p));
  socket.drop();
  assert.equal(bridge.closed, true);
  assert.equal(view.state, "attaching");
  assert.deepEqual(view.props, { channelId: "old" }); // last known props until the new ack
  socket.open();
  const [m] = socket.take();
  assert.deepEqual(m, { type: "attach", path: "/chat", attachId: view.attachId, props: { room: "r" } });
  socket.serverSend({ type: "attach_ack", attachId: view.attachId, props: { channelId: "new" } });
  assert.equal(view.state, "attached");
  assert.deepEqual(view.props, { channelId: "new" });
  assert.deepEqual(seen, [{ channelId: "new" }]);
  const fresh = client.channel("new");
  assert.equal(fresh.closed, false);
  fresh.emit("hello", 1);
  assert.deepEqual(socket.take(), [{ type: "channel_message", channel: "new", event: "hello", payload: 1 }]);
});

test("a refused re-attach calls onError and marks the view failed; the next reconnect retries", async () => {
  const { socket, client } = setup();
  const view = await attached(socket, client, "/chat", null, { v: 1 });
  const errs = [];
  view.onError((e) => errs.push(e));
  const props = [];
  view.onProps((p) => props.push(p));
  socket.drop();
  socket.open();
  socket.take();
  socket.serverSend({ type: "attach_error", attachId: view.attachId, error: "Session expired" });
  assert.equal(view.state, "failed");
  assert.equal(errs.length, 1);
  assert.ok(errs[0] instanceof AttachError);
  assert.equal(errs[0].message, "Session expired");
  socket.drop();
  socket.open();
  assert.equal(socket.take()[0].attachId, view.attachId);
  socket.serverSend({ type: "attach_ack", attachId: view.attachId, props: { v: 2 } });
  assert.equal(view.state, "attached");
  assert.deepEqual(props, [{ v: 2 }]);
});

test("several views re-attach in attach order", async () => {
  const { socket, client } = setup();
  const v1 = await attached(socket, client, "/one", 1, {});
  const v2 = await attached(socket, client, "/two", 2, {});
  socket.drop();
  socket.open();
  assert.deepEqual(socket.take().map((m) => [m.path, m.attachId]), [
    ["/one", v1.attachId],
    ["/two", v2.attachId],
  ]);
});

// ---- reference-counted channels ------------------------------------------------------------

test("acquire/release: the channel closes a macrotask after the last release", async () => {
  const { socket, client } = setup();
  const a = client.acquireChannel("c");
  const b = client.acquireChannel("c");
  assert.equal(a, b);
  client.releaseChannel("c");
  await tick();
  assert.equal(a.closed, false);
  client.releaseChannel("c");
  assert.equal(a.closed, false); // not yet: it may be acquired again at once
  await tick();
  assert.equal(a.closed, true);
  assert.deepEqual(socket.take(), [{ type: "channel_message", channel: "c", event: "__close__", payload: null }]);
  client.releaseChannel("c"); // extra releases are ignored
});

test("acquire/release: release then acquire in the same tick (StrictMode) keeps it open", async () => {
  const { socket, client } = setup();
  const a = client.acquireChannel("c");
  client.releaseChannel("c");
  assert.equal(client.acquireChannel("c"), a);
  await tick(5);
  assert.equal(a.closed, false);
  assert.deepEqual(socket.take(), []);
});

// ---- close ---------------------------------------------------------------------------------

test("close(): pending attaches reject, bridges close, the injected socket is left alone", async () => {
  const { socket, client } = setup();
  const view = await attached(socket, client, "/v", null, {});
  const pendingAttach = client.attach("/p");
  const ch = client.channel("c");
  const req = ch.request("x");
  const statuses = [];
  client.on("status", (s) => statuses.push(s));
  client.close();
  client.close();
  assert.equal(client.closed, true);
  const aerr = await pendingAttach.catch((e) => e);
  assert.ok(aerr instanceof AttachError);
  assert.equal(aerr.code, "ECLOSED");
  const rerr = await req.catch((e) => e);
  assert.ok(rerr instanceof ChannelClosed);
  assert.equal(rerr.reason, "client");
  assert.equal(view.state, "detached");
  assert.equal(client.status, "disconnected");
  assert.deepEqual(statuses, ["disconnected"]);
  assert.equal(socket.disconnectCalls, 0);
  assert.equal(socket.listenerCount("message"), 0);
  assert.equal(socket.listenerCount("connect"), 0);
  await assert.rejects(client.attach("/after"), AttachError);
  assert.equal(client.channel("new").closed, true);
});

test("createClient without a socket uses socket.io-client and disconnects it on close", async () => {
  // Nothing listens on this port: the socket only has to be created, not connected.
  const client = createClient({ url: "http://127.0.0.1:9", autoConnect: false, reconnection: false });
  const socket = client.socket;
  assert.equal(typeof socket.emit, "function");
  assert.equal(socket.io.opts.path, "/socket.io/");
  assert.deepEqual(socket.io.opts.transports, ["websocket"]);
  assert.equal(client.status, "disconnected");
  client.close();
  assert.equal(socket.connected, false);
  assert.equal(socket.active, false);
});

test("createClient passes auth, path and transports through to socket.io-client", () => {
  const client = createClient({
    url: "http://127.0.0.1:9",
    auth: { token: "t" },
    path: "/rt/",
    transports: ["polling", "websocket"],
    autoConnect: false,
  });
  assert.deepEqual(client.socket.auth, { token: "t" });
  assert.equal(client.socket.io.opts.path, "/rt/");
  assert.deepEqual(client.socket.io.opts.transports, ["polling", "websocket"]);
  client.close();
  assert.throws(() => createClient({ socket: new FakeSocket(), maxBuffered: -1 }), TypeError);
});

// ---- connection state recovery -------------------------------------------------------------

/** A client on a server with recovery (it gave socket.io-client a pid). */
function recoverable() {
  const socket = new FakeSocket({ pid: "p1" });
  const client = createClient({ socket });
  return { socket, client, errors: collectErrors(client) };
}

test("recovered reconnect: bridges, views and pending requests carry on; nothing re-attached", async () => {
  const { socket, client, errors } = recoverable();
  const view = await attached(socket, client, "/chat", { room: 1 }, { channelId: "c1" });
  const bridge = client.channel("c1");
  const events = [];
  bridge.on("ev", (p) => events.push(p));
  const statuses = [];
  client.on("status", (s) => statuses.push(s));
  const connects = [];
  client.on("connect", (info) => connects.push(info));
  const closes = [];
  bridge.onClose((e) => closes.push(e));
  const pending = bridge.request("slow", 1, { timeout: 5000 });
  const [req] = socket.take();

  socket.drop("transport close");
  assert.equal(client.status, "reconnecting");
  assert.equal(bridge.closed, false, "kept while a recovery is possible");
  assert.equal(view.state, "attached");
  assert.equal(client.channel("c1"), bridge);

  socket.open({ recovered: true, replay: [[{ type: "channel_message", channel: "c1", event: "ev", payload: "missed" }, "7"]] });
  assert.equal(client.recovered, true);
  assert.deepEqual(connects, [{ recovered: true }]);
  assert.deepEqual(statuses, ["reconnecting", "connected"]);
  assert.deepEqual(closes, []);
  assert.equal(view.state, "attached");
  assert.deepEqual(view.props, { channelId: "c1" });
  // The unanswered request goes out again, as it was (same requestId); no attach.
  assert.deepEqual(socket.take(), [req]);
  socket.serverSend({ type: "channel_message", channel: "c1", responseTo: req.requestId, payload: "done" }, "8");
  assert.equal(await pending, "done");
  await tick();
  assert.deepEqual(events, ["missed"]);
  assert.deepEqual(errors, []);
});

test("recovered reconnect: a request answered by the replay is not sent again", async () => {
  const { socket, client } = recoverable();
  const bridge = client.channel("c1");
  const pending = bridge.request("q");
  const [req] = socket.take();
  socket.drop();
  socket.open({
    recovered: true,
    replay: [[{ type: "channel_message", channel: "c1", responseTo: req.requestId, payload: 42 }, "3"]],
  });
  assert.equal(await pending, 42);
  assert.deepEqual(socket.take(), []);
});

test("while reconnecting, what the app sends waits and goes out in order after the recovery", async () => {
  const { socket, client } = recoverable();
  const a = client.channel("a");
  const old = a.request("before");
  const [before] = socket.take();
  socket.drop();
  a.emit("e1", 1);
  const during = a.request("during", 2);
  a.emit("e2", 3);
  const pendingAttach = client.attach("/later");
  assert.deepEqual(socket.take(), [], "nothing is written while disconnected");
  socket.open({ recovered: true });
  const sent = socket.take();
  assert.deepEqual(sent[0], before, "requests of the old transport first");
  assert.equal(sent[1].type, "attach");
  assert.equal(sent[1].path, "/later");
  assert.deepEqual(sent.slice(2).map((m) => m.event), ["e1", "during", "e2"]);
  const duringId = sent[3].requestId;
  socket.serverSend({ type: "channel_message", channel: "a", responseTo: duringId, payload: "d" });
  socket.serverSend({ type: "channel_message", channel: "a", responseTo: before.requestId, payload: "b" });
  assert.equal(await during, "d");
  assert.equal(await old, "b");
  socket.serverSend({ type: "attach_ack", attachId: sent[1].attachId, props: {} });
  await pendingAttach;
  // A second blip: the request made while reconnecting counts as sent now.
  const again = a.request("again");
  socket.take();
  socket.drop();
  socket.open({ recovered: true });
  assert.deepEqual(socket.take().map((m) => m.event), ["again"]);
  void again.catch(() => {});
});

test("a fresh session after a recoverable drop: bridges close, queued messages are dropped, views re-attach", async () => {
  const { socket, client } = recoverable();
  const view = await attached(socket, client, "/chat", null, { channelId: "c1" });
  const bridge = client.channel("c1");
  const pending = bridge.request("q");
  socket.take();
  socket.drop();
  bridge.emit("lost", 1);
  const during = bridge.request("also lost");
  const connects = [];
  client.on("connect", (info) => connects.push(info));
  socket.pid = "p2"; // the server lost the session: a new pid
  socket.open({ recovered: true });
  assert.equal(client.recovered, false);
  assert.deepEqual(connects, [{ recovered: false }]);
  for (const p of [pending, during]) {
    const err = await p.catch((e) => e);
    assert.ok(err instanceof ChannelClosed);
    assert.equal(err.reason, "disconnect");
  }
  assert.equal(bridge.closed, true);
  assert.deepEqual(socket.take(), [{ type: "attach", path: "/chat", attachId: view.attachId, props: null }]);
});

test("the server's DISCONNECT or the app's ends the session at once, recovery or not", async () => {
  const { socket, client } = recoverable();
  const bridge = client.channel("c1");
  const pending = bridge.request("q");
  socket.drop("io server disconnect");
  assert.equal(bridge.closed, true);
  assert.equal(client.status, "disconnected");
  assert.ok((await pending.catch((e) => e)) instanceof ChannelClosed);
});

test("without a pid from the server (no recovery), a drop closes the bridges at once", () => {
  const { socket, client } = setup();
  const bridge = client.channel("c1");
  socket.drop();
  assert.equal(bridge.closed, true);
  assert.equal(client.status, "reconnecting");
  socket.open();
  assert.equal(client.recovered, false);
});

test("the Manager giving up ends a kept session", async () => {
  const socket = new FakeSocket({ pid: "p1" });
  socket.io = new EventEmitter();
  const client = createClient({ socket });
  const bridge = client.channel("c1");
  const pending = bridge.request("q");
  socket.drop();
  assert.equal(bridge.closed, false);
  socket.io.emit("reconnect_failed");
  assert.equal(client.status, "disconnected");
  assert.equal(bridge.closed, true);
  assert.ok((await pending.catch((e) => e)) instanceof ChannelClosed);
});

test("a server message is delivered once: offsets must grow, a fresh session starts over", async () => {
  const { socket, client } = recoverable();
  const bridge = client.channel("c1");
  const seen = [];
  bridge.on("ev", (p) => seen.push(p));
  const ev = (n) => ({ type: "channel_message", channel: "c1", event: "ev", payload: n });
  socket.serverSend(ev(1), "1");
  socket.serverSend(ev(2), "2");
  socket.serverSend(ev(2), "2"); // a replay of what was delivered
  socket.serverSend(ev(1), "1");
  socket.serverSend(ev(3), "3");
  socket.serverSend(ev("no offset")); // servers without recovery send none
  await tick();
  assert.deepEqual(seen, [1, 2, 3, "no offset"]);
  socket.drop();
  socket.pid = "p2";
  socket.open();
  const fresh = client.channel("c9");
  const seen2 = [];
  fresh.on("ev", (p) => seen2.push(p));
  socket.serverSend({ type: "channel_message", channel: "c9", event: "ev", payload: "new" }, "1");
  await tick();
  assert.deepEqual(seen2, ["new"]);
});

test("socket.io-client's buffer of packets before a CONNECT reply is emptied on disconnect", () => {
  const { socket } = recoverable();
  socket.drop();
  socket.receiveBuffer.push(Object.freeze(["message", {}, "5"]));
  socket.drop(); // the next attempt died between the replay and the CONNECT reply
  assert.deepEqual(socket.receiveBuffer, []);
});

test("maxQueued bounds what waits for a recovery; beyond, sending fails as when offline", async () => {
  const socket = new FakeSocket({ pid: "p1" });
  const client = createClient({ socket, maxQueued: 2 });
  const bridge = client.channel("c1");
  socket.drop();
  bridge.emit("a");
  bridge.emit("b");
  bridge.emit("c"); // dropped
  const err = await bridge.request("d").catch((e) => e);
  assert.ok(err instanceof ChannelClosed);
  socket.open({ recovered: true });
  assert.deepEqual(socket.take().map((m) => m.event), ["a", "b"]);
  assert.throws(() => createClient({ socket: new FakeSocket(), maxQueued: 1.5 }), TypeError);
});

test("a detach while reconnecting reaches the server after the recovery", async () => {
  const { socket, client } = recoverable();
  const view = await attached(socket, client, "/v", null, { channelId: "c" });
  socket.drop();
  view.detach();
  socket.open({ recovered: true });
  assert.deepEqual(socket.take(), [{ type: "detach", attachId: view.attachId }]);
});

test("an attach lost in the blip is sent again after the recovery", async () => {
  const { socket, client } = recoverable();
  const pending = client.attach("/v");
  const [m] = socket.take();
  socket.drop();
  socket.open({ recovered: true });
  assert.deepEqual(socket.take(), [m]);
  socket.serverSend({ type: "attach_ack", attachId: m.attachId, props: 1 });
  assert.equal((await pending).props, 1);
});
