// End to end in headless Chromium: a React page using pulsec-client/react, bundled with esbuild
// at test time and served by the C echo server itself (--static), so that the page and its
// socket are same-origin. The tests click the page and read what it shows, and check the
// server's side through the /echo view's "stats" request from a second (Node.js) client.
//
// The browser is Debian's chromium (/usr/bin/chromium, or $PULSEC_CHROMIUM), driven by
// playwright-core; no browser is ever downloaded. Set PULSEC_E2E_SCREENSHOT=/path/page.png to
// keep the screenshot the suite takes.

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
import { chromium } from "playwright-core";

import { createClient } from "../../src/index.js";
import { startEcho, stopClean, freePort, waitFor } from "../integration/echo-server.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PKG_ROOT = path.resolve(HERE, "../..");
const CHROMIUM = process.env.PULSEC_CHROMIUM || "/usr/bin/chromium";
const HEX32 = /^[0-9a-f]{32}$/;

/** Bundles the test page (development React, so StrictMode runs effects twice) into `dir`. */
async function buildPage(dir) {
  await esbuild.build({
    absWorkingDir: PKG_ROOT,
    entryPoints: [path.join(HERE, "app", "app.jsx")],
    outfile: path.join(dir, "app.js"),
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    jsx: "automatic",
    define: { "process.env.NODE_ENV": '"development"' },
    logLevel: "silent",
  });
  fs.copyFileSync(path.join(HERE, "app", "index.html"), path.join(dir, "index.html"));
}

