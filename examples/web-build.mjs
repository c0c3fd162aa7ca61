// Bundles the demo pages with esbuild: examples/<app>/web/{index.html,app.jsx,style.css} ->
// build/web/<app>/{index.html,app.js,app.css}, served by the C servers with --static (and
// examples/python/web -> build/web/progress, the page of examples/python/progress.py).
//
//   node examples/web-build.mjs            # every app, minified
//   node examples/web-build.mjs chat       # one app
//   node examples/web-build.mjs --watch    # rebuild on change (reload the page yourself)
//
// pulsec-client is taken from the source tree (clients/js/src, its package.json "exports"), so
// the pages always run the client of this checkout. React and react-dom resolve from the root
// node_modules only: clients/js/node_modules holds its own dev copy of React, and two copies in
// one bundle break hooks ("Invalid hook call").

import * as esbuild from "esbuild";
import { copyFile, mkdir, readFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
// app -> the directory of its page (index.html, app.jsx, style.css).
const pages = { chat: "examples/chat/web", playground: "examples/playground/web", progress: "examples/python/web" };
const apps = Object.keys(pages);
const clientDir = join(root, "clients/js");
const clientPkg = JSON.parse(await readFile(join(clientDir, "package.json"), "utf8"));

/** "pulsec-client" and "pulsec-client/react" -> files in clients/js, per its exports map. */
const pulsecClient = {
  name: "pulsec-client",
  setup(build) {
    build.onResolve({ filter: /^pulsec-client(\/.*)?$/ }, (args) => {
      const sub = "." + args.path.slice("pulsec-client".length);
      const target = clientPkg.exports[sub];
      const file = typeof target === "string" ? target : target?.default;
      if (!file) return { errors: [{ text: `pulsec-client does not export "${sub}"` }] };
      return { path: join(clientDir, file) };
    });
  },
};

function options(app) {
  return {
    absWorkingDir: root,
    entryPoints: { app: join(root, pages[app], "app.jsx") },
    outdir: join(root, "build/web", app),
    bundle: true,
    format: "esm",
    target: "es2022",
    jsx: "automatic",
    minify: true,
    legalComments: "none",
    logLevel: "warning",
    define: { "process.env.NODE_ENV": '"production"' },
    // Resolved from the working directory (the root): one React for the app and the hooks.
    alias: { react: "react", "react-dom": "react-dom" },
    plugins: [pulsecClient],
    metafile: true,
  };
}

async function copyHtml(app) {
  await copyFile(join(root, pages[app], "index.html"), join(root, "build/web", app, "index.html"));
}

/** Fails the build if two copies of React made it into one bundle. */
function checkOneReact(app, metafile) {
  const copies = new Set();
  for (const input of Object.keys(metafile.inputs)) {
    const m = input.match(/^(.*node_modules\/react)\//);
    if (m) copies.add(m[1]);
  }
  if (copies.size > 1) throw new Error(`${app}: several copies of React bundled: ${[...copies].join(", ")}`);
}

const args = process.argv.slice(2);
const watch = args.includes("--watch");
const wanted = args.filter((a) => !a.startsWith("--"));
for (const app of wanted) if (!apps.includes(app)) throw new Error(`unknown app "${app}" (${apps.join(", ")})`);

for (const app of wanted.length ? wanted : apps) {
  await mkdir(join(root, "build/web", app), { recursive: true });
  await copyHtml(app);
  if (watch) {
    const ctx = await esbuild.context({ ...options(app), minify: false });
    await ctx.watch();
    console.log(`watching ${app} -> build/web/${app}/`);
  } else {
    const result = await esbuild.build(options(app));
    checkOneReact(app, result.metafile);
    const sizes = Object.entries(result.metafile.outputs)
      .map(([file, o]) => `${file.split("/").pop()} ${(o.bytes / 1024).toFixed(0)} kB`)
      .join(", ");
    console.log(`built build/web/${app}/ (index.html, ${sizes})`);
  }
}
