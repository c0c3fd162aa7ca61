// Channel bridge semantics: requests both ways, timeouts, close from either side, buffering
// before the first listener, and how listeners answer the server's requests.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  createClient,
  Channel,
  ChannelClosed,
  ChannelTimeout,
  ChannelError,
  PulseError,
} from "../../src/index.js";
import { FakeSocket, tick, collectErrors } from "../support/fake-socket.js";

function setup() {
  const socket = new FakeSocket();
  const client = createClient({ socket });
  return { socket, client, errors: collectErrors(client) };
}

const msg = (channel, fields) => ({ type: "channel_message", channel, ...fields });

// ---- identity ---------------------------------------------------------------------------

test("channel(id) gives the same bridge while open; a closed id keeps its closed bridge", () => {
  const { client } = setup();
  const a = client.channel("c1");
  assert.ok(a instanceof Channel);
  assert.equal(a.id, "c1");
  assert.equal(a.closed, false);
  assert.equal(client.channel("c1"), a);
  assert.notEqual(client.channel("c2"), a);
  a.close();
  assert.equal(a.closed, true);
  const again = client.channel("c1");
  assert.equal(again, a);
  assert.equal(again.closed, true);
});

// ---- client -> server requests ----------------------------------------------------------

test("request resolves with the server's payload; responses route by requestId", async () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  const p1 = ch.request("a", 1);
  const p2 = ch.request("b", 2);
  const [m1, m2] = socket.take();
  socket.serverSend(msg("c1", { responseTo: m2.requestId, payload: "two" }));
  socket.serverSend(msg("c1", { responseTo: m1.requestId, payload: { one: true } }));
  assert.deepEqual(await p1, { one: true });
  assert.equal(await p2, "two");
});

test("request rejects with ChannelError carrying the server's error text", async () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  const p = ch.request("ask", null);
  socket.serverSend(msg("c1", { responseTo: socket.take()[0].requestId, error: "Not allowed" }));
  const err = await p.catch((e) => e);
  assert.ok(err instanceof ChannelError);
  assert.ok(err instanceof PulseError);
  assert.ok(err instanceof Error);
  assert.equal(err.message, "Not allowed");
  assert.equal(err.code, "EREMOTE");
  assert.equal(err.channel, "c1");
  assert.equal(err.event, "ask");
});

test("request times out with ChannelTimeout; a late response is ignored", async () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  const started = Date.now();
  const p = ch.request("slow", null, { timeout: 30 });
  const { requestId } = socket.take()[0];
  const err = await p.catch((e) => e);
  assert.ok(err instanceof ChannelTimeout);
  assert.equal(err.code, "ETIMEDOUT");
  assert.equal(err.timeout, 30);
  assert.ok(Date.now() - started >= 25);
  socket.serverSend(msg("c1", { responseTo: requestId, payload: "late" }));
  assert.equal(ch.closed, false);
});

test("a request answered before its timeout does not time out later", async () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  const p = ch.request("fast", null, { timeout: 20 });
  socket.serverSend(msg("c1", { responseTo: socket.take()[0].requestId, payload: 1 }));
  assert.equal(await p, 1);
  await tick(40); // an unhandled rejection here would fail the test run
});

test("timeout 0 or absent means no timeout", async () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  let settled = false;
  const p = ch.request("x", null, { timeout: 0 }).finally(() => (settled = true));
  await tick(20);
  assert.equal(settled, false);
  socket.serverSend(msg("c1", { responseTo: socket.take()[0].requestId, payload: true }));
  assert.equal(await p, true);
});

// ---- close ------------------------------------------------------------------------------

test("close(): pending requests reject with ChannelClosed, later use throws ChannelClosed", async () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  const p = ch.request("x", null, { timeout: 1000 });
  const seen = [];
  ch.onClose((e) => seen.push(e));
  socket.take();
  ch.close();
  const err = await p.catch((e) => e);
  assert.ok(err instanceof ChannelClosed);
  assert.equal(err.code, "ECLOSED");
  assert.equal(err.reason, "local");
  assert.equal(seen.length, 1);
  assert.equal(ch.closed, true);
  assert.throws(() => ch.emit("x"), ChannelClosed);
  assert.throws(() => ch.request("x"), ChannelClosed);
  assert.throws(() => ch.on("x", () => {}), ChannelClosed);
  ch.close(); // idempotent, sends nothing more
  assert.deepEqual(socket.take(), [msg("c1", { event: "__close__", payload: null })]);
});

