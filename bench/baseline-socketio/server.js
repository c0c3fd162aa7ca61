// The baseline of `make bench`: pulsec's /echo view and channel protocol (DESIGN §3, the echo
// fixture of docs/API.md) written on Node with the socket.io 4.8 package, the way a user would
// write it: one "message" event handler, a Map of views and a Map of channels per socket, and
// socket.io's defaults (path /socket.io/, pingInterval 25000, pingTimeout 20000, no
// permessage-deflate). It answers bench/loadgen exactly as build-release/examples/echo does:
//
//   attach {path:"/echo", attachId}      -> attach_ack {attachId, props:{channelId}}
//   attach with another path             -> attach_error "Unknown path: PATH"
//   detach {attachId}                    -> the view's channels close (__close__ to the client)
//   request "echo"                       -> response with the same payload
//   request "fail" {text}                -> error response "failed: TEXT"
//   any other request                    -> response null
//   event "echo"                         -> event "echo" back with the same payload
//   event "__close__"                    -> the channel is released
//   request "join" {topic}               -> socket.join(topic), response {ok: true}
//   request "publish" {topic,event,payload,exceptSelf}
//                                        -> io.to(topic).emit (socket.to with exceptSelf) of
//                                           one envelope for the whole room, response {ok: true}
//   request on an unknown/closed channel -> error response "Channel closed"
//
// Usage: node server.js [--host 127.0.0.1] [--port 8000]   (--port 0 picks a free port)
// Prints "listening on http://HOST:PORT" once it accepts connections.

import { randomBytes } from "node:crypto";
import { createServer } from "node:http";
import { parseArgs } from "node:util";
import { Server } from "socket.io";

const { values: opts } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "8000" },
  },
});

const httpServer = createServer();
const io = new Server(httpServer, { serveClient: false });

function echoView() {
  const channelId = randomBytes(16).toString("hex");
  return { channelIds: [channelId], props: { channelId } };
}

const routes = new Map([["/echo", echoView]]);

io.on("connection", (socket) => {
  const views = new Map(); // attachId -> { channelIds }
  const channels = new Map(); // channelId -> attachId

  const send = (msg) => socket.emit("message", msg);
  const respond = (channel, requestId, payload, error) =>
    send(
      error === undefined
        ? { type: "channel_message", channel, responseTo: requestId, payload }
        : { type: "channel_message", channel, responseTo: requestId, error },
    );

  function onChannelMessage(msg) {
    const { channel, event, payload = null, requestId } = msg;
    if (typeof channel !== "string" || !channels.has(channel)) {
      if (typeof requestId === "string") respond(channel, requestId, undefined, "Channel closed");
      return;
    }
    if (msg.responseTo !== undefined) return; // this server sends no requests
    if (event === "__close__") {
      channels.delete(channel);
      return;
    }
    if (typeof requestId === "string") {
      if (event === "echo") respond(channel, requestId, payload);
      else if (event === "fail") respond(channel, requestId, undefined, `failed: ${payload?.text ?? ""}`);
      else if (event === "join" && typeof payload?.topic === "string") {
        socket.join(payload.topic);
        respond(channel, requestId, { ok: true });
      } else if (event === "publish" && typeof payload?.topic === "string") {
        // Socket.IO's own fan-out: one packet, encoded once, written to every socket of the
        // room. The envelope cannot name each member's channel, so it names the topic.
        const msg = { type: "channel_message", channel: payload.topic, event: payload.event, payload: payload.payload ?? null };
        (payload.exceptSelf ? socket.to(payload.topic) : io.to(payload.topic)).emit("message", msg);
        respond(channel, requestId, { ok: true });
      } else respond(channel, requestId, null);
    } else if (event === "echo") {
      send({ type: "channel_message", channel, event: "echo", payload });
    }
  }

  function onAttach({ attachId, path }) {
    if (typeof attachId !== "string") return;
    const init = routes.get(path);
    if (!init) return send({ type: "attach_error", attachId, error: `Unknown path: ${path}` });
    if (views.has(attachId)) return send({ type: "attach_error", attachId, error: "Duplicate attachId" });
    const view = init();
    views.set(attachId, view);
    for (const id of view.channelIds) channels.set(id, attachId);
    send({ type: "attach_ack", attachId, props: view.props });
  }

  function onDetach({ attachId }) {
    const view = views.get(attachId);
    if (!view) return;
    views.delete(attachId);
    for (const id of view.channelIds) {
      if (channels.delete(id)) send({ type: "channel_message", channel: id, event: "__close__", payload: null });
    }
  }

  socket.on("message", (msg) => {
    if (msg === null || typeof msg !== "object") return;
    if (msg.type === "channel_message") onChannelMessage(msg);
    else if (msg.type === "attach") onAttach(msg);
    else if (msg.type === "detach") onDetach(msg);
  });
});

httpServer.listen(Number(opts.port), opts.host, () => {
  const { address, port } = httpServer.address();
  console.log(`listening on http://${address}:${port}`);
});

for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    io.close();
    httpServer.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
