// React bindings, rendered with react-test-renderer inside <StrictMode>, so every effect runs
// mount, cleanup, mount, as in development builds of apps.

import { test } from "node:test";
import assert from "node:assert/strict";
import { StrictMode, createElement as h, useEffect, useState } from "react";
import TestRenderer, { act } from "react-test-renderer";
import { createClient } from "../../src/index.js";
import {
  PulseProvider,
  usePulseClient,
  usePulseView,
  usePulseChannel,
  usePulseStatus,
  usePulseEvent,
} from "../../src/react.js";
import { FakeSocket, tick, collectErrors } from "../support/fake-socket.js";

globalThis.IS_REACT_ACT_ENVIRONMENT = true;

// react-test-renderer 19 announces its deprecation once per process; keep the output clean.
const consoleError = console.error;
console.error = (...args) => {
  if (typeof args[0] === "string" && args[0].includes("react-test-renderer is deprecated")) return;
  consoleError(...args);
};

function setup(socketOptions) {
  const socket = new FakeSocket(socketOptions);
  const client = createClient({ socket });
  return { socket, client, errors: collectErrors(client) };
}

async function render(client, element) {
  let renderer;
  await act(async () => {
    renderer = TestRenderer.create(h(StrictMode, null, h(PulseProvider, { client }, element)));
  });
  return {
    renderer,
    text: () => JSON.stringify(renderer.toJSON()),
    update: (el) =>
      act(async () => renderer.update(h(StrictMode, null, h(PulseProvider, { client }, el)))),
    unmount: () => act(async () => renderer.unmount()),
  };
}

/** Runs `fn` (a server action) inside act and lets effects settle. */
const server = (fn) =>
  act(async () => {
    fn();
    await tick();
  });

function ViewProbe({ path, props, onState }) {
  const state = usePulseView(path, props);
  onState?.(state);
  if (state.status === "loading") return h("p", null, "loading");
  if (state.status === "error") return h("p", null, `error: ${state.error.message}`);
  return h("p", null, `ready: ${JSON.stringify(state.props)}`);
}

// ---- usePulseView -------------------------------------------------------------------------

test("usePulseView under StrictMode: one attach, loading then ready, detach on unmount", async () => {
  const { socket, client } = setup();
  const states = [];
  const r = await render(client, h(ViewProbe, { path: "/chat", props: { room: 1 }, onState: (s) => states.push(s) }));
  assert.equal(r.text(), '{"type":"p","props":{},"children":["loading"]}');
  const sent = socket.take();
  assert.equal(sent.length, 1, "StrictMode's double effect must not attach twice");
  assert.deepEqual(sent[0], { type: "attach", path: "/chat", attachId: sent[0].attachId, props: { room: 1 } });
  await server(() => socket.serverSend({ type: "attach_ack", attachId: sent[0].attachId, props: { channelId: "c1" } }));
  assert.match(r.text(), /ready: \{\\"channelId\\":\\"c1\\"\}/);
  const last = states.at(-1);
  assert.equal(last.status, "ready");
  assert.equal(last.view.attachId, sent[0].attachId);
  assert.equal(last.error, undefined);
  await r.unmount();
  assert.deepEqual(socket.take(), [{ type: "detach", attachId: sent[0].attachId }]);
});

test("usePulseView: the result object is stable across unrelated re-renders", async () => {
  const { socket, client } = setup();
  const states = [];
  const probe = () => h(ViewProbe, { path: "/s", props: { a: 1 }, onState: (s) => states.push(s) });
  const r = await render(client, probe());
  const [m] = socket.take();
  await server(() => socket.serverSend({ type: "attach_ack", attachId: m.attachId, props: { x: 1 } }));
  const before = states.length;
  await r.update(probe());
  assert.ok(states.length > before);
  assert.equal(states.at(-1), states[before - 1]);
  assert.equal(states.at(-1).status, "ready");
  await r.unmount();
});

test("usePulseView: error status with the server's attach_error text", async () => {
  const { socket, client } = setup();
  const r = await render(client, h(ViewProbe, { path: "/nope" }));
  const [m] = socket.take();
  await server(() => socket.serverSend({ type: "attach_error", attachId: m.attachId, error: "No route" }));
  assert.match(r.text(), /error: No route/);
  await r.unmount();
  assert.deepEqual(socket.take(), []); // nothing to detach
});