test("server __close__: pending requests reject, nothing is echoed, later use throws", async () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  const got = [];
  ch.on("ev", (p) => got.push(p));
  const p = ch.request("x");
  socket.take();
  socket.serverSend(msg("c1", { event: "__close__", payload: null }));
  const err = await p.catch((e) => e);
  assert.ok(err instanceof ChannelClosed);
  assert.equal(err.reason, "remote");
  assert.equal(ch.closed, true);
  assert.throws(() => ch.emit("x"), ChannelClosed);
  assert.throws(() => ch.request("x"), ChannelClosed);
  assert.throws(() => ch.on("x", () => {}), ChannelClosed);
  socket.serverSend(msg("c1", { event: "ev", payload: 1 }));
  assert.deepEqual(got, []);
  assert.deepEqual(socket.take(), []);
  assert.equal(client.channel("c1"), ch);
});

test("a server request on a channel this client closed is answered \"Channel closed\"", () => {
  const { socket, client } = setup();
  client.channel("c1").close();
  socket.take();
  socket.serverSend(msg("c1", { event: "ask", payload: null, requestId: "r9" }));
  socket.serverSend(msg("c1", { event: "tell", payload: null }));
  assert.deepEqual(socket.take(), [msg("c1", { responseTo: "r9", error: "Channel closed" })]);
});

test("answers still running when the channel closes are not sent", async () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  let finish;
  ch.on("ask", () => new Promise((r) => (finish = r)));
  socket.serverSend(msg("c1", { event: "ask", payload: null, requestId: "r1" }));
  ch.close();
  socket.take();
  finish("late");
  await tick();
  assert.deepEqual(socket.take(), []);
});

// ---- server -> client events and requests ------------------------------------------------

test("events reach every listener in registration order; off removes one", () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  const log = [];
  const off1 = ch.on("ev", (p) => log.push(["a", p]));
  ch.on("ev", (p) => log.push(["b", p]));
  ch.on("other", (p) => log.push(["o", p]));
  socket.serverSend(msg("c1", { event: "ev", payload: 1 }));
  off1();
  off1(); // idempotent
  socket.serverSend(msg("c1", { event: "ev", payload: 2 }));
  assert.deepEqual(log, [["a", 1], ["b", 1], ["b", 2]]);
});

test("off() inside a handler is safe and stops a later listener of the same dispatch", () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  const log = [];
  let offB;
  ch.on("ev", () => {
    log.push("a");
    offB();
  });
  offB = ch.on("ev", () => log.push("b"));
  const offC = ch.on("ev", () => {
    log.push("c");
    offC();
  });
  socket.serverSend(msg("c1", { event: "ev", payload: null }));
  socket.serverSend(msg("c1", { event: "ev", payload: null }));
  assert.deepEqual(log, ["a", "c", "a"]);
});

test("a listener's error on a plain event goes to the client's error listeners", async () => {
  const { socket, client, errors } = setup();
  const ch = client.channel("c1");
  const log = [];
  ch.on("ev", () => {
    throw new Error("boom");
  });
  ch.on("ev", async () => {
    throw new Error("async boom");
  });
  ch.on("ev", () => log.push("still called"));
  socket.serverSend(msg("c1", { event: "ev", payload: null }));
  await tick();
  assert.deepEqual(log, ["still called"]);
  assert.deepEqual(errors.map((e) => e.message), ["boom", "async boom"]);
  assert.deepEqual(socket.take(), []); // events are never answered
});

