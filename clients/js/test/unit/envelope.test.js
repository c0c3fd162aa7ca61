// The exact bytes of every message the client sends (DESIGN §3), and the shapes it reads.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createClient } from "../../src/index.js";
import { FakeSocket, tick, collectErrors } from "../support/fake-socket.js";

const HEX32 = /^[0-9a-f]{32}$/;

function setup() {
  const socket = new FakeSocket();
  const client = createClient({ socket });
  return { socket, client, errors: collectErrors(client) };
}

test("emit sends the event envelope, byte for byte", () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  ch.emit("client:message", { text: "hi", n: [1, 2] });
  ch.emit("client:ping");
  ch.emit("client:zero", 0);
  assert.deepEqual(socket.takeRaw(), [
    '{"type":"channel_message","channel":"c1","event":"client:message","payload":{"text":"hi","n":[1,2]}}',
    '{"type":"channel_message","channel":"c1","event":"client:ping","payload":null}',
    '{"type":"channel_message","channel":"c1","event":"client:zero","payload":0}',
  ]);
});

test("request sends the request envelope with a 32-hex requestId, unique per request", () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  ch.request("client:ask", { q: 1 }).catch(() => {});
  ch.request("client:ask").catch(() => {});
  const [a, b] = socket.takeRaw();
  const ida = JSON.parse(a).requestId;
  const idb = JSON.parse(b).requestId;
  assert.match(ida, HEX32);
  assert.match(idb, HEX32);
  assert.notEqual(ida, idb);
  assert.equal(
    a,
    `{"type":"channel_message","channel":"c1","event":"client:ask","payload":{"q":1},"requestId":"${ida}"}`,
  );
  assert.equal(
    b,
    `{"type":"channel_message","channel":"c1","event":"client:ask","payload":null,"requestId":"${idb}"}`,
  );
  ch.close();
});

test("answers to server requests: response and error response envelopes", async () => {
  const { socket, client } = setup();
  const ch = client.channel("c2");
  ch.on("server:ok", (p) => ({ echo: p }));
  ch.on("server:fail", () => {
    throw new Error("nope");
  });
  ch.on("server:nothing", () => undefined);
  socket.serverSend({ type: "channel_message", channel: "c2", event: "server:ok", payload: 7, requestId: "r1" });
  socket.serverSend({ type: "channel_message", channel: "c2", event: "server:fail", payload: null, requestId: "r2" });
  socket.serverSend({ type: "channel_message", channel: "c2", event: "server:nothing", payload: null, requestId: "r3" });
  await tick();
  assert.deepEqual(socket.takeRaw(), [
    '{"type":"channel_message","channel":"c2","responseTo":"r1","payload":{"echo":7}}',
    '{"type":"channel_message","channel":"c2","responseTo":"r2","error":"nope"}',
    '{"type":"channel_message","channel":"c2","responseTo":"r3","payload":null}',
  ]);
});

test("close sends the close envelope", () => {
  const { socket, client } = setup();
  client.channel("c3").close();
  assert.deepEqual(socket.takeRaw(), [
    '{"type":"channel_message","channel":"c3","event":"__close__","payload":null}',
  ]);
});

test("attach and detach envelopes; attachId is 32 hex", async () => {
  const { socket, client } = setup();
  const pending = client.attach("/chat", { room: "a" });
  const [raw] = socket.takeRaw();
  const attachId = JSON.parse(raw).attachId;
  assert.match(attachId, HEX32);
  assert.equal(raw, `{"type":"attach","path":"/chat","attachId":"${attachId}","props":{"room":"a"}}`);
  socket.serverSend({ type: "attach_ack", attachId, props: { channelId: "x" } });
  const view = await pending;
  assert.equal(view.attachId, attachId);
  view.detach();
  assert.deepEqual(socket.takeRaw(), [`{"type":"detach","attachId":"${attachId}"}`]);

  client.attach("/plain").catch(() => {});
  const [raw2] = socket.takeRaw();
  assert.equal(raw2, `{"type":"attach","path":"/plain","attachId":"${JSON.parse(raw2).attachId}","props":null}`);
});

test("responses with \"event\": null (as Pulse sends them) are accepted", async () => {
  const { socket, client } = setup();
  const ch = client.channel("c4");
  const p = ch.request("q", 1);
  const { requestId } = socket.take()[0];
  socket.serverSend({ type: "channel_message", channel: "c4", event: null, responseTo: requestId, payload: "ok" });
  assert.equal(await p, "ok");
  const p2 = ch.request("q", 2);
  const r2 = socket.take()[0].requestId;
  socket.serverSend({ type: "channel_message", channel: "c4", event: null, responseTo: r2, error: "bad" });
  await assert.rejects(p2, { name: "ChannelError", message: "bad" });
});

test("a response without payload resolves with null", async () => {
  const { socket, client } = setup();
  const ch = client.channel("c5");
  const p = ch.request("q");
  socket.serverSend({ type: "channel_message", channel: "c5", responseTo: socket.take()[0].requestId });
  assert.equal(await p, null);
});

test("malformed server messages are dropped and reported, never thrown", () => {
  const { socket, client, errors } = setup();
  const ch = client.channel("c6");
  for (const bad of [null, 42, "text", [], {}, { type: 5 }, { type: "nope" }, { type: "channel_message" },
    { type: "channel_message", channel: "c6" }, { type: "attach_ack" }, { type: "view_props", attachId: "zz" }]) {
    socket.serverSend(bad);
  }
  assert.equal(ch.closed, false);
  assert.ok(errors.length >= 7, `reported ${errors.length}`);
  assert.deepEqual(socket.take(), []);
});

test("reserved and invalid event names are refused", () => {
  const { client } = setup();
  const ch = client.channel("c7");
  assert.throws(() => ch.emit("__close__"), TypeError);
  assert.throws(() => ch.on("__close__", () => {}), TypeError);
  assert.throws(() => ch.request("__close__"), TypeError);
  assert.throws(() => ch.emit(""), TypeError);
  assert.throws(() => ch.emit(5), TypeError);
  assert.throws(() => ch.on("x", "not a function"), TypeError);
  assert.throws(() => ch.request("x", 1, { timeout: -1 }), TypeError);
  assert.throws(() => client.channel(""), TypeError);
});
