// Takes docs/screenshots/python-progress.png: the progress demo (examples/python/progress.py)
// with a job half done, and with the server's confirm request open. Not a test:
//   PULSEC_PYTHON=build/python-venv/bin/python node tests/python/e2e/screenshot.mjs
import { join } from "node:path";
import { ROOT } from "../../e2e/support.mjs";
import { launchBrowser, newPage, startPython, until, waitForText } from "./support.mjs";

const server = await startPython("progress", "progress");
const browser = await launchBrowser();
const errors = [];
try {
  const page = await newPage(browser, errors, { viewport: { width: 900, height: 420 } });
  await page.goto(server.url);
  await page.getByLabel("Steps").fill("40");
  await page.getByLabel("Step time (ms)").fill("60");
  await page.getByRole("button", { name: "Start job" }).click();
  const bar = page.getByRole("progressbar", { name: "Job progress" });
  await until(async () => Number(await bar.getAttribute("aria-valuenow")) >= 22, "half done", 10_000);
  await page.screenshot({ path: join(ROOT, "docs/screenshots/python-progress.png") });
  await waitForText(page.getByRole("dialog"), "Replace the previous results", 10_000);
  await page.screenshot({ path: join(ROOT, "docs/screenshots/python-progress-confirm.png") });
  if (errors.length) throw new Error(errors.join("\n"));
} finally {
  await browser.close();
  await server.stop();
}