test("server requests: return value, resolved Promise, throw and rejection answer them", async () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  ch.on("sync", (p) => p + 1);
  ch.on("async", async (p) => {
    await tick(5);
    return { doubled: p * 2 };
  });
  ch.on("throws", () => {
    throw new Error("sync failure");
  });
  ch.on("rejects", () => Promise.reject(new Error("async failure")));
  ch.on("throws-string", () => {
    throw "plain text"; // eslint-disable-line no-throw-literal
  });
  ch.on("falsy", () => 0);
  let n = 0;
  for (const event of ["sync", "async", "throws", "rejects", "throws-string", "falsy"]) {
    socket.serverSend(msg("c1", { event, payload: 10, requestId: `r${++n}` }));
  }
  await tick(20);
  const answers = Object.fromEntries(socket.take().map((m) => [m.responseTo, m]));
  assert.deepEqual(answers.r1, msg("c1", { responseTo: "r1", payload: 11 }));
  assert.deepEqual(answers.r2, msg("c1", { responseTo: "r2", payload: { doubled: 20 } }));
  assert.deepEqual(answers.r3, msg("c1", { responseTo: "r3", error: "sync failure" }));
  assert.deepEqual(answers.r4, msg("c1", { responseTo: "r4", error: "async failure" }));
  assert.deepEqual(answers.r5, msg("c1", { responseTo: "r5", error: "plain text" }));
  assert.deepEqual(answers.r6, msg("c1", { responseTo: "r6", payload: 0 }));
});

test("several listeners: every one is called; the first defined result answers", async () => {
  const { socket, client, errors } = setup();
  const ch = client.channel("c1");
  const called = [];
  ch.on("ask", () => {
    called.push("logger");
  });
  ch.on("ask", async () => {
    called.push("answerer");
    await tick(5);
    return "from second";
  });
  ch.on("ask", () => {
    called.push("third");
    return "from third";
  });
  ch.on("ask", () => {
    called.push("fourth");
    throw new Error("ignored but reported");
  });
  socket.serverSend(msg("c1", { event: "ask", payload: null, requestId: "r1" }));
  assert.deepEqual(called, ["logger", "answerer", "third", "fourth"]);
  await tick(20);
  assert.deepEqual(socket.take(), [msg("c1", { responseTo: "r1", payload: "from second" })]);
  assert.deepEqual(errors.map((e) => e.message), ["ignored but reported"]);
});

test("several listeners: an earlier throw wins over a later value", async () => {
  const { socket, client, errors } = setup();
  const ch = client.channel("c1");
  ch.on("ask", () => undefined);
  ch.on("ask", () => {
    throw new Error("first failure");
  });
  ch.on("ask", () => "value");
  socket.serverSend(msg("c1", { event: "ask", payload: null, requestId: "r1" }));
  await tick();
  assert.deepEqual(socket.take(), [msg("c1", { responseTo: "r1", error: "first failure" })]);
  assert.deepEqual(errors, []);
});

test("all listeners returning undefined answer null", async () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  ch.on("ask", () => {});
  ch.on("ask", async () => {});
  socket.serverSend(msg("c1", { event: "ask", payload: null, requestId: "r1" }));
  await tick();
  assert.deepEqual(socket.take(), [msg("c1", { responseTo: "r1", payload: null })]);
});

test("an answer that cannot be encoded becomes an error response", async () => {
  const socket = new FakeSocket();
  // socket.io-client encodes synchronously in emit(), so JSON.stringify errors surface there.
  const origEmit = socket.emit.bind(socket);
  socket.emit = (ev, m) => {
    JSON.stringify(m);
    return origEmit(ev, m);
  };
  const client = createClient({ socket });
  const errors = collectErrors(client);
  const ch = client.channel("c1");
  ch.on("ask", () => ({ big: 10n }));
  socket.serverSend(msg("c1", { event: "ask", payload: null, requestId: "r1" }));
  await tick();
  const [answer] = socket.take();
  assert.equal(answer.responseTo, "r1");
  assert.match(answer.error, /^Reply could not be sent: /);
  assert.equal(errors.length, 1);
  assert.throws(() => ch.emit("x", 1n), TypeError);
  await assert.rejects(ch.request("x", 1n), TypeError);
});

// ---- buffering before the first listener --------------------------------------------------