test("usePulseView: view_props and a re-attach after reconnect re-render with new props", async () => {
  const { socket, client } = setup();
  const r = await render(client, h(ViewProbe, { path: "/count" }));
  const [m] = socket.take();
  await server(() => socket.serverSend({ type: "attach_ack", attachId: m.attachId, props: { n: 0 } }));
  await server(() => socket.serverSend({ type: "view_props", attachId: m.attachId, props: { n: 1 } }));
  assert.match(r.text(), /ready: \{\\"n\\":1\}/);
  await server(() => socket.drop());
  await server(() => socket.open());
  const [again] = socket.take();
  assert.equal(again.attachId, m.attachId);
  await server(() => socket.serverSend({ type: "attach_ack", attachId: m.attachId, props: { n: 100 } }));
  assert.match(r.text(), /ready: \{\\"n\\":100\}/);
  await server(() => socket.drop());
  await server(() => socket.open());
  socket.take();
  await server(() => socket.serverSend({ type: "attach_error", attachId: m.attachId, error: "gone" }));
  assert.match(r.text(), /error: gone/);
  await r.unmount();
});

test("usePulseView: new props detach the old view and attach a new one; equal props do not", async () => {
  const { socket, client } = setup();
  const r = await render(client, h(ViewProbe, { path: "/room", props: { id: 1 } }));
  const [m1] = socket.take();
  await server(() => socket.serverSend({ type: "attach_ack", attachId: m1.attachId, props: "one" }));
  await r.update(h(ViewProbe, { path: "/room", props: { id: 1 } })); // new object, same JSON
  assert.deepEqual(socket.take(), []);
  await r.update(h(ViewProbe, { path: "/room", props: { id: 2 } }));
  assert.equal(r.text(), '{"type":"p","props":{},"children":["loading"]}');
  const msgs = socket.take();
  assert.deepEqual(msgs[0], { type: "detach", attachId: m1.attachId });
  assert.equal(msgs.length, 2);
  assert.deepEqual(msgs[1], { type: "attach", path: "/room", attachId: msgs[1].attachId, props: { id: 2 } });
  await server(() => socket.serverSend({ type: "attach_ack", attachId: msgs[1].attachId, props: "two" }));
  assert.match(r.text(), /ready: \\"two\\"/);
  await r.unmount();
});

test("usePulseView: unmounted before the ack, the view is detached when the ack comes", async () => {
  const { socket, client } = setup();
  const r = await render(client, h(ViewProbe, { path: "/slow" }));
  const [m] = socket.take();
  await r.unmount();
  assert.deepEqual(socket.take(), []);
  await server(() => socket.serverSend({ type: "attach_ack", attachId: m.attachId, props: {} }));
  assert.deepEqual(socket.take(), [{ type: "detach", attachId: m.attachId }]);
});

// ---- usePulseChannel ----------------------------------------------------------------------

function ChannelProbe({ channelId, seen, bridges }) {
  const bridge = usePulseChannel(channelId);
  bridges?.push(bridge);
  const [messages, setMessages] = useState([]);
  useEffect(() => {
    if (!bridge || bridge.closed) return undefined;
    return bridge.on("server:message", (m) => {
      seen?.push(m);
      setMessages((prev) => [...prev, m]);
    });
  }, [bridge]);
  if (!bridge) return h("p", null, "no channel");
  return h("p", null, `${bridge.closed ? "closed" : "open"}: ${messages.join(",")}`);
}

