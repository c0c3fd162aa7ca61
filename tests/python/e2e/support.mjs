// The Python demos in headless Chromium: starts examples/python/<app>.py with the venv's Python
// (PULSEC_PYTHON, set by `make test-python`) on a free port, serving build/web/<page>, and
// reuses the browser helpers of the C demos' tests (tests/e2e/support.mjs).

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { ROOT } from "../../e2e/support.mjs";

export { joinChat, launchBrowser, newPage, until, waitForText } from "../../e2e/support.mjs";

const PYTHON = process.env.PULSEC_PYTHON ?? resolve(ROOT, "build/python-venv/bin/python");

/**
 * @param {"chat" | "progress"} app examples/python/<app>.py
 * @param {string} page the bundled page in build/web/<page>
 */
export async function startPython(app, page) {
  const script = join(ROOT, "examples/python", `${app}.py`);
  const web = join(ROOT, "build/web", page);
  if (!existsSync(PYTHON)) throw new Error(`${PYTHON} is missing: run \`make python\``);
  if (!existsSync(join(web, "app.js"))) throw new Error(`${web}/app.js is missing: run \`make web\``);
  const proc = spawn(PYTHON, [script, "--host", "127.0.0.1", "--port", "0", "--static", web], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const exited = new Promise((res) => proc.once("exit", (code, signal) => res({ code, signal })));
  proc.stderr.on("data", (d) => (out += d));
  const url = await new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`${app}.py did not start:\n${out}`)), 20_000);
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
      rej(new Error(`${app}.py exited (${code ?? signal}) before listening:\n${out}`));
    });
  });
  return {
    url,
    proc,
    output: () => out,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGTERM");
      const killer = setTimeout(() => proc.kill("SIGKILL"), 8_000);
      const result = await exited;
      clearTimeout(killer);
      return result;
    },
  };
}