test("events before the first listener are delivered when it registers, in order", async () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  socket.serverSend(msg("c1", { event: "ev", payload: 1 }));
  socket.serverSend(msg("c1", { event: "other", payload: "x" }));
  socket.serverSend(msg("c1", { event: "ev", payload: 2 }));
  const got = [];
  const off = ch.on("ev", (p) => got.push(["a", p]));
  assert.equal(typeof off, "function");
  ch.on("ev", (p) => got.push(["b", p])); // same tick: gets the backlog too
  socket.serverSend(msg("c1", { event: "ev", payload: 3 })); // stays behind 1 and 2
  assert.deepEqual(got, []);
  await tick();
  assert.deepEqual(got, [["a", 1], ["b", 1], ["a", 2], ["b", 2], ["a", 3], ["b", 3]]);
  socket.serverSend(msg("c1", { event: "ev", payload: 4 }));
  assert.deepEqual(got.slice(6), [["a", 4], ["b", 4]]);
  // "other" is still waiting for its own first listener.
  const others = [];
  ch.on("other", (p) => others.push(p));
  await tick();
  assert.deepEqual(others, ["x"]);
});

test("buffered events are delivered once, even if the first listener is removed and re-added at once", async () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  socket.serverSend(msg("c1", { event: "ev", payload: 1 }));
  const first = [];
  const second = [];
  const off = ch.on("ev", (p) => first.push(p)); // StrictMode: effect, cleanup, effect
  off();
  ch.on("ev", (p) => second.push(p));
  await tick();
  assert.deepEqual(first, []);
  assert.deepEqual(second, [1]);
});

test("a backlog stays buffered when its listener is removed before delivery", async () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  socket.serverSend(msg("c1", { event: "ev", payload: 1 }));
  ch.on("ev", () => assert.fail("removed listener called"))();
  await tick();
  const got = [];
  ch.on("ev", (p) => got.push(p));
  await tick();
  assert.deepEqual(got, [1]);
});

test("events buffer again after the last listener of an event is removed", async () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  const got = [];
  const off = ch.on("ev", (p) => got.push(["a", p]));
  socket.serverSend(msg("c1", { event: "ev", payload: 1 }));
  off();
  socket.serverSend(msg("c1", { event: "ev", payload: 2 }));
  ch.on("ev", (p) => got.push(["b", p]));
  await tick();
  assert.deepEqual(got, [["a", 1], ["b", 2]]);
});

test("requests before the first listener are answered when it registers", async () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  socket.serverSend(msg("c1", { event: "ask", payload: 5, requestId: "r1" }));
  await tick();
  assert.deepEqual(socket.take(), []); // no answer yet: nobody listens
  ch.on("ask", (p) => p * 3);
  await tick();
  assert.deepEqual(socket.take(), [msg("c1", { responseTo: "r1", payload: 15 })]);
});

test("messages for a channel nobody asked for yet wait in its bridge", async () => {
  const { socket, client } = setup();
  socket.serverSend(msg("fresh", { event: "hello", payload: "early" }));
  socket.serverSend(msg("fresh", { event: "ask", payload: null, requestId: "r1" }));
  const ch = client.channel("fresh");
  const got = [];
  ch.on("hello", (p) => got.push(p));
  ch.on("ask", () => "answer");
  await tick();
  assert.deepEqual(got, ["early"]);
  assert.deepEqual(socket.take(), [msg("fresh", { responseTo: "r1", payload: "answer" })]);
});

test("the backlog is bounded by maxBuffered; a dropped request gets an error answer", () => {
  const socket = new FakeSocket();
  const client = createClient({ socket, maxBuffered: 2 });
  const errors = collectErrors(client);
  client.channel("c1");
  socket.serverSend(msg("c1", { event: "ev", payload: 1, requestId: "r1" }));
  socket.serverSend(msg("c1", { event: "ev", payload: 2 }));
  socket.serverSend(msg("c1", { event: "ev", payload: 3 }));
  assert.equal(errors.length, 1);
  assert.deepEqual(socket.take(), [msg("c1", { responseTo: "r1", error: 'No listener for "ev"' })]);
});

test("close drops buffered messages and listeners", async () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  socket.serverSend(msg("c1", { event: "ev", payload: 1 }));
  const got = [];
  // Registering then closing in the same tick: the scheduled delivery finds the channel closed.
  ch.on("ev", (p) => got.push(p));
  ch.close();
  await tick();
  assert.deepEqual(got, []);
});

