// Shared by the browser tests and the screenshot script: starts an example server on
// 127.0.0.1 with an ephemeral port, and launches Debian's Chromium through playwright-core
// (never a downloaded browser).
//
// PULSEC_BUILD_DIR   the CMake build holding examples/<app> (default: build)
// PULSEC_CHROMIUM    the browser binary (default: /usr/bin/chromium)

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BUILD = resolve(ROOT, process.env.PULSEC_BUILD_DIR ?? "build");
const CHROMIUM = process.env.PULSEC_CHROMIUM ?? "/usr/bin/chromium";

export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/**
 * Starts build/examples/<app> with --static build/web/<app> (and `args`). Resolves once it prints its
 * "listening on" line.
 * @param {"chat" | "playground"} app
 * @returns {Promise<{url: string, proc: import("node:child_process").ChildProcess,
 *   output: () => string, stop: () => Promise<{code: number | null, signal: string | null}>}>}
 */
export async function startServer(app, args = []) {
  const bin = join(BUILD, "examples", app);
  const web = join(ROOT, "build/web", app);
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run \`make build\``);
  if (!existsSync(join(web, "app.js"))) throw new Error(`${web}/app.js is missing: run \`make web\``);
  const proc = spawn(bin, ["--host", "127.0.0.1", "--port", "0", "--static", web, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const exited = new Promise((res) => proc.once("exit", (code, signal) => res({ code, signal })));
  proc.stderr.on("data", (d) => (out += d));
  const url = await new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`${app} did not start:\n${out}`)), 10_000);
    proc.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/127\.0\.0\.1:\d+)/);
      if (m) {
        clearTimeout(timer);
        res(m[1]);
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      rej(new Error(`${app} exited (${code ?? signal}) before listening:\n${out}`));
    });
  });
  return {
    url,
    proc,
    output: () => out,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGTERM");
      const killer = setTimeout(() => proc.kill("SIGKILL"), 5_000);
      const result = await exited;
      clearTimeout(killer);
      return result;
    },
  };
}

/** Debian's Chromium, headless. */
export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: \`make deps-apt\` installs Debian's chromium`);
  }
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
}

/** A page that records uncaught page errors, console errors and any request that would leave
 * the loopback interface (refused) into `errors`. */
export async function newPage(browser, errors, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, ...options });
  await context.route(
    (url) => url.hostname !== "127.0.0.1",
    (route) => {
      errors.push(`request off loopback refused: ${route.request().url()}`);
      return route.abort();
    },
  );
  const page = await context.newPage();
  page.on("pageerror", (err) => errors.push(`pageerror: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") errors.push(`console: ${msg.text()}`);
  });
  return page;
}

/** Opens the chat page (examples/chat/web, served by the C and the Python chat servers) at `url`
 * in a new browser context (a separate session), joins as `name`, and returns a driver. */
export async function joinChat(browser, errors, url, name) {
  const page = await newPage(browser, errors);
  await page.goto(url);
  await page.getByLabel("Your name").fill(name);
  await page.getByRole("button", { name: "Join the room" }).click();
  await waitForText(page.getByTestId("members"), name);
  return {
    page,
    name,
    members: page.getByTestId("members"),
    messages: page.getByTestId("messages"),
    activity: page.getByTestId("activity"),
    async say(text) {
      await page.getByLabel("Message").fill(text);
      await page.getByLabel("Message").press("Enter");
    },
    messageTexts: () => page.locator("[data-testid=messages] li .text").allTextContents(),
    close: () => page.context().close(),
  };
}

/** Polls `fn` until it returns a truthy value; fails with `message` after `timeout` ms. */
export async function until(fn, message, timeout = 5_000) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms: ${message}${last instanceof Error ? ` (${last.message})` : ""}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until `locator` (the first match) contains `text`. */
export async function waitForText(locator, text, timeout = 5_000) {
  await until(async () => (await locator.first().textContent()).includes(text), `"${text}" in ${locator}`, timeout);
}
