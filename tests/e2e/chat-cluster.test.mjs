// The chat demo on two nodes sharing one Redis (issue 11), in a real browser: Debian's
// redis-server started by the test on a unix socket in a temporary directory, two chat servers
// with --redis (one of them with two workers), pages on both. A message typed on one node shows
// on the pages of the other; the member list spans both; a new page on either sees the history
// (kept in Redis); a clear confirmed on one node clears it everywhere. Every process started is
// stopped: the chat servers with SIGTERM, and must exit 0.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Redis } from "../integration/lib/redis.mjs";
import { joinChat, launchBrowser, startServer, until, waitForText } from "./support.mjs";

let redis;
let nodes = [];
let browser;
const errors = [];

before(async () => {
  redis = await Redis.start();
  nodes = [
    await startServer("chat", ["--redis", redis.url]),
    await startServer("chat", ["--redis", redis.url, "--workers", "2"]),
  ];
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  for (const n of nodes) {
    const exit = await n.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, `chat node output:\n${n.output()}`);
  }
  await redis?.stop();
  assert.deepEqual(errors, [], "no page errors");
});

const join = (node, name) => joinChat(browser, errors, node.url, name);

test("two nodes on one Redis: messages, members and history cross between them", async () => {
  const [a, b] = nodes;
  const ada = await join(a, "Ada");
  const grace = await join(b, "Grace");
  await waitForText(ada.members, "Grace");
  await waitForText(grace.members, "Ada");
  await waitForText(ada.activity, "Grace joined");

  await ada.say("Hello from node 1");
  await waitForText(grace.messages, "Hello from node 1");
  await waitForText(grace.activity, "server:message Ada: Hello from node 1");
  await grace.say("Hi from node 2");
  await waitForText(ada.messages, "Hi from node 2");
  assert.deepEqual(await ada.messageTexts(), ["Hello from node 1", "Hi from node 2"]);

  // A new page on either node sees the whole history, read from Redis.
  for (const node of nodes) {
    const late = await join(node, `Late ${node.url.slice(-4)}`);
    await until(async () => (await late.messageTexts()).length === 2, "history on a new page");
    assert.deepEqual(await late.messageTexts(), ["Hello from node 1", "Hi from node 2"]);
    await waitForText(ada.members, "Late");
    await late.close();
  }
  await until(async () => !(await ada.members.textContent()).includes("Late"), "late pages left everywhere");

  // Clearing on node 1 (answered Yes) clears the history on node 2 as well.
  await ada.page.getByRole("button", { name: "Clear history" }).click();
  await ada.page.getByRole("dialog").getByRole("button", { name: "Yes, clear it" }).click();
  await waitForText(grace.activity, "server:notice History cleared");
  await waitForText(grace.messages, "No messages yet");
  await grace.page.getByRole("button", { name: "Leave" }).click();
  await waitForText(ada.activity, "Grace left");
  await ada.close();
  await grace.close();
});