describe("React page in headless Chromium, served by the echo server", { timeout: 60000 }, () => {
  let tmp;
  let port;
  let server;
  let context;
  let page;
  let observerClient;
  let observerView;
  const pageErrors = [];
  const consoleErrors = [];
  let restarting = false;

  /** The server's counters, asked over the observer's own /echo channel. */
  const stats = () =>
    observerClient.channel(observerView.props.channelId).request("stats", null, { timeout: 3000 });

  /** Waits until the server counts `views` views and `channels` channels; returns the stats. */
  async function counts(views, channels, what) {
    let last;
    try {
      return await waitFor(
        async () => {
          last = await stats();
          return last.views === views && last.channels === channels && last;
        },
        { what },
      );
    } catch (err) {
      err.message += `\nexpected views=${views} channels=${channels}; server says ${JSON.stringify(last)}`;
      throw err;
    }
  }

  const text = async (sel) => ((await page.textContent(sel, { timeout: 5000 })) ?? "").trim();

  /** Waits until the text of `sel` equals `expected` (string) or matches it (RegExp). */
  async function waitText(sel, expected) {
    let last;
    try {
      return await waitFor(
        async () => {
          last = (await page.locator(sel).count()) ? await text(sel) : "<absent>";
          return (expected instanceof RegExp ? expected.test(last) : last === expected) && last;
        },
        { what: `${sel} showing ${expected}` },
      );
    } catch (err) {
      err.message += `\n${sel} shows ${JSON.stringify(last)}`;
      throw err;
    }
  }

  const events = () => page.locator("#events li").allTextContents();

  before(async () => {
    assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} not found: apt-get install chromium (make test does)`);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "pulsec-e2e-"));
    const www = path.join(tmp, "www");
    fs.mkdirSync(www);
    await buildPage(www);
    port = await freePort();
    server = await startEcho({ port, args: ["--static", www] });

    observerClient = createClient({ url: server.url, reconnectionDelay: 100, reconnectionDelayMax: 300 });
    observerView = await observerClient.attach("/echo", { who: "observer" });

    context = await chromium.launchPersistentContext(path.join(tmp, "profile"), {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
      viewport: { width: 900, height: 700 },
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.on("pageerror", (err) => pageErrors.push(String(err?.stack ?? err)));
    page.on("console", (msg) => {
      if (msg.type() === "error" && !restarting) consoleErrors.push(msg.text());
    });
    // Only the echo server: anything else the page tried to load would fail the test.
    await context.route(/^(?!http:\/\/127\.0\.0\.1:\d+\/)/, (route) => {
      pageErrors.push(`request outside the test server: ${route.request().url()}`);
      return route.abort();
    });
  });

  after(async () => {
    await context?.close().catch(() => {});
    observerClient?.close();
    if (server) await server.stop("SIGKILL");
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  test("the page loads from the C server and attaches /echo once under StrictMode", async () => {
    const before = await counts(1, 1, "only the observer before the page");
    const res = await page.goto(`${server.url}/`);
    assert.equal(res.status(), 200);
    await waitText("#status", "connected");
    await waitText("#view-status", "ready");
    await waitText("#channel-state", "open");
    assert.match(await text("#channel-id"), HEX32);
    assert.equal(await text("#widget-channel"), await text("#channel-id"));
    await waitText("#missing", "/missing: error (Unknown path: /missing)");

    // StrictMode did run the widget's effects twice (mount, unmount, mount)...
    const effects = await page.evaluate(() => window.__pulsec.widgetEffects);
    assert.ok(effects >= 2, `widget effects ran ${effects} times: StrictMode is not in effect`);
    // ...yet the server sees one session, one view and one channel for the page, and no view
    // was attached and disposed on the way.
    const st = await counts(2, 2, "observer + the page's view");
    assert.equal(st.sessions, 2);
    assert.equal(st.views_disposed - before.views_disposed, 0, "no extra attach/detach");
    assert.deepEqual(await events(), []);
  });

  test("request buttons show the reply, the server's error text, and a client timeout", async () => {
    await page.fill("#draft", "hi there");
    await page.click("#request");
    await waitText("#reply", 'request: {"text":"hi there"}');
    await page.click("#fail");
    await waitText("#reply", "fail: ChannelError: failed: hi there");
    await page.click("#slow");
    await waitText("#reply", 'slow: ChannelTimeout: Request "defer" timed out after 150 ms');
    await page.fill("#draft", "after the timeout");
    await page.click("#request");
    await waitText("#reply", 'request: {"text":"after the timeout"}');
    await waitText("#channel-state", "open");
  });

  test("emit: the server's echo events appear in the list, in order", async () => {
    await page.fill("#draft", "one");
    await page.click("#send");
    await waitText("#reply", "send: sent");
    await page.fill("#draft", "two ✓");
    await page.click("#send");
    await waitFor(async () => (await events()).length === 2, { what: "two events" });
    assert.deepEqual(await events(), ["echo: one", "echo: two ✓"]);
  });

  test("the server's request is answered by the page's listener", async () => {
    await page.fill("#draft", "yes");
    await page.click("#ask");
    await waitText("#reply", "ask: sent");
    await waitFor(async () => (await events()).length === 3, { what: "ask:result in the list" });
    assert.deepEqual((await events()).slice(-1), ['ask:result: ok "confirmed yes"']);
    const st = await stats();
    assert.equal(st.asks.ok >= 1, true);
    assert.equal(st.asks.twice, 0);

    const shot = process.env.PULSEC_E2E_SCREENSHOT || path.join(tmp, "page.png");
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(fs.statSync(shot).size > 1000, "screenshot written");
  });

  test("unmounting the widget releases its channel: the server closes it, the view stays", async () => {
    const channelId = await text("#channel-id");
    await page.click("#toggle-widget");
    await waitFor(async () => (await page.locator("#widget").count()) === 0, { what: "widget unmounted" });
    const st = await counts(2, 1, "the page's channel closed, its view still attached");
    assert.equal(st.sessions, 2);
    // Mounted again, the widget finds the channel closed for good (server ids are never reused).
    await page.click("#toggle-widget");
    await waitText("#channel-state", "closed");
    assert.equal(await text("#widget-channel"), channelId);
    await page.click("#request");
    await waitText("#reply", "request: ChannelClosed: Channel closed");
  });

  test("unmounting the panel detaches the view; mounting it again attaches a new one", async () => {
    const oldId = await text("#channel-id");
    const before = await stats();
    await page.click("#toggle-panel");
    await waitFor(async () => (await page.locator("#panel").count()) === 0, { what: "panel unmounted" });
    const st = await counts(1, 1, "the page's view disposed");
    assert.equal(st.views_disposed - before.views_disposed, 1);

    await page.click("#toggle-panel");
    await waitText("#view-status", "ready");
    await waitText("#channel-state", "open");
    const newId = await text("#channel-id");
    assert.match(newId, HEX32);
    assert.notEqual(newId, oldId);
    await counts(2, 2, "a new view and channel for the page");
    await page.fill("#draft", "again");
    await page.click("#request");
    await waitText("#reply", 'request: {"text":"again"}');
    assert.deepEqual(await events(), [], "a fresh widget has an empty list");
  });

  test("the server closing the channel shows in the page, and requests then fail", async () => {
    await page.click("#server-close");
    await waitText("#reply", "server-close: sent");
    await waitText("#channel-state", "closed");
    await counts(2, 1, "channel closed by the server");
    await page.click("#request");
    await waitText("#reply", "request: ChannelClosed: Channel closed");
    await page.click("#send");
    await waitText("#reply", "send: ChannelClosed: Channel closed");
    // A new panel brings a new view with an open channel.
    await page.click("#toggle-panel");
    await counts(1, 1, "view detached");
    await page.click("#toggle-panel");
    await waitText("#channel-state", "open");
    await counts(2, 2, "view attached again");
  });

  test("after the server restarts on the same port, the page re-attaches and works", async () => {
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(consoleErrors, []);
    assert.deepEqual(await page.evaluate(() => window.__pulsec.clientErrors), []);
    const oldId = await text("#channel-id");

    restarting = true; // Chromium logs failed WebSocket attempts while the server is away
    await stopClean(server, "echo server serving the page");
    await waitText("#status", "reconnecting");
    // The page keeps its channel while the session might still be recovered.
    assert.equal(await text("#channel-state"), "open");
    const www = path.join(tmp, "www");
    server = await startEcho({ port, args: ["--static", www] });

    await waitText("#status", "connected");
    await waitText("#channel-state", "open");
    const newId = await text("#channel-id");
    assert.match(newId, HEX32);
    assert.notEqual(newId, oldId);
    await page.fill("#draft", "after restart");
    await page.click("#request");
    await waitText("#reply", 'request: {"text":"after restart"}');
    await page.click("#send");
    await waitFor(async () => (await events()).includes("echo: after restart"), { what: "echo after restart" });

    // The observer reconnected too; the new server sees both sessions and a view each.
    await waitFor(() => observerView.state === "attached" && !observerClient.channel(observerView.props.channelId).closed, {
      timeout: 10000,
      what: "observer re-attached",
    });
    const st = await counts(2, 2, "page and observer on the new server");
    assert.equal(st.sessions, 2);
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(await page.evaluate(() => window.__pulsec.clientErrors), []);
  });

  test("the echo server exits 0 on SIGTERM with the page still connected", async () => {
    await stopClean(server, "echo server after the browser tests");
  });
});
