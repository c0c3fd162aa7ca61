// The fairness scenario of `make bench` (issue 16): one light client beside heavy senders.
// HEAVY connections each send ~1 MB channel events as fast as the server takes them (the /echo
// view parses every one and drops it: no output), while a loadgen rr client with one request
// in flight measures its round trips. Target: the light client's p99 within 50 ms while the
// heavy senders run. Before pulsec's per-connection read budget (PS__CONN_READ_BUDGET in
// src/net.h) libuv read up to 2 MiB from one connection per loop pass, and the light client's
// p99 was 2.2 s.
//
// Runs on pulsec and the Socket.IO baseline (the floor server has no channel protocol to
// parse). Alone, against a server already listening:
//   node bench/scenarios/fairness.mjs --port 8000 [--loadgen build-release/bench/loadgen]

import { spawn } from "node:child_process";
import net from "node:net";
import crypto from "node:crypto";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const SELF = fileURLToPath(import.meta.url);
// The core beside the server's (which is 0), or 0 on a machine with one.
const OTHER_CORE = String(Math.min(1, os.cpus().length - 1));

const HEAVY = 20; // heavy connections
// One message: 1,000,000 bytes of payload, under socket.io's default maxHttpBufferSize (1e6 for
// the whole packet) less the envelope, so ~999,900, and under pulsec's max_payload (1 MiB).
const MESSAGE_BYTES = 999_800;
const TARGET_P99_US = 50_000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A masked client frame (RFC 6455) carrying `text`. */
function frame(text) {
  const data = Buffer.from(text, "utf8");
  const len = data.length;
  const head = Buffer.alloc(len < 126 ? 2 : len < 65536 ? 4 : 10);
  head[0] = 0x81;
  if (len < 126) {
    head[1] = 0x80 | len;
  } else if (len < 65536) {
    head[1] = 0x80 | 126;
    head.writeUInt16BE(len, 2);
  } else {
    head[1] = 0x80 | 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  const key = crypto.randomBytes(4);
  for (let i = 0; i < len; i++) data[i] ^= key[i & 3];
  return Buffer.concat([head, key, data]);
}

/**
 * A heavy sender: WebSocket upgrade, Engine.IO open, Socket.IO CONNECT, attach /echo; start()
 * then writes the same ~1 MB channel event over and over, as fast as the socket takes it, until
 * stop() (which returns how many it wrote). Answers pings.
 */
async function heavySender(port) {
  const sock = net.connect({ host: "127.0.0.1", port });
  sock.setNoDelay(true);
  let buf = Buffer.alloc(0);
  let upgraded = false;
  const texts = [];
  sock.on("error", () => {});
  sock.on("data", (d) => {
    buf = Buffer.concat([buf, d]);
    if (!upgraded) {
      const i = buf.indexOf("\r\n\r\n");
      if (i < 0) return;
      upgraded = true;
      buf = buf.subarray(i + 4);
    }
    // Server frames are unmasked, and only small text frames come (open, replies, pings).
    while (buf.length >= 2) {
      let len = buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (buf.length < 4) break;
        len = buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (buf.length < 10) break;
        len = Number(buf.readBigUInt64BE(2));
        off = 10;
      }
      if (buf.length < off + len) break;
      const text = buf.subarray(off, off + len).toString("utf8");
      buf = buf.subarray(off + len);
      if (text === "2") sock.write(frame("3"));
      else texts.push(text);
    }
  });
  const waitText = async (re, ms = 10000) => {
    const deadline = Date.now() + ms;
    for (;;) {
      const i = texts.findIndex((t) => re.test(t));
      if (i >= 0) return texts.splice(i, 1)[0];
      if (Date.now() > deadline) throw new Error(`heavy sender: no ${re} (got ${texts.join(" | ").slice(0, 300)})`);
      await sleep(10);
    }
  };
  await new Promise((resolve, reject) => {
    sock.once("connect", resolve);
    sock.once("error", reject);
  });
  sock.write(
    "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n" +
      `Connection: Upgrade\r\nSec-WebSocket-Key: ${crypto.randomBytes(16).toString("base64")}\r\n` +
      "Sec-WebSocket-Version: 13\r\n\r\n",
  );
  await waitText(/^0\{/);
  sock.write(frame("40"));
  await waitText(/^40\{/);
  sock.write(frame(`42${JSON.stringify(["message", { type: "attach", path: "/echo", attachId: "heavy" }])}`));
  const channel = JSON.parse((await waitText(/attach_ack/)).slice(2))[1].props.channelId;
  const msg = frame(`42${JSON.stringify(["message", { type: "channel_message", channel, event: "bulk", payload: "x".repeat(MESSAGE_BYTES) }])}`);
  let stopped = false;
  let sent = 0;
  return {
    async start() {
      while (!stopped && !sock.destroyed) {
        if (!sock.write(msg))
          await new Promise((r) => {
            const done = () => (sock.off("drain", done), sock.off("close", done), r());
            sock.on("drain", done).on("close", done);
          });
        sent++;
      }
    },
    stop() {
      stopped = true;
      sock.destroy();
      return sent;
    },
  };
}

/**
 * The heavy senders, in a process of their own pinned to `core` (beside the loadgen, away from
 * the server's core): it prints "ready" once all attached, sends until SIGTERM, then prints how
 * many messages it sent.
 */
function startSenders(port, heavy, core) {
  const child = spawn("taskset", ["-c", String(core), process.execPath, SELF, "--senders", String(heavy), "--port", String(port)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  const exited = new Promise((r) => child.on("exit", r));
  const ready = new Promise((resolve, reject) => {
    child.stdout.on("data", () => /ready/.test(out) && resolve());
    exited.then(() => reject(new Error(`heavy senders exited before they were ready: ${out}`)));
  });
  return {
    ready,
    async stop() {
      child.kill("SIGTERM");
      await exited;
      return Number(/sent (\d+)/.exec(out)?.[1] ?? 0);
    },
  };
}

/**
 * Against a server on `port`: the heavy senders attach and start (pinned to `core`), then
 * `runLoadgen(argv)` (a loadgen rr with one light connection, resolving with its JSON line) runs
 * while they send. Returns that result plus { heavy, heavy_messages, heavy_mb_per_s }.
 */
export async function fairnessRun(port, runLoadgen, { seconds = 8, warmup = 2, heavy = HEAVY, core = OTHER_CORE } = {}) {
  const senders = startSenders(port, heavy, core);
  await senders.ready;
  const t0 = Date.now();
  await sleep(500); // the heavy traffic is in full swing before the light client measures
  let r;
  try {
    r = await runLoadgen(["rr", "--port", port, "-c", 1, "-k", 1, "-d", seconds, "-w", warmup]);
  } finally {
    const sent = await senders.stop();
    r = r ?? {};
    r.heavy = heavy;
    r.heavy_messages = sent;
    r.heavy_mb_per_s = (sent * MESSAGE_BYTES) / 1e6 / ((Date.now() - t0) / 1000);
  }
  return r;
}

export default {
  name: "fairness",

  steps(ctx) {
    const seconds = ctx.Q ? 3 : 8;
    return [
      {
        key: "fairness",
        scenario: "fairness",
        servers: [ctx.SERVERS.pulsec, ctx.SERVERS["socket.io"]],
        argv: () => [`${HEAVY} heavy senders`],
        est: seconds + 8,
        // A fresh server, pinned like every other run; the loadgen is the light client.
        run: async (ctx, server) => {
          await ctx.waitQuiet(seconds + 8);
          const srv = await ctx.startServer(server);
          try {
            await sleep(300);
            const r = await fairnessRun(srv.port, (argv) => ctx.loadgen([...argv, "--server-pid", srv.pid, "--label", server.name], 120), {
              seconds,
              warmup: ctx.Q ? 1 : 2,
              core: ctx.LOADGEN_CORE,
            });
            r.server = server.name;
            return r;
          } finally {
            await ctx.stopServer(srv);
          }
        },
      },
    ];
  },

  rows(ctx, res) {
    const { fmt, ms } = ctx;
    const cell = (r) => `p50 ${ms(r.latency_us?.p50)} · p99 ${ms(r.latency_us?.p99)} · max ${ms(r.latency_us?.max)}; ${fmt(r.per_sec)} round trips/s; heavy senders ${fmt(r.heavy_mb_per_s)} MB/s`;
    return [ctx.row(`**fairness**: 1 light client (rr, 1 in flight) beside ${HEAVY} clients sending ${fmt(MESSAGE_BYTES / 1e6, 1)} MB messages as fast as they can; ratio of p99`, res.fairness, cell, (r) => r.latency_us?.p99)];
  },

  targets(ctx, res) {
    const r = res.fairness?.pulsec;
    if (!r) return [];
    const s = res.fairness["socket.io"];
    return [
      {
        what: `light client's p99 while ${HEAVY} clients send ${ctx.fmt(MESSAGE_BYTES / 1e6, 1)} MB messages as fast as they can ≤ ${TARGET_P99_US / 1000} ms (issue 16)`,
        value: `${ctx.ms(r.latency_us?.p99)} (max ${ctx.ms(r.latency_us?.max)}; heavy senders ${ctx.fmt(r.heavy_mb_per_s)} MB/s; socket.io ${ctx.ms(s?.latency_us?.p99)})`,
        met: r.latency_us?.p99 <= TARGET_P99_US && r.errors === 0,
      },
    ];
  },

  method: () => [
    `- **fairness**: ${HEAVY} raw WebSocket clients attach \`/echo\` and write one ~1 MB channel event after another, as fast as ` +
      "the server takes them (the fixture parses each and drops it: nothing comes back); meanwhile `loadgen rr -c 1 -k 1` on the " +
      "same core measures a light client's round trips. pulsec reads at most 64 KiB per connection per loop pass " +
      "(PS__CONN_READ_BUDGET), so the light client waits for one budget of each heavy sender at most.",
  ],
};

// Alone: node bench/scenarios/fairness.mjs --port N [--loadgen PATH] [--seconds S] [--heavy N]
// (the server pinned elsewhere: taskset -c 0 build-release/examples/echo --port N). With
// --senders N it is the heavy senders' process of startSenders.
if (process.argv[1] === SELF) {
  const { values: a } = parseArgs({
    options: {
      port: { type: "string" },
      loadgen: { type: "string", default: path.resolve(path.dirname(SELF), "../../build-release/bench/loadgen") },
      seconds: { type: "string", default: "8" },
      heavy: { type: "string", default: String(HEAVY) },
      senders: { type: "string" },
    },
  });
  if (a.senders) {
    const senders = await Promise.all(Array.from({ length: Number(a.senders) }, () => heavySender(Number(a.port))));
    for (const s of senders) s.start();
    console.log("ready");
    process.on("SIGTERM", () => {
      console.log(`sent ${senders.reduce((n, s) => n + s.stop(), 0)}`);
      process.exit(0);
    });
  } else {
    const run = (argv) =>
      new Promise((resolve, reject) => {
        const p = spawn("taskset", ["-c", OTHER_CORE, a.loadgen, ...argv.map(String)], { stdio: ["ignore", "pipe", "inherit"] });
        let out = "";
        p.stdout.on("data", (d) => (out += d));
        p.on("exit", () => {
          const line = out.split("\n").filter((l) => l.startsWith("{")).pop();
          if (line) resolve(JSON.parse(line));
          else reject(new Error("loadgen gave no result"));
        });
      });
    const r = await fairnessRun(Number(a.port), run, { seconds: Number(a.seconds), heavy: Number(a.heavy) });
    const l = r.latency_us ?? {};
    console.log(JSON.stringify({ p50_us: l.p50, p99_us: l.p99, max_us: l.max, round_trips_per_s: r.per_sec, errors: r.errors, heavy_mb_per_s: Number(r.heavy_mb_per_s.toFixed(1)), heavy_messages: r.heavy_messages }));
    process.exit(0);
  }
}
