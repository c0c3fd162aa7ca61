// Starts and stops the C conformance server (examples/echo) for the integration and end-to-end
// suites of pulsec-client. Only Node.js built-ins: these suites run after `npm ci` in
// clients/js alone, without the repository's root node_modules.
//
// The binary is $PULSEC_BUILD_DIR/examples/echo (default: <repo>/build). `make test` points
// PULSEC_BUILD_DIR at the AddressSanitizer build, where LeakSanitizer turns a leak into a
// non-zero exit code, so every suite stops its servers with SIGTERM and asserts exit 0.
//
// Nothing here contacts anything but 127.0.0.1.

import { spawn } from "node:child_process";
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../..");
export const BUILD_DIR = process.env.PULSEC_BUILD_DIR || path.join(REPO_ROOT, "build");
export const ECHO_BIN = path.join(BUILD_DIR, "examples", "echo");
export const HOST = "127.0.0.1";

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Rejects with `what` after `ms` unless `promise` settles first. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `fn` (sync or async) until it returns a truthy value; resolves with that value. */
export async function waitFor(fn, { timeout = 5000, interval = 20, what = "condition" } = {}) {
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
      throw new Error(`timed out after ${timeout} ms waiting for ${what}; last: ${String(last?.stack ?? JSON.stringify(last))}`);
    }
    await sleep(interval);
  }
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, HOST, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const running = new Set();
process.on("exit", () => {
  for (const proc of running) {
    try {
      proc.kill("SIGKILL");
    } catch {
      /* gone */
    }
  }
});

/**
 * Starts the echo server on 127.0.0.1 (`port` 0 = any free port) and resolves once it printed
 * `listening on http://HOST:PORT`.
 * @returns {Promise<{ url: string, port: number, proc: import("node:child_process").ChildProcess,
 *   stderr(): string, stop(signal?: string): Promise<{code: number|null, signal: string|null,
 *   stderr: string}> }>}
 */
export async function startEcho({ port = 0, args = [] } = {}) {
  if (!fs.existsSync(ECHO_BIN)) {
    throw new Error(`${ECHO_BIN} not found: build it (make build or make build-asan) or set PULSEC_BUILD_DIR`);
  }
  const fullArgs = ["--host", HOST, "--port", String(port), ...args];
  const env = { ...process.env };
  if (!env.ASAN_OPTIONS) env.ASAN_OPTIONS = "detect_leaks=1";
  const proc = spawn(ECHO_BIN, fullArgs, { stdio: ["ignore", "pipe", "pipe"], env });
  running.add(proc);
  let out = "";
  let err = "";
  proc.stdout.setEncoding("utf8");
  proc.stderr.setEncoding("utf8");
  proc.stdout.on("data", (d) => (out += d));
  proc.stderr.on("data", (d) => (err += d));
  // 'close' comes after stdio ended, so stderr (a sanitizer report) is complete by then.
  const closed = new Promise((resolve) => proc.on("close", (code, signal) => resolve({ code, signal })));
  closed.then(() => running.delete(proc));

  const listening = new Promise((resolve, reject) => {
    const re = /listening on http:\/\/([^\s:/]+):(\d+)/;
    const check = () => {
      const m = re.exec(out);
      if (m) resolve(Number(m[2]));
    };
    proc.stdout.on("data", check);
    proc.on("error", reject);
    closed.then(({ code, signal }) =>
      reject(new Error(`echo exited before listening (code ${code}, signal ${signal}): ${fullArgs.join(" ")}\n${out}\n${err}`)),
    );
  });
  let actualPort;
  try {
    actualPort = await withTimeout(listening, 10000, `"listening on" from ${ECHO_BIN}`);
  } catch (e) {
    proc.kill("SIGKILL");
    throw e;
  }
  return {
    url: `http://${HOST}:${actualPort}`,
    port: actualPort,
    proc,
    stderr: () => err,
    /** Sends `signal` and resolves once the process is gone (SIGKILL after 10 s). */
    async stop(signal = "SIGTERM") {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      const timer = setTimeout(() => proc.kill("SIGKILL"), 10000);
      const { code, signal: sig } = await closed;
      clearTimeout(timer);
      return { code, signal: sig, stderr: err };
    },
  };
}

/** Stops `server` with SIGTERM and asserts a clean exit 0 (the ASan build: no leak, no error). */
export async function stopClean(server, what = "echo server") {
  const r = await server.stop("SIGTERM");
  assert.ok(
    r.code === 0,
    `${what} did not exit cleanly on SIGTERM: code ${r.code}, signal ${r.signal}\n--- stderr ---\n${r.stderr}--- end ---`,
  );
  return r;
}
