// The TypeScript declarations (index.d.ts, react.d.ts) compile against the documented usage
// in test/types, strictly, and reject the misuse marked there with @ts-expect-error.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../..", import.meta.url));
const tsc = fileURLToPath(new URL("../../node_modules/typescript/bin/tsc", import.meta.url));

test("index.d.ts and react.d.ts type-check the documented usage", { skip: !existsSync(tsc) && "typescript is not installed (npm install in clients/js)" }, async () => {
  const { code, output } = await new Promise((resolve) => {
    execFile(process.execPath, [tsc, "-p", "test/types"], { cwd: root }, (err, stdout, stderr) => {
      resolve({ code: err ? err.code ?? 1 : 0, output: stdout + stderr });
    });
  });
  assert.equal(code, 0, output);
});
