// The playground demo in a real browser: every button of a tester, both directions in its log,
// and the server-side proof (the /stats view) that removing a tester, or navigating to the
// second route, closes the channels on the server.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launchBrowser, newPage, startServer, until, waitForText } from "./support.mjs";

let server;
let browser;
const errors = [];

before(async () => {
  server = await startServer("playground");
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  const exit = await server?.stop();
  assert.deepEqual(exit, { code: 0, signal: null }, `playground server output:\n${server?.output()}`);
  assert.deepEqual(errors, [], "no page errors");
});

async function open() {
  const page = await newPage(browser, errors);
  await page.goto(server.url);
  await page.getByTestId("tester-1").locator(".chip.open").waitFor();
  return page;
}

/** The number shown in the stats panel for `key` (sessions, views, channels). */
const stat = async (page, key) => Number(await page.getByTestId(`stat-${key}`).textContent());

async function waitForStat(page, key, value, timeout = 5_000) {
  await until(async () => (await stat(page, key)) === value, `${key} = ${value} (is ${await stat(page, key)})`, timeout);
}

test("every button of a tester, and its log of both directions", async () => {
  const page = await open();
  const tester = page.getByTestId("tester-1");
  const log = page.getByTestId("log-1");
  const button = (name) => tester.getByRole("button", { name, exact: true });

  await button("Server notify").click();
  await waitForText(log, "↑client:notify-me {}");
  await waitForText(log, '↓server:notify {"n":1,"tester":1}');
  await button("Server notify").click();
  await waitForText(log, '↓server:notify {"n":2,"tester":1}');

  await button("Client ping").click();
  await waitForText(log, '↑client:ping {"seq":1}');
  await waitForText(log, '↓server:pong {"seq":1}');

  await button("Client request").click();
  await waitForText(log, '↑client:request (request) {"seq":2}');
  await waitForText(log, '↓reply {"echo":{"seq":2},"tester":1}');

  // The server asks; the page shows the question; Answer replies and the server reports it.
  await button("Server asks client").click();
  await waitForText(log, '↓server:ask (request) {"question":"Are you there?","tester":1}');
  const ask = tester.getByRole("alert");
  await waitForText(ask, "Are you there?");
  await ask.getByRole("button", { name: "Answer" }).click();
  await waitForText(log, '↑reply to server:ask {"answer":"Yes, I am here"');
  await waitForText(log, '↓server:ask-result {"status":"ok","payload":{"answer":"Yes, I am here"');
  assert.equal(await ask.count(), 0, "question answered");

  // Ignore: nothing goes back, and the server's 5 s timeout reports it.
  await button("Server asks client").click();
  await ask.getByRole("button", { name: "Ignore" }).click();
  await waitForText(log, "ignored server:ask");
  await waitForText(log, '↓server:ask-result {"status":"timeout"}', 8_000);

  // The order of the log: every request/answer pair in sequence.
  const lines = await page.locator("[data-testid=log-1] li .text").allTextContents();
  const events = lines.map((l) => l.split(" ")[0]);
  assert.deepEqual(events, [
    "client:notify-me", "server:notify", "client:notify-me", "server:notify",
    "client:ping", "server:pong",
    "client:request", "reply",
    "client:ask-me", "server:ask", "reply", "server:ask-result",
    "client:ask-me", "server:ask", "ignored", "server:ask-result",
  ]);
  await page.context().close();
});

test("removed testers and the second route close their channels on the server", async () => {
  const page = await open();
  await waitForStat(page, "sessions", 1); // the previous test's tab is gone
  await waitForStat(page, "channels", 1);
  const pageLog = page.getByTestId("page-log");

  for (let i = 0; i < 3; i++) await page.getByRole("button", { name: "+ Add tester" }).click();
  for (const n of [2, 3, 4]) await page.getByTestId(`tester-${n}`).locator(".chip.open").waitFor();
  await waitForStat(page, "channels", 4);
  await waitForStat(page, "views", 5); // four testers and the stats view

  // Each tester has its own channel: a ping on #3 shows up in #3's log only.
  await page.getByTestId("tester-3").getByRole("button", { name: "Client ping" }).click();
  await waitForText(page.getByTestId("log-3"), "server:pong");
  assert.equal(await page.getByTestId("log-2").locator("li.in").count(), 0);

  // Remove #3: its view detaches, the server closes its channel, the page log shows the close.
  const id3 = await page.getByTestId("tester-3").locator(".chip").getAttribute("title");
  await page.getByRole("button", { name: "Remove tester #3" }).click();
  assert.equal(await page.getByTestId("tester-3").count(), 0);
  await waitForStat(page, "channels", 3);
  await waitForStat(page, "views", 4);
  await waitForText(pageLog, `channel ${id3.slice(0, 8)}… of tester #3 closed by the server`);

  // The second route unmounts every tester: the server is left with no channel at all.
  await page.getByRole("link", { name: "About", exact: true }).click();
  await waitForText(page.locator("main"), "You navigated away from the testers");
  assert.equal(page.url(), `${server.url}/#/about`);
  await waitForStat(page, "channels", 0);
  await waitForStat(page, "views", 1); // the stats view alone
  for (const n of [1, 2, 4]) await waitForText(pageLog, `of tester #${n} closed by the server`);
  await waitForText(pageLog, "navigated to #/about: 3 tester(s) unmounted");

  // And back: the three testers attach again, with new channels.
  await page.getByRole("link", { name: "Testers", exact: true }).click();
  await waitForStat(page, "channels", 3);
  await page.getByTestId("tester-4").getByRole("button", { name: "Server notify" }).click();
  await waitForText(page.getByTestId("log-4"), "server:notify");
  await page.context().close();
});
