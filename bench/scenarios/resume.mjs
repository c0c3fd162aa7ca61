// What connection state recovery costs (issue 12), as a scenario module of `make bench` (the
// interface is in bench/README.md). Run it alone with
// `node bench/run.mjs --quick --only resume --out /tmp/b.md`.
//
// 1. rr and events, pulsec with recovery off (--resume-window 0) and on (the default), at the
//    core scenarios' load: server CPU per operation. Target: at most 5% more with it on.
// 2. Under callgrind, the instructions recovery's own code executes per operation (the replay
//    buffer's functions, keeping an event, the heartbeat hook): unlike CPU seconds, they do not
//    move with other work on a shared machine.
// 3. The memory a detached session holds: N idle connections attach /echo (loadgen idle), the
//    loadgen is killed (no close frame: the sessions detach, as on a network failure), and the
//    heap in use (glibc mallinfo2, from the fixture's stats) is read before, attached, detached.
//
// About 90 s at full size: one run per server and scenario, callgrind for 3 s per run, 2 000
// connections for the memory.

import { execFileSync, spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import path from "node:path";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function startServer(server, wrap = []) {
  const argv = ["-c", "0", ...wrap, ...server.cmd, "--port", "0"];
  const proc = spawn("taskset", argv, { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`${server.name} did not start`)), 60000);
    proc.on("exit", (code) => reject(new Error(`${server.name} exited with ${code} before listening`)));
    proc.stdout.on("data", (d) => {
      out += d;
      const m = /listening on http:\/\/(\S+):(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        proc.removeAllListeners("exit");
        resolve({ proc, pid: proc.pid, port: Number(m[2]) });
      }
    });
  });
}

