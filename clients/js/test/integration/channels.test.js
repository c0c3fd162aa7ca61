// pulsec-client (createClient over the real socket.io-client) against the real C echo server:
// views, both directions of request/response, timeouts, buffering, and closing from either side.
// The /echo view's behaviours are listed in docs/API.md ("The conformance fixture").

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";

import { AttachError, ChannelClosed, ChannelError, ChannelTimeout, createClient } from "../../src/index.js";
import { startEcho, stopClean, sleep, waitFor, withTimeout } from "./echo-server.js";
import { HEX32, newClient, closeClients, openEcho, stats, askResults, ask } from "./helpers.js";

describe("pulsec-client against the echo server", { timeout: 60000 }, () => {
  let server;
  /** A second connection whose own /echo channel reads the server's counters. */
  let observer;
  let observerClient;

  before(async () => {
    server = await startEcho();
    observerClient = createClient({ url: server.url });
    observer = (await openEcho(observerClient, { who: "observer" })).bridge;
  });

  // Each test makes its own clients.
  afterEach(() => closeClients());

  after(async () => {
    closeClients();
    observerClient?.close();
    if (server) await server.stop("SIGKILL"); // no-op when the last test stopped it cleanly
  });

  /** Waits until the server counts `views` views and `channels` channels. */
  async function counts(views, channels, what) {
    let last;
    try {
      return await waitFor(
        async () => {
          last = await stats(observer);
          return last.views === views && last.channels === channels && last;
        },
        { what },
      );
    } catch (err) {
      err.message += `\nexpected views=${views} channels=${channels}, server says ${JSON.stringify(last)}`;
      throw err;
    }
  }

  test("the observer is the only view at first", async () => {
    await counts(1, 1, "one view (the observer)");
  });

  test("attach resolves with props carrying a server-made channel id", async () => {
    const client = newClient(server.url);
    const statuses = [];
    client.on("status", (s) => statuses.push(s));
    const view = await client.attach("/echo", { hello: "world" });
    assert.equal(client.status, "connected");
    assert.deepEqual(statuses, ["connected"]);
    assert.equal(view.state, "attached");
    assert.equal(view.path, "/echo");
    assert.match(view.attachId, HEX32);
    assert.deepEqual(Object.keys(view.props), ["channelId"]);
    assert.match(view.props.channelId, HEX32);
    const bridge = client.channel(view.props.channelId);
    assert.equal(bridge.id, view.props.channelId);
    assert.equal(bridge.closed, false);
    assert.equal(client.channel(view.props.channelId), bridge, "same bridge for the same id");

    // Two attaches of the same path are two views with two channels.
    const other = await client.attach("/echo");
    assert.notEqual(other.props.channelId, view.props.channelId);
    assert.notEqual(other.attachId, view.attachId);
    await counts(3, 3, "observer + two views");
  });

  test("attach of an unknown path rejects with the server's AttachError", async () => {
    const client = newClient(server.url);
    await assert.rejects(client.attach("/nope", { x: 1 }), (err) => {
      assert.ok(err instanceof AttachError, `not an AttachError: ${err}`);
      assert.equal(err.code, "EREMOTE");
      assert.equal(err.message, "Unknown path: /nope");
      assert.equal(err.path, "/nope");
      assert.match(err.attachId, HEX32);
      return true;
    });
    // The connection is fine afterwards.
    const { bridge } = await openEcho(client);
    assert.equal(await bridge.request("echo", 1, { timeout: 2000 }), 1);
  });

  test("emit reaches the server and on() receives the echo, in order", async () => {
    const client = newClient(server.url);
    const { bridge } = await openEcho(client);
    const got = [];
    const off = bridge.on("echo", (p) => got.push(p));
    const payloads = [{ text: "héllo ✓ 🎉", nested: { list: [1, 2.5, true, null] } }, [1, 2, 3], "s", 0, false, null];
    for (const p of payloads) bridge.emit("echo", p);
    bridge.emit("echo"); // undefined travels as null
    await waitFor(() => got.length === payloads.length + 1, { what: "echo events" });
    assert.deepEqual(got, [...payloads, null]);

    // Two listeners both get each event; an unsubscribed one no longer does.
    const second = [];
    const offSecond = bridge.on("echo", (p) => second.push(p));
    bridge.emit("echo", "both");
    await waitFor(() => second.length === 1, { what: "echo to the second listener" });
    off();
    off(); // idempotent
    bridge.emit("echo", "second only");
    await waitFor(() => second.length === 2, { what: "echo after off()" });
    assert.deepEqual(got.slice(-1), ["both"]);
    assert.deepEqual(second, ["both", "second only"]);
    offSecond();
  });

  test("request echo resolves with the payload; unknown requests resolve null", async () => {
    const client = newClient(server.url);
    const { bridge } = await openEcho(client);
    const payload = { a: [1, { b: "ü" }], big: "x".repeat(10000) };
    assert.deepEqual(await bridge.request("echo", payload, { timeout: 2000 }), payload);
    assert.equal(await bridge.request("echo", undefined, { timeout: 2000 }), null);
    assert.equal(await bridge.request("no-such-event", { q: 1 }, { timeout: 2000 }), null);
    // Many requests in flight at once are matched to their own answers.
    const n = 50;
    const answers = await Promise.all(Array.from({ length: n }, (_, i) => bridge.request("echo", { i })));
    assert.deepEqual(answers, Array.from({ length: n }, (_, i) => ({ i })));
  });

  test("request fail rejects with ChannelError carrying the server's text", async () => {
    const client = newClient(server.url);
    const { bridge } = await openEcho(client);
    await assert.rejects(bridge.request("fail", { text: "x" }, { timeout: 2000 }), (err) => {
      assert.ok(err instanceof ChannelError, `not a ChannelError: ${err}`);
      assert.equal(err.message, "failed: x");
      assert.equal(err.code, "EREMOTE");
      assert.equal(err.event, "fail");
      assert.equal(err.channel, bridge.id);
      return true;
    });
    // The channel stays open after an error answer.
    assert.equal(bridge.closed, false);
    assert.equal(await bridge.request("echo", "still open"), "still open");
  });

  test("deferred replies resolve after their delay, each to its own request", async () => {
    const client = newClient(server.url);
    const { bridge } = await openEcho(client);
    const t0 = performance.now();
    const done = [];
    const track = (ms) =>
      bridge.request("defer", { ms, tag: `t${ms}` }, { timeout: 3000 }).then((r) => {
        done.push(r.tag);
        return { r, at: performance.now() - t0 };
      });
    const [a, b, c] = await Promise.all([track(300), track(100), track(200)]);
    assert.deepEqual(a.r, { ms: 300, tag: "t300" });
    assert.deepEqual(b.r, { ms: 100, tag: "t100" });
    assert.deepEqual(c.r, { ms: 200, tag: "t200" });
    assert.deepEqual(done, ["t100", "t200", "t300"]);
    assert.ok(b.at >= 90, `defer 100 answered after ${b.at} ms`);
    assert.ok(a.at >= 290, `defer 300 answered after ${a.at} ms`);
  });

  test("a request times out on the client side with ChannelTimeout", async () => {
    const client = newClient(server.url);
    const { bridge } = await openEcho(client);
    const t0 = performance.now();
    await assert.rejects(bridge.request("defer", { ms: 2000 }, { timeout: 200 }), (err) => {
      assert.ok(err instanceof ChannelTimeout, `not a ChannelTimeout: ${err}`);
      assert.equal(err.code, "ETIMEDOUT");
      assert.equal(err.event, "defer");
      assert.equal(err.timeout, 200);
      assert.equal(err.channel, bridge.id);
      return true;
    });
    const elapsed = performance.now() - t0;
    assert.ok(elapsed >= 190 && elapsed < 1500, `timed out after ${elapsed} ms`);
    // The bridge is still usable, and the late answer (when it comes) is ignored.
    assert.equal(bridge.closed, false);
    assert.equal(await bridge.request("echo", "after timeout", { timeout: 2000 }), "after timeout");
  });

  test("server requests are answered by a return value, a resolved Promise, or a thrown error", async () => {
    const client = newClient(server.url);
    const { bridge } = await openEcho(client);
    const results = askResults(bridge);
    const seen = [];
    bridge.on("q", (p) => {
      seen.push(p);
      return { doubled: p.n * 2 };
    });
    bridge.on("q-async", async (p) => {
      await sleep(50);
      return `later: ${p.text}`;
    });
    bridge.on("q-throw", () => {
      throw new Error("nope: bad input");
    });
    bridge.on("q-reject", () => Promise.reject(new Error("rejected later")));
    bridge.on("q-undefined", () => undefined);
    bridge.on("q-falsy", () => 0);

    ask(bridge, "q", { n: 21 }, 1000);
    assert.deepEqual(await results.next(), { status: "ok", payload: { doubled: 42 } });
    assert.deepEqual(seen, [{ n: 21 }]);

    ask(bridge, "q-async", { text: "hi" }, 1000);
    assert.deepEqual(await results.next(), { status: "ok", payload: "later: hi" });

    ask(bridge, "q-throw", null, 1000);
    assert.deepEqual(await results.next(), { status: "error", error: "nope: bad input" });

    ask(bridge, "q-reject", null, 1000);
    assert.deepEqual(await results.next(), { status: "error", error: "rejected later" });

    ask(bridge, "q-undefined", null, 1000);
    assert.deepEqual(await results.next(), { status: "ok", payload: null });

    ask(bridge, "q-falsy", null, 0); // timeout 0: none
    assert.deepEqual(await results.next(), { status: "ok", payload: 0 });

    const st = await stats(bridge);
    assert.equal(st.asks.twice, 0, "no request completed twice");
  });

  test("a server request whose handler never answers times out on the server", async () => {
    const client = newClient(server.url);
    const { bridge } = await openEcho(client);
    const results = askResults(bridge);
    const before = (await stats(bridge)).asks;
    bridge.on("never", () => new Promise(() => {}));
    let lateSent = false;
    bridge.on("slow", async () => {
      await sleep(400);
      lateSent = true;
      return "too late";
    });

    const t0 = performance.now();
    ask(bridge, "never", { x: 1 }, 300);
    assert.deepEqual(await results.next(), { status: "timeout", payload: null });
    const elapsed = performance.now() - t0;
    assert.ok(elapsed >= 280, `ask:result timeout after ${elapsed} ms`);

    // An answer after the server's deadline is dropped: the request completes exactly once.
    ask(bridge, "slow", null, 150);
    assert.deepEqual(await results.next(), { status: "timeout", payload: null });
    await waitFor(() => lateSent, { what: "the late answer" });
    await sleep(100);
    assert.equal(results.queue.length, 0, `unexpected ask:result ${JSON.stringify(results.queue)}`);
    const after = (await stats(bridge)).asks;
    assert.equal(after.timeout - before.timeout, 2);
    assert.equal(after.twice, 0);
    assert.equal(bridge.closed, false);
  });

  test("events and requests arriving before the first listener are delivered when it registers", async () => {
    const client = newClient(server.url);
    const { bridge } = await openEcho(client);
    const results = askResults(bridge);

    bridge.emit("echo", 1);
    bridge.emit("echo", { two: 2 });
    ask(bridge, "early", { n: 7 }, 3000);
    // The server handles one connection's messages in order: once this answer is here, both
    // echo events and the "early" request have arrived and wait for listeners.
    assert.equal(await bridge.request("echo", "sync", { timeout: 2000 }), "sync");
    await sleep(50);
    assert.equal(results.queue.length, 0, "the server still waits for the early request's answer");

    const got = [];
    const gotToo = [];
    bridge.on("echo", (p) => got.push(p));
    bridge.on("echo", (p) => gotToo.push(p)); // registered in the same tick: gets them too
    assert.deepEqual(got, [], "delivered on a microtask, not inside on()");
    await sleep(0);
    assert.deepEqual(got, [1, { two: 2 }]);
    assert.deepEqual(gotToo, [1, { two: 2 }]);

    bridge.on("early", (p) => ({ answered: p.n }));
    assert.deepEqual(await results.next(), { status: "ok", payload: { answered: 7 } });

    // After the backlog, delivery is live again.
    bridge.emit("echo", 3);
    await waitFor(() => got.length === 3, { what: "live echo" });
    assert.deepEqual(got, [1, { two: 2 }, 3]);
  });

  test("bridge.close() sends __close__: the server closes the channel and answers 'Channel closed' for it", async () => {
    const client = newClient(server.url);
    const { view, bridge } = await openEcho(client);
    await counts(2, 2, "observer + one view");
    const closes = [];
    bridge.onClose((e) => closes.push(e));
    const pending = bridge.request("defer", { ms: 5000 });

    bridge.close();
    assert.equal(bridge.closed, true);
    await assert.rejects(pending, (err) => err instanceof ChannelClosed && err.reason === "local");
    assert.equal(closes.length, 1);
    assert.equal(closes[0].reason, "local");
    assert.throws(() => bridge.emit("echo", 1), ChannelClosed);
    assert.throws(() => bridge.request("echo", 1), ChannelClosed);
    assert.throws(() => bridge.on("echo", () => {}), ChannelClosed);
    bridge.close(); // idempotent
    assert.equal(client.channel(bridge.id), bridge, "a closed id keeps its closed bridge");

    // Server side: the channel is gone, the view stays attached.
    await counts(2, 1, "channel closed by the client");
    assert.equal(view.state, "attached");

    // A request for the closed id (sent past the client, which would refuse) gets the error.
    const requestId = randomUUID();
    const answer = new Promise((resolve) => {
      const onMsg = (m) => {
        if (m && m.responseTo === requestId) {
          client.socket.off("message", onMsg);
          resolve(m);
        }
      };
      client.socket.on("message", onMsg);
    });
    client.socket.emit("message", { type: "channel_message", channel: bridge.id, event: "echo", payload: 1, requestId });
    const m = await withTimeout(answer, 3000, "answer for a closed channel");
    assert.equal(m.channel, bridge.id);
    assert.equal(m.error, "Channel closed");
    assert.equal(m.payload, undefined);

    view.detach();
    await counts(1, 1, "view detached");
  });

  test("the server's close event closes the bridge: pending requests reject, emit throws", async () => {
    const client = newClient(server.url);
    const { view, bridge } = await openEcho(client);
    const closes = [];
    bridge.onClose((e) => closes.push(e));
    const results = askResults(bridge);
    bridge.on("never", () => new Promise(() => {}));
    ask(bridge, "never", null, 0); // a server request pending on the client, no timeout
    const pending = bridge.request("defer", { ms: 5000 });
    await counts(2, 2, "observer + one view");
    const asksBefore = (await stats(observer)).asks;

    bridge.emit("close");
    await assert.rejects(pending, (err) => {
      assert.ok(err instanceof ChannelClosed, `not a ChannelClosed: ${err}`);
      assert.equal(err.code, "ECLOSED");
      assert.equal(err.reason, "remote");
      assert.equal(err.channel, bridge.id);
      return true;
    });
    assert.equal(bridge.closed, true);
    assert.equal(closes.length, 1);
    assert.equal(closes[0].reason, "remote");
    assert.throws(() => bridge.emit("echo", 1), ChannelClosed);
    assert.throws(() => bridge.request("echo", 1), ChannelClosed);
    assert.throws(() => bridge.on("x", () => {}), ChannelClosed);
    assert.equal(results.queue.length, 0, "no event is delivered after the close");

    // The server completed its own pending request as closed, and the view lives on.
    await counts(2, 1, "channel closed by the server");
    const asksAfter = (await stats(observer)).asks;
    assert.equal(asksAfter.closed - asksBefore.closed, 1);
    assert.equal(asksAfter.twice, 0);
    assert.equal(view.state, "attached");
  });

  test("detach disposes the view: the server sends __close__ and the bridge closes", async () => {
    const client = newClient(server.url);
    const { view, bridge } = await openEcho(client);
    await counts(2, 2, "observer + one view");
    const disposedBefore = (await stats(observer)).views_disposed;
    const closed = new Promise((resolve) => bridge.onClose(resolve));
    const pending = bridge.request("defer", { ms: 5000 });
    pending.catch(() => {});

    view.detach();
    assert.equal(view.state, "detached");
    const err = await withTimeout(closed, 3000, "__close__ from the server after detach");
    assert.ok(err instanceof ChannelClosed);
    assert.equal(err.reason, "remote");
    await assert.rejects(pending, ChannelClosed);
    assert.equal(bridge.closed, true);
    assert.throws(() => bridge.emit("echo", 1), ChannelClosed);
    view.detach(); // idempotent

    const st = await counts(1, 1, "view disposed");
    assert.equal(st.views_disposed - disposedBefore, 1);
  });

  test("client.close() closes bridges and ends views; the server disposes them", async () => {
    const client = newClient(server.url);
    const { view, bridge } = await openEcho(client);
    const pending = bridge.request("defer", { ms: 5000 });
    await counts(2, 2, "observer + one view");
    const pendingAttach = client.attach("/echo"); // sent, not yet answered when close() runs
    client.close();
    assert.equal(client.closed, true);
    assert.equal(client.status, "disconnected");
    await assert.rejects(pending, (err) => err instanceof ChannelClosed && err.reason === "client");
    assert.equal(bridge.closed, true);
    assert.equal(view.state, "detached");
    await assert.rejects(pendingAttach, (err) => err instanceof AttachError && err.code === "ECLOSED");
    await assert.rejects(client.attach("/echo"), (err) => err instanceof AttachError && err.code === "ECLOSED");
    await counts(1, 1, "only the observer after client.close()");
  });

  test("a connection refused by the server's middleware reports connect_error with its reason", async () => {
    const client = newClient(server.url, { auth: { deny: "go away" } });
    const statuses = [];
    client.on("status", (s) => statuses.push(s));
    const err = await withTimeout(
      new Promise((resolve) => client.on("connect_error", resolve)),
      5000,
      "connect_error",
    );
    assert.equal(err.message, "go away");
    assert.deepEqual(err.data, { code: "denied" });
    assert.equal(client.status, "disconnected");
    const attach = client.attach("/echo");
    client.close();
    await assert.rejects(attach, (e) => e instanceof AttachError && e.code === "ECLOSED");
  });

  test("the echo server exits 0 on SIGTERM (sanitizers clean)", async () => {
    // Leave live sessions, views, channels and pending deferred replies behind on purpose.
    const client = newClient(server.url);
    const { bridge } = await openEcho(client);
    bridge.request("defer", { ms: 10000 }).catch(() => {});
    bridge.on("never", () => new Promise(() => {}));
    ask(bridge, "never", null, 0);
    await bridge.request("echo", "sync");
    await stopClean(server);
  });
});
