// examples/python/progress.py in a real browser: a job started from the page reports its
// progress into a progress bar; it can be cancelled with a request; before its destructive step
// the server asks the page to confirm (Yes, No, or no answer within the timeout).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launchBrowser, newPage, startPython, until, waitForText } from "./support.mjs";

let server;
let browser;
const errors = [];

before(async () => {
  server = await startPython("progress", "progress");
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  const exit = await server?.stop();
  assert.deepEqual(exit, { code: 0, signal: null }, `progress.py output:\n${server?.output()}`);
  assert.doesNotMatch(server.output(), /Traceback|ERROR/, "no error logged by the server");
  assert.deepEqual(errors, [], "no page errors");
});

async function open() {
  const page = await newPage(browser, errors);
  await page.goto(server.url);
  await page.getByRole("button", { name: "Start job" }).waitFor();
  const bar = page.getByRole("progressbar", { name: "Job progress" });
  return {
    page,
    counts: page.getByTestId("counts"),
    result: page.getByTestId("result"),
    done: async () => Number(await bar.getAttribute("aria-valuenow")),
    async start(steps, delayMs) {
      await page.getByLabel("Steps").fill(String(steps));
      await page.getByLabel("Step time (ms)").fill(String(delayMs));
      await page.getByRole("button", { name: "Start job" }).click();
    },
  };
}

test("progress fills the bar; confirming replaces the results", async () => {
  const p = await open();
  await p.start(10, 40);
  const seen = new Set();
  await until(async () => {
    seen.add(await p.done());
    return seen.has(10);
  }, "all 10 steps reported", 10_000);
  assert.ok(seen.size >= 3, `the bar moved through several values: ${[...seen]}`);
  await waitForText(p.counts, "10 / 10 steps (100%)");
  const dialog = p.page.getByRole("dialog");
  await waitForText(dialog, "Replace the previous results with these?");
  await dialog.getByRole("button", { name: "Yes, replace" }).click();
  await waitForText(p.result, "Results replaced");
  await waitForText(p.result, "replaced 1 times");

  // Again, and this time keep the old ones.
  await p.start(3, 10);
  await dialog.getByRole("button", { name: "Keep the old ones" }).click();
  await waitForText(p.result, "Previous results kept");
  await waitForText(p.result, "replaced 1 times");
  await p.page.context().close();
});

test("a running job is cancelled by a request, also while the server asks", async () => {
  const p = await open();
  await p.start(1000, 50);
  await until(async () => (await p.done()) >= 3, "a few steps done");
  await p.page.getByRole("button", { name: "Cancel", exact: true }).click();
  await waitForText(p.page.getByTestId("message"), "Cancel acknowledged at step");
  await waitForText(p.result, "Cancelled after");
  const stopped = await p.done();
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await p.done(), stopped, "no progress after the cancel");

  // Cancel while the confirm dialog is up: the server abandons its request, the dialog goes.
  await p.start(2, 10);
  const dialog = p.page.getByRole("dialog");
  await waitForText(dialog, "Replace the previous results");
  await dialog.getByRole("button", { name: "Cancel the job" }).click();
  await waitForText(p.result, "Cancelled after 2 of 2 steps");
  assert.equal(await p.page.getByRole("dialog").count(), 0, "dialog closed");
  await p.page.context().close();
});

test("no answer to the confirm within its timeout keeps the results", async () => {
  const p = await open();
  await p.start(1, 0);
  await waitForText(p.page.getByRole("dialog"), "s left to answer");
  await waitForText(p.result, "No answer within 10 s: previous results kept", 15_000);
  await until(async () => (await p.page.getByRole("dialog").count()) === 0, "dialog gone");
  await p.page.context().close();
});