test("usePulseChannel under StrictMode: stable bridge, not closed by the double effect, closed after unmount", async () => {
  const { socket, client } = setup();
  const bridges = [];
  const r = await render(client, h(ChannelProbe, { channelId: "c1", bridges }));
  await act(async () => {
    await tick(5);
  });
  assert.equal(bridges[0], null, "the first render acquires nothing: that is the effect's job");
  bridges.splice(0, bridges.lastIndexOf(null) + 1);
  assert.ok(bridges.length >= 1);
  assert.ok(bridges.every((b) => b === bridges[0]), "one bridge object across renders");
  assert.equal(bridges[0], client.channel("c1"));
  assert.equal(bridges[0].closed, false);
  assert.deepEqual(socket.take(), [], "no __close__ from StrictMode's cleanup");
  await r.update(h(ChannelProbe, { channelId: "c1", bridges }));
  assert.ok(bridges.every((b) => b === bridges[0]));
  act(() => r.renderer.unmount()); // synchronous act: an async one may run timers too
  assert.equal(bridges[0].closed, false); // released on the next macrotask
  await tick();
  assert.equal(bridges[0].closed, true);
  assert.deepEqual(socket.take(), [{ type: "channel_message", channel: "c1", event: "__close__", payload: null }]);
});

test("usePulseChannel: events sent before the component listens are delivered once", async () => {
  const { socket, client } = setup();
  socket.serverSend({ type: "channel_message", channel: "c1", event: "server:message", payload: "early" });
  const seen = [];
  const r = await render(client, h(ChannelProbe, { channelId: "c1", seen }));
  await server(() => socket.serverSend({ type: "channel_message", channel: "c1", event: "server:message", payload: "live" }));
  assert.deepEqual(seen, ["early", "live"]);
  assert.equal(r.text(), '{"type":"p","props":{},"children":["open: early,live"]}');
  await r.unmount();
});

test("usePulseChannel: a channel shared by two components stays open until both unmount", async () => {
  const { socket, client } = setup();
  function Two({ both }) {
    return h("div", null, h(ChannelProbe, { channelId: "c1" }), both ? h(ChannelProbe, { channelId: "c1" }) : null);
  }
  const r = await render(client, h(Two, { both: true }));
  await r.update(h(Two, { both: false }));
  await act(async () => {
    await tick(5);
  });
  assert.equal(client.channel("c1").closed, false);
  assert.deepEqual(socket.take(), []);
  await r.unmount();
  await tick();
  assert.equal(client.channel("c1").closed, true);
});

test("usePulseChannel: re-renders when the server closes the channel; null id gives null", async () => {
  const { socket, client } = setup();
  const r = await render(client, h(ChannelProbe, { channelId: "c1" }));
  await server(() => socket.serverSend({ type: "channel_message", channel: "c1", event: "__close__", payload: null }));
  assert.equal(r.text(), '{"type":"p","props":{},"children":["closed: "]}');
  await r.update(h(ChannelProbe, { channelId: null }));
  assert.equal(r.text(), '{"type":"p","props":{},"children":["no channel"]}');
  await r.unmount();
  assert.deepEqual(socket.take(), []); // a closed channel is not closed again
});

test("usePulseChannel: switching ids releases the old channel", async () => {
  const { socket, client } = setup();
  const r = await render(client, h(ChannelProbe, { channelId: "a" }));
  await r.update(h(ChannelProbe, { channelId: "b" }));
  await act(async () => {
    await tick(5);
  });
  assert.equal(client.channel("a").closed, true);
  assert.equal(client.channel("b").closed, false);
  assert.deepEqual(socket.take(), [{ type: "channel_message", channel: "a", event: "__close__", payload: null }]);
  await r.unmount();
});

// ---- a whole app: view -> channel id -> bridge, across a reconnect ---------------------------

function Chat() {
  const view = usePulseView("/chat", { user: "ann" });
  const bridge = usePulseChannel(view.props?.channelId);
  const [log, setLog] = useState([]);
  useEffect(() => {
    if (!bridge || bridge.closed) return undefined;
    const offMsg = bridge.on("server:message", (m) => setLog((l) => [...l, m.text]));
    const offAsk = bridge.on("server:confirm", (q) => ({ ok: true, q }));
    bridge.emit("client:hello", { user: "ann" });
    return () => {
      offMsg();
      offAsk();
    };
  }, [bridge]);
  return h("p", null, `${view.status} ${bridge ? bridge.id : "-"} [${log.join("|")}]`);
}

