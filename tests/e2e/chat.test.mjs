// The chat demo in a real browser: two (or three) browser contexts, so separate sessions, on one
// chat server. Messages, joins and leaves travel between them; the server's confirm request is
// answered Yes, No, or not at all (its 5 s timeout).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { joinChat, launchBrowser, startServer, until, waitForText } from "./support.mjs";

let server;
let browser;
const errors = [];

before(async () => {
  server = await startServer("chat");
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  const exit = await server?.stop();
  assert.deepEqual(exit, { code: 0, signal: null }, `chat server output:\n${server?.output()}`);
  assert.deepEqual(errors, [], "no page errors");
});

const join = (name) => joinChat(browser, errors, server.url, name);

test("two members see each other's messages, joins and leaves", async () => {
  const ada = await join("Ada");
  const grace = await join("Grace");
  await waitForText(ada.activity, "Grace joined");
  await waitForText(ada.members, "Grace");
  await waitForText(grace.members, "Ada");

  await ada.say("Hello Grace!");
  await waitForText(grace.messages, "Hello Grace!");
  await waitForText(grace.activity, "server:message Ada: Hello Grace!");
  await grace.say("Hi Ada, channels work");
  await waitForText(ada.messages, "Hi Ada, channels work");
  assert.deepEqual(await ada.messageTexts(), ["Hello Grace!", "Hi Ada, channels work"]);
  assert.deepEqual(await grace.messageTexts(), ["Hello Grace!", "Hi Ada, channels work"]);

  // A third member arrives, then closes the tab: the others see both, and the member list
  // (server-rendered props) follows.
  const linus = await join("Linus");
  await waitForText(ada.activity, "Linus joined");
  await waitForText(grace.members, "Linus");
  assert.deepEqual(await linus.messageTexts(), ["Hello Grace!", "Hi Ada, channels work"], "history on join");
  await linus.page.close();
  await waitForText(ada.activity, "Linus left");
  await waitForText(grace.activity, "Linus left");
  await until(async () => !(await ada.members.textContent()).includes("Linus"), "Linus gone from the list");
  await linus.close();

  // Leaving with the button detaches the view: the same leave, seen by the others.
  await grace.page.getByRole("button", { name: "Leave" }).click();
  await waitForText(ada.activity, "Grace left");
  await until(async () => (await ada.members.locator("li").count()) === 1, "Ada alone");
  await ada.close();
  await grace.close();
});

test("confirm: Yes clears the history for everyone, No keeps it", async () => {
  const ada = await join("Ada");
  const grace = await join("Grace");
  await ada.say("one");
  await grace.say("two");
  await waitForText(ada.messages, "two");

  // No: the server says "Cancelled" to the asker only; nothing is cleared.
  await ada.page.getByRole("button", { name: "Clear history" }).click();
  const dialog = ada.page.getByRole("dialog");
  await waitForText(dialog, "Clear the history for everyone?");
  await dialog.getByRole("button", { name: "No" }).click();
  await waitForText(ada.page.getByRole("status"), "Cancelled");
  await waitForText(ada.activity, "server:notice Cancelled");
  assert.equal(await dialog.count(), 0, "dialog closed");
  assert.deepEqual((await grace.messageTexts()).slice(-2), ["one", "two"]);

  // Yes (asked from Grace's tab this time): both lists empty, both told.
  await grace.page.getByRole("button", { name: "Clear history" }).click();
  await grace.page.getByRole("dialog").getByRole("button", { name: "Yes, clear it" }).click();
  await waitForText(ada.activity, "server:notice History cleared");
  await waitForText(grace.activity, "server:notice History cleared");
  await waitForText(ada.messages, "No messages yet");
  await waitForText(grace.messages, "No messages yet");
  assert.deepEqual(await ada.messageTexts(), []);

  await ada.close();
  await grace.close();
});

test("confirm: no answer within 5 s keeps the history and says so", async () => {
  const ada = await join("Ada");
  await ada.say("keep me");
  await waitForText(ada.messages, "keep me");
  const asked = Date.now();
  await ada.page.getByRole("button", { name: "Clear history" }).click();
  await waitForText(ada.page.getByRole("dialog"), "s left to answer");
  await waitForText(ada.activity, "No answer within 5 s: history kept", 8_000);
  const waited = Date.now() - asked;
  assert.ok(waited >= 4_500 && waited < 8_000, `timeout notice after ${waited} ms`);
  await until(async () => (await ada.page.getByRole("dialog").count()) === 0, "dialog gone");
  assert.deepEqual((await ada.messageTexts()).slice(-1), ["keep me"]);
  await ada.close();
});