async function stopServer(srv, graceMs = 10000) {
  if (srv.proc.exitCode !== null) return;
  const exited = new Promise((r) => srv.proc.on("exit", r));
  srv.proc.kill("SIGTERM");
  const t = setTimeout(() => srv.proc.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(t);
}

function loadgen(ctx, argv) {
  const proc = spawn("taskset", ["-c", "1", ctx.LOADGEN, ...argv.map(String)], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  proc.stdout.on("data", (d) => (out += d));
  proc.stderr.on("data", (d) => process.stderr.write(String(d).replace(/^/gm, "    ")));
  const done = new Promise((resolve, reject) => {
    proc.on("exit", (code, signal) => {
      const line = out.split("\n").filter((l) => l.startsWith("{")).pop();
      if (line) resolve(JSON.parse(line));
      else if (signal) resolve(null);
      else reject(new Error(`loadgen ${argv.join(" ")} exited with ${code}, no result`));
    });
  });
  return { proc, done };
}

/** The echo fixture's stats, asked over long-polling with fetch (attach /echo, request "stats"). */
async function stats(port) {
  const base = `http://127.0.0.1:${port}/socket.io/?EIO=4&transport=polling`;
  const open = await (await fetch(base)).text();
  const url = `${base}&sid=${JSON.parse(open.slice(1)).sid}`;
  const post = (body) => fetch(url, { method: "POST", body, headers: { "Content-Type": "text/plain;charset=UTF-8" } });
  const message = (m) => `42${JSON.stringify(["message", m])}`;
  await post("40");
  try {
    for (let round = 0; round < 20; round++) {
      for (const pkt of (await (await fetch(url)).text()).split("\x1e")) {
        if (pkt.startsWith("40{")) await post(message({ type: "attach", path: "/echo", attachId: "bench", props: null }));
        else if (pkt === "2") await post("3");
        else if (pkt.startsWith("42")) {
          const msg = JSON.parse(pkt.slice(2))[1];
          if (msg.type === "attach_ack") {
            await post(message({ type: "channel_message", channel: msg.props.channelId, event: "stats", payload: null, requestId: "s" }));
          } else if (msg.responseTo === "s") {
            return msg.payload;
          }
        }
      }
    }
    throw new Error("stats: no answer");
  } finally {
    await post("41").catch(() => {}); // ends this session at once (no detached copy)
  }
}

async function until(fn, ms, what) {
  const deadline = Date.now() + ms;
  for (let last; ; ) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

/*
 * One callgrind run of the server under rr or events: its instructions per operation, and those
 * of recovery's own code (inclusive: keep_for_replay with the replay buffer's push and the early
 * pings it asks for, add_offset, the heartbeat hook with the buffer's confirm, freeing; the few
 * instructions of the offset written inline into the text path are not counted).
 */
async function instructions(ctx, server, scenario) {
  try {
    execFileSync("valgrind", ["--version"], { stdio: "ignore" });
  } catch {
    return null;
  }
  mkdirSync(ctx.WORK, { recursive: true });
  const out = path.join(ctx.WORK, `resume-${scenario}-${server.name.replace(/\W+/g, "-")}.callgrind`);
  const srv = await startServer(server, ["valgrind", "--tool=callgrind", `--callgrind-out-file=${out}`, `--log-file=${out}.log`]);
  let r;
  try {
    // No warm-up: its operations would count in the instructions and not in `completed`.
    r = await loadgen(ctx, [scenario, "--port", srv.port, "-c", 100, "-k", 4, "-d", 3, "-w", 0]).done;
  } finally {
    await stopServer(srv, 60000);
  }
  const txt = execFileSync("callgrind_annotate", ["--inclusive=yes", "--threshold=100", out], { encoding: "utf8", maxBuffer: 1 << 28 });
  const total = Number((/([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS/.exec(txt)?.[1] ?? "0").replace(/,/g, ""));
  let own = 0;
  for (const line of txt.split("\n")) {
    // The outermost functions only (inclusive counts nest): keeping an event (the buffer's push
    // and the early pings inside), the heartbeat hook (the buffer's confirm inside), freeing.
    const m = /^\s*([\d,]+) \(\s*[\d.]+%\)\s+\S*:(keep_for_replay|add_offset|sio_on_heartbeat|ps__replay_free)\b/.exec(line);
    if (m) own += Number(m[1].replace(/,/g, ""));
  }
  return r?.completed && total ? { ops: r.completed, perOp: total / r.completed, ownPerOp: own / r.completed } : null;
}

async function detachedMemory(ctx, server, n) {
  const srv = await startServer({ ...server, cmd: [...server.cmd, "--max-detached", String(n + 100)] });
  try {
    await sleep(500);
    const heapBefore = (await stats(srv.port)).heap_bytes;
    const lg = loadgen(ctx, ["idle", "--port", srv.port, "-c", n, "-d", 600, "-w", 1, "--connect-concurrency", 256]);
    await until(async () => (await stats(srv.port)).views >= n, 120000, `${n} views attached`);
    await sleep(2500); // idle WebSockets release their framing buffers after 1 s
    const heapAttached = (await stats(srv.port)).heap_bytes;
    lg.proc.kill("SIGKILL"); // no close frame: what a network failure looks like
    await lg.done;
    const st = await until(async () => {
      const s = await stats(srv.port);
      return s.sessions_detached >= n && s.connections <= 2 ? s : null;
    }, 60000, `${n} sessions detached`);
    await sleep(1000);
    const heapDetached = (await stats(srv.port)).heap_bytes;
    return {
      n,
      detached: st.sessions_detached,
      views: st.views,
      attachedBytes: (heapAttached - heapBefore) / n,
      detachedBytes: (heapDetached - heapBefore) / n,
    };
  } finally {
    await stopServer(srv);
  }
}

const OFF = "pulsec, recovery off";
const ON = "pulsec, recovery on";

export default {
  name: "resume",

  steps(ctx) {
    const P = ctx.PLAN;
    const off = { name: OFF, cmd: [...ctx.SERVERS.pulsec.cmd, "--resume-window", "0"] };
    const on = { name: ON, cmd: ctx.SERVERS.pulsec.cmd };
    const duration = Math.min(P.duration, 5);
    const argv = ["-c", P.conns, "-k", P.inflight, "-d", duration, "-w", P.warmup];
    const est = duration + P.warmup + 4;
    return [
      { key: "resumeRr", scenario: "rr", servers: [off, on], argv: () => argv, est },
      { key: "resumeEvents", scenario: "events", servers: [off, on], argv: () => argv, est },
      { key: "resumeInstrRr", scenario: "rr (callgrind)", servers: [off, on], argv: () => [], est: 12, run: (c, s) => instructions(c, s, "rr") },
      { key: "resumeInstrEvents", scenario: "events (callgrind)", servers: [off, on], argv: () => [], est: 12, run: (c, s) => instructions(c, s, "events") },
      { key: "resumeDetached", scenario: "detached sessions", servers: [on], argv: () => [], est: 25, run: (c, s) => detachedMemory(c, s, ctx.Q ? 1000 : 2000) },
    ];
  },

  // Its figures compare two pulsec configurations, not the three servers: in analysis below.
  rows: () => [],

  targets(ctx, res) {
    const { fmt, cpuUsPerOp } = ctx;
    return [
      ["resumeRr", "round trip at rr"],
      ["resumeEvents", "echo at events"],
    ].map(([key, what]) => {
      const off = cpuUsPerOp(res[key][OFF]), on = cpuUsPerOp(res[key][ON]);
      const extra = off && on ? on / off - 1 : null;
      return {
        what: `recovery on costs ≤ 5% more server CPU per ${what}`,
        value: `${extra === null ? "–" : `${extra >= 0 ? "+" : ""}${(extra * 100).toFixed(1)}%`} (${fmt(on, 2)} vs ${fmt(off, 2)} µs)`,
        met: extra !== null && extra <= 0.05,
      };
    });
  },

  analysis(ctx, res) {
    const { fmt, kb, cpuUsPerOp } = ctx;
    const L = [];
    L.push("### Connection state recovery (issue 12)");
    L.push("");
    L.push(`pulsec with recovery off (\`--resume-window 0\`) and on (the default, as in every other table here), ${fmt(ctx.PLAN.conns)} connections × ${ctx.PLAN.inflight} in flight:`);
    L.push("");
    L.push("| scenario | recovery off | recovery on | CPU per op | recovery's own code under callgrind (instructions per op) |");
    L.push("|---|---|---|---|---|");
    for (const [name, key, ikey] of [["rr", "resumeRr", "resumeInstrRr"], ["events", "resumeEvents", "resumeInstrEvents"]]) {
      const off = res[key][OFF], on = res[key][ON];
      const cell = (r) => `${fmt(r.per_sec)} ${r.unit}, ${fmt(cpuUsPerOp(r), 2)} µs CPU per op`;
      const a = cpuUsPerOp(off), b = cpuUsPerOp(on);
      const ins = res[ikey]?.[ON];
      const own = ins ? `${fmt(ins.ownPerOp)} of ${fmt(ins.perOp)} (${((ins.ownPerOp / ins.perOp) * 100).toFixed(1)}%)` : "–";
      L.push(`| ${name} | ${cell(off)} | ${cell(on)} | ${a && b ? `${b >= a ? "+" : ""}${((b / a - 1) * 100).toFixed(1)}%` : "–"} | ${own} |`);
    }
    L.push("");
    L.push("CPU seconds per operation move with other work on a shared machine; what recovery's own code executes does not. Its");
    L.push("per-event work is small: an offset appended to each event, the event's bytes copied into the session's replay buffer, and");
    L.push("at each pong the buffer let go of what the client has read (an early ping once 16 KiB wait), so a busy connection holds");
    L.push("about 16 KiB and an idle one its last few events until the next heartbeat.");
    L.push("");
    const m = res.resumeDetached?.[ON];
    if (m) {
      L.push(`**A detached session holds ${fmt(m.detachedBytes)} bytes** of heap (glibc \`mallinfo2\`): ${fmt(m.n)} idle connections attached \`/echo\`,`);
      L.push(`then their client was killed without a close frame, so every session waited for it (${fmt(m.detached)} detached, ${fmt(m.views)} views`);
      L.push(`kept): its socket, session, handshake copy, view, channel and listener, and its replay buffer holding the \`attach_ack\` no pong`);
      L.push(`had confirmed. An attached idle connection held ${fmt(m.attachedBytes)} bytes (${kb(m.attachedBytes)}) of heap in the same run. RSS does not show`);
      L.push("this: the allocator keeps what the closed connections freed.");
      L.push("");
    }
    return L;
  },

  method: (ctx) => [
    "- **recovery**: the rr and events loads of the core rows with recovery off (`--resume-window 0`) and on, one run each; " +
      "under callgrind (100 connections × 4 in flight, 3 s, no warm-up) the inclusive instructions of `keep_for_replay`, `add_offset`, the heartbeat hook and `ps__replay_free` " +
      "divided by the operations; a detached session's heap: `loadgen idle` killed with SIGKILL, `heap_bytes` from the fixture's stats.",
  ],
};