test("a chat component: attach, emit on open, answer a request, survive a reconnect", async () => {
  const { socket, client } = setup();
  const r = await render(client, h(Chat));
  const [att] = socket.take();
  await server(() => socket.serverSend({ type: "attach_ack", attachId: att.attachId, props: { channelId: "k1" } }));
  await act(async () => {
    await tick(5);
  });
  // StrictMode runs the effect twice: the second mount emits again, as it does in apps.
  const hellos = socket.take();
  assert.ok(hellos.length >= 1);
  for (const m of hellos) {
    assert.deepEqual(m, { type: "channel_message", channel: "k1", event: "client:hello", payload: { user: "ann" } });
  }
  await server(() => {
    socket.serverSend({ type: "channel_message", channel: "k1", event: "server:message", payload: { text: "hi" } });
    socket.serverSend({ type: "channel_message", channel: "k1", event: "server:confirm", payload: 7, requestId: "q1" });
  });
  assert.equal(r.text(), '{"type":"p","props":{},"children":["ready k1 [hi]"]}');
  assert.deepEqual(socket.take(), [
    { type: "channel_message", channel: "k1", responseTo: "q1", payload: { ok: true, q: 7 } },
  ]);

  await server(() => socket.drop());
  assert.equal(client.channel("k1").closed, true);
  await server(() => socket.open());
  const [again] = socket.take();
  assert.equal(again.attachId, att.attachId);
  await server(() => socket.serverSend({ type: "attach_ack", attachId: att.attachId, props: { channelId: "k2" } }));
  await act(async () => {
    await tick(5);
  });
  assert.equal(r.text(), '{"type":"p","props":{},"children":["ready k2 [hi]"]}');
  const after = socket.take();
  assert.ok(after.some((m) => m.channel === "k2" && m.event === "client:hello"));
  assert.ok(!after.some((m) => m.channel === "k1"), "nothing sent on the dead channel");
  await r.unmount();
  await tick();
  const final = socket.take();
  assert.deepEqual(final, [
    { type: "detach", attachId: att.attachId },
    { type: "channel_message", channel: "k2", event: "__close__", payload: null },
  ]);
});

// ---- provider, client, status --------------------------------------------------------------

test("usePulseStatus re-renders on status changes; usePulseClient gives the client", async () => {
  const { socket, client } = setup({ connected: false });
  let seenClient;
  function Status() {
    seenClient = usePulseClient();
    return h("p", null, usePulseStatus());
  }
  const r = await render(client, h(Status));
  assert.equal(seenClient, client);
  assert.match(r.text(), /connecting/);
  await server(() => socket.open());
  assert.match(r.text(), /"connected"/);
  await server(() => socket.drop());
  assert.match(r.text(), /reconnecting/);
  await r.unmount();
});

test("hooks outside a PulseProvider throw a clear error", async () => {
  function Orphan() {
    usePulseClient();
    return null;
  }
  const errors = [];
  const silenced = console.error;
  console.error = () => {};
  try {
    await act(async () => {
      TestRenderer.create(
        h(
          class Boundary extends (await import("react")).Component {
            constructor(p) {
              super(p);
              this.state = { failed: false };
            }
            static getDerivedStateFromError() {
              return { failed: true };
            }
            componentDidCatch(err) {
              errors.push(err);
            }
            render() {
              return this.state.failed ? null : this.props.children;
            }
          },
          null,
          h(Orphan),
        ),
      );
    });
  } finally {
    console.error = silenced;
  }
  assert.equal(errors.length, 1);
  assert.match(errors[0].message, /PulseProvider/);
  assert.throws(() => PulseProvider({ client: null }), TypeError);
});

// ---- usePulseEvent ------------------------------------------------------------------------

function EventProbe({ channelId, event, handler, renders }) {
  const bridge = usePulseChannel(channelId);
  usePulseEvent(bridge, event, handler);
  renders?.push(bridge);
  return h("p", null, bridge ? "open" : "none");
}