// ---- exactly once across a recovered reconnect ----------------------------------------------

test("a server request sent again is answered once, with the first answer", async () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  let calls = 0;
  let release;
  ch.on("incr", () => {
    calls += 1;
    return calls === 1 ? new Promise((r) => (release = r)) : calls;
  });
  const req = msg("c1", { event: "incr", payload: null, requestId: "r1" });
  socket.serverSend(req);
  await tick();
  socket.serverSend(req); // still running: no second run, no answer yet
  await tick();
  assert.equal(calls, 1);
  assert.deepEqual(socket.take(), []);
  release({ n: 1 });
  await tick();
  const answer = { type: "channel_message", channel: "c1", responseTo: "r1", payload: { n: 1 } };
  assert.deepEqual(socket.take(), [answer]);
  socket.serverSend(req); // answered: the same answer again, the handler not run
  await tick();
  assert.equal(calls, 1);
  assert.deepEqual(socket.take(), [answer]);
});

test("a repeated server request that failed gets the same error again", async () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  let calls = 0;
  ch.on("boom", () => {
    calls += 1;
    throw new Error("no");
  });
  const req = msg("c1", { event: "boom", payload: null, requestId: "r2" });
  socket.serverSend(req);
  await tick();
  socket.serverSend(req);
  await tick();
  assert.equal(calls, 1);
  const answer = { type: "channel_message", channel: "c1", responseTo: "r2", error: "no" };
  assert.deepEqual(socket.take(), [answer, answer]);
});

test("a repeat of a request still waiting for its listener is not delivered twice", async () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  const req = msg("c1", { event: "later", payload: 5, requestId: "r3" });
  socket.serverSend(req);
  socket.serverSend(req);
  const seen = [];
  ch.on("later", (p) => {
    seen.push(p);
    return p * 2;
  });
  await tick();
  assert.deepEqual(seen, [5]);
  assert.deepEqual(socket.take(), [{ type: "channel_message", channel: "c1", responseTo: "r3", payload: 10 }]);
});

// ---- AbortSignal -------------------------------------------------------------------------------

test("request with an aborted signal rejects with its reason and sends nothing", async () => {
  const { socket, client } = setup();
  const ch = client.channel("c1");
  const ac = new AbortController();
  ac.abort();
  const err = await ch.request("x", null, { signal: ac.signal }).catch((e) => e);
  assert.equal(err.name, "AbortError");
  assert.deepEqual(socket.take(), []);
  const custom = AbortSignal.abort(new Error("gone"));
  assert.equal((await ch.request("x", null, { signal: custom }).catch((e) => e)).message, "gone");
});

test("aborting a pending request rejects it; a late answer is ignored; the timer stops", async () => {
  const { socket, client, errors } = setup();
  const ch = client.channel("c1");
  const ac = new AbortController();
  const p = ch.request("slow", null, { signal: ac.signal, timeout: 30 });
  const [m] = socket.take();
  ac.abort(new Error("user left"));
  const err = await p.catch((e) => e);
  assert.equal(err.message, "user left");
  socket.serverSend(msg("c1", { responseTo: m.requestId, payload: "late" }));
  await tick(50); // no ChannelTimeout fires after the abort
  assert.deepEqual(errors, []);
  // An answered request no longer listens to its signal.
  const ac2 = new AbortController();
  const q = ch.request("fast", null, { signal: ac2.signal });
  socket.serverSend(msg("c1", { responseTo: socket.take()[0].requestId, payload: 1 }));
  assert.equal(await q, 1);
  ac2.abort();
  await tick();
});

test("request refuses a signal that is not an AbortSignal", () => {
  const { client } = setup();
  assert.throws(() => client.channel("c1").request("x", null, { signal: {} }), TypeError);
});

test("closing the channel rejects a request with a signal, with ChannelClosed", async () => {
  const { client } = setup();
  const ch = client.channel("c1");
  const ac = new AbortController();
  const p = ch.request("x", null, { signal: ac.signal });
  ch.close();
  assert.ok((await p.catch((e) => e)) instanceof ChannelClosed);
  ac.abort();
});
