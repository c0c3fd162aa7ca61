// HTTPS/WSS and origins in a real browser (issue 14): Debian's headless Chromium trusts a
// throw-away CA minted by openssl for this test, through an NSS database (certutil, from
// libnss3-tools) in a temporary HOME, so nothing is ignored: the page is served over HTTPS by
// the echo fixture and connects with the official socket.io-client bundle over WSS and over HTTPS
// long-polling. Then the Cross-Site WebSocket Hijacking check as a browser does it: the page's
// cookie for 127.0.0.1 travels to every port of that host, and a second pulsec server (another
// port, so another origin) refuses the page by default, admits it with its cookie when it lists
// the page's origin, and admits it without the cookie with "*".

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { chromium } from "playwright-core";
import { CHROMIUM_ARGS, ROOT, newPage } from "./support.mjs";
import { startServer, stopClean, killAll } from "../integration/lib/server.mjs";
import { makeCa } from "../integration/lib/tls.mjs";

const CHROMIUM = process.env.PULSEC_CHROMIUM ?? "/usr/bin/chromium";
const ca = makeCa("pulsec-e2e-tls-");
const leaf = ca.issue("server");
const tlsArgs = ["--tls-cert", leaf.certFile, "--tls-key", leaf.keyFile];
const home = fs.mkdtempSync(path.join(os.tmpdir(), "pulsec-e2e-home-"));
const site = fs.mkdtempSync(path.join(os.tmpdir(), "pulsec-e2e-site-"));

let page;
let pageServer;
let browser;
const errors = [];
const servers = [];

before(async () => {
  // Chromium on Linux reads trust from $HOME/.pki/nssdb.
  const db = path.join(home, ".pki", "nssdb");
  fs.mkdirSync(db, { recursive: true });
  execFileSync("certutil", ["-N", "-d", `sql:${db}`, "--empty-password"]);
  execFileSync("certutil", ["-A", "-d", `sql:${db}`, "-n", "pulsec throw-away test CA", "-t", "C,,", "-i", ca.caFile]);
  fs.copyFileSync(path.join(ROOT, "node_modules/socket.io-client/dist/socket.io.min.js"), path.join(site, "socket.io.min.js"));
  fs.writeFileSync(
    path.join(site, "index.html"),
    `<!doctype html><meta charset="utf-8"><title>pulsec tls</title><script src="/socket.io.min.js"></script>
<script>
window.tryConnect = (url, transports, withCredentials = false) => new Promise((resolve) => {
  const s = io(url, { transports, withCredentials, reconnection: false, forceNew: true, timeout: 5000 });
  s.on("connect", async () => {
    try {
      const seen = await s.timeout(3000).emitWithAck("handshake", "session");
      const echo = await s.timeout(3000).emitWithAck("tls", "from the browser");
      resolve({ ok: true, transport: s.io.engine.transport.name, cookie: seen.cookies.session, echo });
    } catch (e) {
      resolve({ ok: false, error: String(e) });
    }
    s.close();
  });
  s.on("connect_error", (e) => { resolve({ ok: false, error: String(e && e.message) }); s.close(); });
});
</script><p>ready</p>`,
  );
  pageServer = await startServer([...tlsArgs, "--static", site]);
  servers.push(pageServer);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: CHROMIUM_ARGS,
    headless: true,
    env: { ...process.env, HOME: home },
  });
  page = await newPage(browser, errors);
  await page.goto(`${pageServer.url}/`);
  await page.getByText("ready").waitFor();
  await page.evaluate(() => {
    document.cookie = "session=s3cret; Secure; SameSite=None; path=/";
  });
});

after(async () => {
  await browser?.close();
  assert.deepEqual(errors, [], "no page errors");
  for (const s of servers) await stopClean(s);
  await killAll();
  ca.cleanup();
  fs.rmSync(home, { recursive: true, force: true });
  fs.rmSync(site, { recursive: true, force: true });
});

test("the page loads over HTTPS with the certificate trusted (no interstitial, no override)", async () => {
  assert.equal(new URL(page.url()).protocol, "https:");
  const secure = await page.evaluate(() => window.isSecureContext);
  assert.equal(secure, true);
  // The trust is the NSS database's: the same browser with an empty HOME refuses the certificate.
  const bare = fs.mkdtempSync(path.join(os.tmpdir(), "pulsec-e2e-bare-"));
  const untrusting = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true, env: { ...process.env, HOME: bare } });
  try {
    const p = await untrusting.newPage();
    await assert.rejects(p.goto(`${pageServer.url}/`), /ERR_CERT_AUTHORITY_INVALID/);
  } finally {
    await untrusting.close();
    fs.rmSync(bare, { recursive: true, force: true });
  }
});

for (const transports of [["websocket"], ["polling"], ["polling", "websocket"]]) {
  test(`socket.io-client in Chromium over ${transports.join(" then ")} on the page's own server (WSS / HTTPS polling)`, async () => {
    const r = await page.evaluate(([u, t]) => window.tryConnect(u, t), [pageServer.url, transports]);
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.deepEqual(r.echo, "from the browser");
    assert.equal(r.cookie, "s3cret", "same origin: the page's cookie reaches the handshake");
    if (transports.length === 1) assert.equal(r.transport, transports[0]);
    assert.deepEqual(errors, []);
  });
}

test("another pulsec server (another port: another origin) refuses the page by default, over WSS and polling", async () => {
  const other = await startServer(tlsArgs);
  servers.push(other);
  for (const transports of [["websocket"], ["polling"]]) {
    const r = await page.evaluate(([u, t]) => window.tryConnect(u, t), [other.url, transports]);
    assert.equal(r.ok, false, `cross-origin ${transports}: ${JSON.stringify(r)}`);
  }
  errors.length = 0; // the refused requests log console errors by design
});

test("listing the page's origin admits it with its cookie; \"*\" admits it, never with credentials", async () => {
  const listed = await startServer([...tlsArgs, "--origin", pageServer.url]);
  const star = await startServer([...tlsArgs, "--origin", "*"]);
  servers.push(listed, star);
  const run = (u, t, cred) => page.evaluate(([a, b, c]) => window.tryConnect(a, b, c), [u, t, cred]);
  // A WebSocket always carries the cookie; a cross-origin poll only with withCredentials.
  const a = await run(listed.url, ["websocket"]);
  assert.equal(a.ok, true, `listed websocket: ${JSON.stringify(a)}`);
  assert.equal(a.cookie, "s3cret");
  const b = await run(listed.url, ["polling"], true);
  assert.equal(b.ok, true, `listed polling with credentials: ${JSON.stringify(b)}`);
  assert.equal(b.cookie, "s3cret");
  // "*": the WebSocket's cookie is hidden from the app; polling works without credentials and
  // the browser itself refuses it with credentials (Allow-Origin "*" without Allow-Credentials).
  const c = await run(star.url, ["websocket"]);
  assert.equal(c.ok, true, `"*" websocket: ${JSON.stringify(c)}`);
  assert.equal(c.cookie, null, 'with "*" the cookie the browser attached is hidden');
  const d = await run(star.url, ["polling"]);
  assert.equal(d.ok, true, `"*" polling: ${JSON.stringify(d)}`);
  assert.equal(d.cookie, null);
  const e = await run(star.url, ["polling"], true);
  assert.equal(e.ok, false, `"*" polling with credentials must fail in the browser: ${JSON.stringify(e)}`);
  errors.length = 0; // the refused cross-origin requests above log console errors by design
});
