// examples/python/chat.py in a real browser, serving the chat page the C server serves
// (examples/chat/web): separate browser contexts are separate members; messages, joins and
// leaves travel between them; the server's confirm request is answered Yes, No, or not at all.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { joinChat, launchBrowser, startPython, until, waitForText } from "./support.mjs";

let server;
let browser;
const errors = [];

before(async () => {
  server = await startPython("chat", "chat");
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  const exit = await server?.stop();
  assert.deepEqual(exit, { code: 0, signal: null }, `chat.py output:\n${server?.output()}`);
  assert.doesNotMatch(server.output(), /Traceback|ERROR/, "no error logged by the server");
  assert.deepEqual(errors, [], "no page errors");
});

const join = (name) => joinChat(browser, errors, server.url, name);

test("members see each other's messages, joins and leaves", async () => {
  const ada = await join("Ada");
  const grace = await join("Grace");
  await waitForText(ada.activity, "Grace joined");
  await waitForText(grace.members, "Ada");
  await ada.say("Hello from Python");
  await waitForText(grace.messages, "Hello from Python");
  await waitForText(grace.activity, "server:message Ada: Hello from Python");
  await grace.say("Same page, other server");
  await waitForText(ada.messages, "Same page, other server");
  assert.deepEqual(await grace.messageTexts(), ["Hello from Python", "Same page, other server"]);

  const linus = await join("Linus");
  assert.deepEqual(await linus.messageTexts(), ["Hello from Python", "Same page, other server"], "history on join");
  await linus.page.close(); // the tab goes away: the session ends, on_dispose tells the others
  await waitForText(ada.activity, "Linus left");
  await until(async () => !(await grace.members.textContent()).includes("Linus"), "Linus gone");
  await linus.close();

  await grace.page.getByRole("button", { name: "Leave" }).click(); // detach
  await waitForText(ada.activity, "Grace left");
  await ada.close();
  await grace.close();
});

test("confirm: No keeps the history, Yes clears it, no answer times out", async () => {
  const ada = await join("Ada");
  await ada.say("keep me");
  await waitForText(ada.messages, "keep me");

  await ada.page.getByRole("button", { name: "Clear history" }).click();
  const dialog = ada.page.getByRole("dialog");
  await waitForText(dialog, "Clear the history for everyone?");
  await dialog.getByRole("button", { name: "No" }).click();
  await waitForText(ada.activity, "server:notice Cancelled");

  await ada.page.getByRole("button", { name: "Clear history" }).click();
  const asked = Date.now();
  await waitForText(ada.page.getByRole("dialog"), "s left to answer");
  await waitForText(ada.activity, "No answer within 5 s: history kept", 9_000);
  const waited = Date.now() - asked;
  assert.ok(waited >= 4_500, `timeout notice after ${waited} ms`);
  assert.deepEqual((await ada.messageTexts()).slice(-1), ["keep me"]);

  await ada.page.getByRole("button", { name: "Clear history" }).click();
  await ada.page.getByRole("dialog").getByRole("button", { name: "Yes, clear it" }).click();
  await waitForText(ada.activity, "server:notice History cleared");
  await waitForText(ada.messages, "No messages yet");
  await ada.close();
});
