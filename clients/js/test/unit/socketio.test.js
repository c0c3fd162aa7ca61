// The client over the real socket.io-client, against a minimal in-process Socket.IO v5 server
// (Engine.IO v4 over WebSocket, written here on `ws`): checks the exact packets on the wire,
// the auth payload, a connect refusal, and a reconnect with re-attach. The full server is the
// C one, tested in tests/integration; this only pins how the package drives socket.io-client.

import { test } from "node:test";
import assert from "node:assert/strict";
import { WebSocketServer } from "ws";
import { createClient, ChannelClosed } from "../../src/index.js";

/** A Socket.IO server that speaks just enough of the protocol, recording what it receives. */
async function miniServer({ refuse } = {}) {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, path: "/socket.io/" });
  await new Promise((resolve) => wss.once("listening", resolve));
  const server = {
    url: `http://127.0.0.1:${wss.address().port}`,
    packets: [], // every text packet received, in order
    connects: [], // the auth object of every namespace connect
    conn: null,
    waiters: [],
    send(obj) {
      server.conn.send(`42${JSON.stringify(["message", obj])}`);
    },
    drop() {
      server.conn.terminate();
    },
    /** Resolves with the next "message" event argument the client sends. */
    next() {
      return new Promise((resolve) => server.waiters.push(resolve));
    },
    close: () => new Promise((resolve) => {
      for (const c of wss.clients) c.terminate();
      wss.close(resolve);
    }),
  };
  let sid = 0;
  wss.on("connection", (ws, req) => {
    assert.match(req.url, /EIO=4/);
    assert.match(req.url, /transport=websocket/);
    server.conn = ws;
    ws.send(`0${JSON.stringify({ sid: `s${++sid}`, upgrades: [], pingInterval: 25000, pingTimeout: 20000, maxPayload: 1000000 })}`);
    ws.on("message", (data) => {
      const text = data.toString();
      server.packets.push(text);
      if (text.startsWith("40")) {
        server.connects.push(text.length > 2 ? JSON.parse(text.slice(2)) : undefined);
        if (refuse) ws.send(`44${JSON.stringify({ message: refuse })}`);
        else ws.send(`40${JSON.stringify({ sid: `n${sid}` })}`);
      } else if (text.startsWith("42")) {
        const [event, arg] = JSON.parse(text.slice(2));
        assert.equal(event, "message");
        const w = server.waiters.shift();
        if (w) w(arg);
      }
    });
  });
  return server;
}

function waitStatus(client, status) {
  if (client.status === status) return Promise.resolve();
  return new Promise((resolve) => {
    const off = client.on("status", (s) => {
      if (s === status) {
        off();
        resolve();
      }
    });
  });
}

test("over real socket.io-client: packets, auth, request/response, reconnect and re-attach", async () => {
  const server = await miniServer();
  const client = createClient({
    url: server.url,
    auth: { token: "secret" },
    reconnectionDelay: 20,
    reconnectionDelayMax: 50,
    randomizationFactor: 0,
  });
  try {
    await waitStatus(client, "connected");
    assert.deepEqual(server.connects, [{ token: "secret" }]);

    const attaching = client.attach("/chat", { room: "lobby" });
    const att = await server.next();
    assert.equal(
      server.packets.at(-1),
      `42["message",{"type":"attach","path":"/chat","attachId":"${att.attachId}","props":{"room":"lobby"}}]`,
    );
    server.send({ type: "attach_ack", attachId: att.attachId, props: { channelId: "c1" } });
    const view = await attaching;
    assert.deepEqual(view.props, { channelId: "c1" });

    const bridge = client.channel("c1");
    const asking = bridge.request("client:ask", { q: 1 }, { timeout: 2000 });
    const req = await server.next();
    assert.equal(
      server.packets.at(-1),
      `42["message",{"type":"channel_message","channel":"c1","event":"client:ask","payload":{"q":1},"requestId":"${req.requestId}"}]`,
    );
    server.send({ type: "channel_message", channel: "c1", event: null, responseTo: req.requestId, payload: 42 });
    assert.equal(await asking, 42);

    bridge.on("server:ask", (p) => ({ got: p }));
    server.send({ type: "channel_message", channel: "c1", event: "server:ask", payload: "x", requestId: "r1" });
    await server.next();
    assert.equal(
      server.packets.at(-1),
      '42["message",{"type":"channel_message","channel":"c1","responseTo":"r1","payload":{"got":"x"}}]',
    );

    const pending = bridge.request("client:never");
    await server.next();
    const newProps = new Promise((resolve) => view.onProps(resolve));
    server.drop();
    await assert.rejects(pending, ChannelClosed);
    assert.equal(bridge.closed, true);
    const again = await server.next(); // re-attach after the reconnect
    assert.deepEqual(again, { type: "attach", path: "/chat", attachId: view.attachId, props: { room: "lobby" } });
    assert.equal(client.status, "connected");
    assert.deepEqual(server.connects, [{ token: "secret" }, { token: "secret" }]);
    server.send({ type: "attach_ack", attachId: view.attachId, props: { channelId: "c2" } });
    assert.deepEqual(await newProps, { channelId: "c2" });
    assert.equal(client.channel("c2").closed, false);
  } finally {
    client.close();
    await server.close();
  }
});

test("over real socket.io-client: a refused connect reports the server's reason", async () => {
  const server = await miniServer({ refuse: "Unauthorized" });
  const client = createClient({ url: server.url, reconnection: false });
  try {
    const err = await new Promise((resolve) => client.on("connect_error", resolve));
    assert.equal(err.message, "Unauthorized");
    assert.equal(client.status, "disconnected");
  } finally {
    client.close();
    await server.close();
  }
});