test("usePulseEvent: calls the latest handler, answers requests, registers once", async () => {
  const { socket, client } = setup();
  const seen = [];
  const r = await render(client, h(EventProbe, { channelId: "c1", event: "ev", handler: (p) => seen.push(["a", p]) }));
  await server(() => socket.serverSend({ type: "channel_message", channel: "c1", event: "ev", payload: 1 }));
  // A new handler each render: used from then on, without registering again.
  await r.update(h(EventProbe, { channelId: "c1", event: "ev", handler: (p) => seen.push(["b", p]) }));
  await server(() => socket.serverSend({ type: "channel_message", channel: "c1", event: "ev", payload: 2 }));
  assert.deepEqual(seen, [["a", 1], ["b", 2]]);
  // The handler's value answers a request.
  await r.update(h(EventProbe, { channelId: "c1", event: "ask", handler: (p) => ({ twice: p * 2 }) }));
  await server(() => socket.serverSend({ type: "channel_message", channel: "c1", event: "ask", payload: 4, requestId: "q" }));
  assert.deepEqual(socket.take(), [{ type: "channel_message", channel: "c1", responseTo: "q", payload: { twice: 8 } }]);
  // The old event's listener went away with the event change.
  await server(() => socket.serverSend({ type: "channel_message", channel: "c1", event: "ev", payload: 3 }));
  assert.deepEqual(seen, [["a", 1], ["b", 2]]);
  await r.unmount();
});

test("usePulseEvent: a null or closed bridge registers nothing; a bad handler throws", async () => {
  const { socket, client } = setup();
  const r = await render(client, h(EventProbe, { channelId: null, event: "ev", handler: () => {} }));
  assert.match(r.text(), /none/);
  await r.update(h(EventProbe, { channelId: "c1", event: "ev", handler: () => {} }));
  await server(() => socket.serverSend({ type: "channel_message", channel: "c1", event: "__close__", payload: null }));
  await r.update(h(EventProbe, { channelId: "c1", event: "other", handler: () => {} }));
  await r.unmount();
  const silenced = console.error;
  console.error = () => {};
  try {
    await assert.rejects(
      render(client, h(EventProbe, { channelId: "c2", event: "ev", handler: "nope" })),
      /handler must be a function/,
    );
  } finally {
    console.error = silenced;
  }
});

// ---- server rendering and hydration -----------------------------------------------------------

test("a server render has no side effects and renders the constant server snapshots", async () => {
  const { renderToString } = await import("react-dom/server");
  const { socket, client } = setup();
  function Page() {
    const status = usePulseStatus();
    const view = usePulseView("/chat", { a: 1 });
    const bridge = usePulseChannel("c1");
    usePulseEvent(bridge, "ev", () => {});
    return h("p", null, `${status} ${view.status} ${bridge ? "bridge" : "none"}`);
  }
  const html = renderToString(h(PulseProvider, { client }, h(Page)));
  assert.match(html, /connecting loading none/, "the connected client's status is not rendered on the server");
  await tick();
  assert.deepEqual(socket.take(), [], "no attach, no channel message");
  // Rendering did not create the bridge either: it is made when first asked for.
  client.close();
});

// ---- across a recovered reconnect ----------------------------------------------------------

test("a chat component keeps its view, bridge and log through a recovered reconnect", async () => {
  const socket = new FakeSocket({ pid: "p1" });
  const client = createClient({ socket });
  const r = await render(client, h(Chat));
  const [att] = socket.take();
  await server(() => socket.serverSend({ type: "attach_ack", attachId: att.attachId, props: { channelId: "k1" } }, "1"));
  await act(async () => {
    await tick(5);
  });
  socket.take();
  await server(() => socket.serverSend({ type: "channel_message", channel: "k1", event: "server:message", payload: { text: "a" } }, "2"));
  await server(() => socket.drop());
  assert.equal(r.text(), '{"type":"p","props":{},"children":["ready k1 [a]"]}');
  await server(() =>
    socket.open({
      recovered: true,
      replay: [[{ type: "channel_message", channel: "k1", event: "server:message", payload: { text: "b" } }, "3"]],
    }),
  );
  await act(async () => {
    await tick(5);
  });
  assert.equal(r.text(), '{"type":"p","props":{},"children":["ready k1 [a|b]"]}');
  assert.deepEqual(socket.take(), [], "no re-attach, no new hello: the component did not remount");
  await r.unmount();
});
