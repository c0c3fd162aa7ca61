// Takes the README's screenshots of both demos after some activity, with the same servers and
// browser as the e2e tests:
//
//   make build web && node tests/e2e/screenshots.mjs     # writes docs/screenshots/*.png

import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { ROOT, launchBrowser, newPage, startServer, until, waitForText } from "./support.mjs";

const OUT = join(ROOT, "docs/screenshots");
const errors = [];
await mkdir(OUT, { recursive: true });
const browser = await launchBrowser();
const shot = async (page, name) => {
  await page.waitForTimeout(300); // let scroll positions and transitions settle
  await page.screenshot({ path: join(OUT, name) });
  console.log(`docs/screenshots/${name}`);
};

async function chat() {
  const server = await startServer("chat");
  const join_ = async (name) => {
    const page = await newPage(browser, errors);
    await page.goto(server.url);
    await page.getByLabel("Your name").fill(name);
    await page.getByRole("button", { name: "Join the room" }).click();
    await waitForText(page.getByTestId("members"), name);
    return page;
  };
  const say = async (page, text) => {
    await page.getByLabel("Message").fill(text);
    await page.getByLabel("Message").press("Enter");
    await page.waitForTimeout(150);
  };
  const ada = await join_("Ada");
  const grace = await join_("Grace");
  const linus = await join_("Linus");
  await say(ada, "Hi all! This room is served by a C server.");
  await say(grace, "And the list you see is the view's props, pushed on every change.");
  await say(linus, "While this widget talks over its own channel. Gotta go, bye!");
  await linus.context().close();
  await waitForText(ada.getByTestId("activity"), "Linus left");
  await say(ada, "Let me try the confirm flow…");
  await say(grace, "Go ahead, I can take it.");
  await shot(ada, "chat.png");
  await ada.getByRole("button", { name: "Clear history" }).click();
  await ada.getByRole("dialog").waitFor();
  await ada.waitForTimeout(1200);
  await shot(ada, "chat-confirm.png");
  await ada.getByRole("dialog").getByRole("button", { name: "No" }).click();
  await Promise.all(browser.contexts().map((c) => c.close()));
  await server.stop();
}

async function playground() {
  const server = await startServer("playground");
  const page = await newPage(browser, errors);
  await page.goto(server.url);
  await page.getByTestId("tester-1").locator(".chip.open").waitFor();
  for (let i = 0; i < 3; i++) await page.getByRole("button", { name: "+ Add tester" }).click();
  const click = async (n, name) => {
    await page.getByTestId(`tester-${n}`).getByRole("button", { name, exact: true }).click();
    await page.waitForTimeout(120);
  };
  await click(1, "Server notify");
  await click(1, "Client ping");
  await click(1, "Client request");
  await click(1, "Server asks client");
  await click(1, "Answer");
  await click(2, "Client ping");
  await click(2, "Server notify");
  await click(2, "Server asks client");
  await page.getByRole("button", { name: "Remove tester #4" }).click();
  await until(async () => (await page.getByTestId("stat-channels").textContent()) === "3", "3 channels");
  await waitForText(page.getByTestId("page-log"), "of tester #4 closed by the server");
  await shot(page, "playground.png");
  await page.getByRole("link", { name: "About", exact: true }).click();
  await until(async () => (await page.getByTestId("stat-channels").textContent()) === "0", "0 channels");
  await shot(page, "playground-about.png");
  await page.context().close();
  await server.stop();
}

try {
  await chat();
  await playground();
} finally {
  await browser.close();
}
if (errors.length) {
  console.error(errors.join("\n"));
  process.exitCode = 1;
}
