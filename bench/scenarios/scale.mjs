// The scale-out scenarios of `make bench` (issue 11): topics, workers, nodes.
//
//   fanout   one publisher, N channels joined to one topic on one node (bench/fanout: the
//            subscribers attach /echo and `join`, the publisher keeps k `publish` requests in
//            flight): deliveries/s and server CPU per delivery, pulsec (ps_publish) against the
//            Socket.IO baseline (io.to(room).emit) with the same clients. Target: >= 10x the
//            baseline's deliveries per core.
//   workers  rr (the core scenario's load) against `echo --workers 2` and one process: round
//            trips/s, and every process's CPU. Target: >= 1.7x.
//   cross    publish-to-delivery latency through Redis: the publisher on node A, subscribers on
//            node B (two `echo --redis` on one redis-server started here), paced; and the same
//            load inside one node for reference.
//
// Servers are started by this module (with --port 0, pinned like the core scenarios: servers
// on core 0, clients on core 1, unless a row says otherwise) and stopped with SIGTERM.
// The module interface is in bench/README.md.

import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const SERVER_CORE = "0";
const CLIENT_CORE = "1";

function readStat(pid) {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /s, "").split(" ");
    return { utime: Number(f[11]), stime: Number(f[12]) };
  } catch {
    return null;
  }
}

/** The worker processes of a supervisor (its children). */
function children(pid) {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Starts cmd (pinned with taskset when `core` is given), resolves once it listens. */
function start(cmd, { core = SERVER_CORE, env } = {}) {
  const argv = core ? ["-c", core, ...cmd, "--port", "0"] : [...cmd, "--port", "0"];
  const proc = spawn(core ? "taskset" : argv[0], core ? argv : argv.slice(1), { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
  let out = "";
  proc.stderr.on("data", (d) => (out += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${cmd.join(" ")} did not start:\n${out}`)), 30000);
    proc.on("exit", (code) => reject(new Error(`${cmd.join(" ")} exited with ${code}:\n${out}`)));
    proc.stdout.on("data", (d) => {
      out += d;
      const m = /listening on http:\/\/\S+:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        proc.removeAllListeners("exit");
        resolve({ proc, pid: proc.pid, port: Number(m[1]), output: () => out });
      }
    });
  });
}

async function stop(s, graceMs = 8000) {
  if (!s || s.proc.exitCode !== null) return;
  const exited = new Promise((r) => s.proc.on("exit", r));
  s.proc.kill("SIGTERM");
  const t = setTimeout(() => s.proc.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(t);
}

/** Runs a client binary pinned to the client core; resolves with its JSON line. */
function client(bin, argv, { core = CLIENT_CORE, timeoutS = 300 } = {}) {
  const args = core ? ["-c", core, bin, ...argv.map(String)] : argv.map(String);
  const proc = spawn(core ? "taskset" : bin, args, { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  proc.stdout.on("data", (d) => (out += d));
  proc.stderr.on("data", (d) => process.stderr.write(String(d).replace(/^/gm, "    ")));
  const killer = setTimeout(() => proc.kill("SIGKILL"), timeoutS * 1000);
  return new Promise((resolve, reject) => {
    proc.on("exit", (code) => {
      clearTimeout(killer);
      const line = out.split("\n").filter((l) => l.startsWith("{")).pop();
      if (!line) return reject(new Error(`${bin} ${argv.join(" ")} exited with ${code}, no result`));
      resolve(JSON.parse(line));
    });
  });
}

/** A redis-server on a unix socket in a temporary directory (cross scenario). */
async function startRedis() {
  const dir = mkdtempSync(path.join(os.tmpdir(), "pulsec-bench-redis-"));
  const sock = path.join(dir, "redis.sock");
  const proc = spawn("taskset", ["-c", SERVER_CORE, "redis-server", "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", dir, "--loglevel", "warning"], { stdio: "ignore" });
  for (let i = 0; i < 200 && !existsSync(sock); i++) await sleep(25);
  await sleep(100);
  return {
    url: `unix://${sock}`,
    async stop() {
      const exited = new Promise((r) => proc.on("exit", r));
      proc.kill("SIGTERM");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export default {
  name: "scale",

  steps(ctx) {
    const { Q, BUILD, SERVERS } = ctx;
    const P = ctx.PLAN;
    const FANOUT = path.join(BUILD, "bench/fanout");
    const ECHO = path.join(BUILD, "examples/echo");
    const subs = Q ? 1000 : 10000;
    const dur = Q ? 2 : 6;
    const fanoutRun = async (c, server, argv) => {
      const s = await start(server.cmd);
      try {
        await sleep(300);
        const r = await client(FANOUT, ["--port", s.port, "--server-pid", s.pid, "--label", server.name, ...argv]);
        r.args = ["fanout", ...argv].join(" ");
        return r;
      } finally {
        await stop(s);
      }
    };
    const rrArgv = ["-c", P.conns, "-k", P.inflight, "-d", P.duration, "-w", P.warmup];
    // Workers: the supervisor's children are the servers; their CPU is summed by the loadgen.
    const workersRun = (workers, serverCore, clientCore) => async (c, server, argv) => {
      const s = await start([ECHO, "--max-connections", "19000", ...(workers > 1 ? ["--workers", String(workers)] : [])], { core: serverCore });
      try {
        await sleep(500);
        const pids = workers > 1 ? children(s.pid) : [s.pid];
        const r = await client(path.join(BUILD, "bench/loadgen"), ["rr", "--port", s.port, ...pids.flatMap((p) => ["--server-pid", p]), "--label", server.name, ...argv], { core: clientCore });
        r.workers = workers;
        r.server_core = serverCore ?? "any";
        r.client_core = clientCore ?? "any";
        r.args = ["rr", ...argv].join(" ");
        return r;
      } finally {
        await stop(s);
      }
    };
    const crossRun = (sameNode) => async (c, server, argv) => {
      const redis = await startRedis();
      const a = await start([ECHO, "--redis", redis.url]);
      const b = sameNode ? a : await start([ECHO, "--redis", redis.url]);
      try {
        await sleep(800); // both connected to Redis
        const r = await client(FANOUT, ["--port", a.port, "--sub-port", b.port, "--server-pid", a.pid, ...(sameNode ? [] : ["--server-pid", b.pid]), "--label", server.name, ...argv]);
        r.args = ["fanout", ...argv].join(" ");
        r.same_node = sameNode;
        return r;
      } finally {
        await stop(a);
        if (!sameNode) await stop(b);
        await redis.stop();
      }
    };
    const one = { name: "pulsec", cmd: [ECHO] };
    const crossArgv = ["-c", Q ? 50 : 100, "-r", 1000, "-d", dur, "-w", 1];
    return [
      { key: "fanout", scenario: "fanout", argv: () => ["-c", subs, "-k", 8, "-d", dur, "-w", 2], est: dur + 20, servers: [SERVERS.pulsec, SERVERS["socket.io"]], run: fanoutRun },
      { key: "workers1", scenario: "rr", argv: () => rrArgv, est: P.duration + P.warmup + 6, servers: [one], run: workersRun(1, SERVER_CORE, CLIENT_CORE) },
      { key: "workers2", scenario: "rr", argv: () => rrArgv, est: P.duration + P.warmup + 6, servers: [one], run: workersRun(2, null, CLIENT_CORE) },
      { key: "workers2free", scenario: "rr", argv: () => rrArgv, est: P.duration + P.warmup + 6, servers: [one], run: workersRun(2, null, null) },
      { key: "crossLocal", scenario: "fanout", argv: () => crossArgv, est: dur + 10, servers: [one], run: crossRun(true) },
      { key: "cross", scenario: "fanout", argv: () => crossArgv, est: dur + 10, servers: [one], run: crossRun(false) },
    ];
  },

  rows(ctx, res) {
    const { fmt, ms } = ctx;
    const rows = [];
    const f = res.fanout ?? {};
    const perCore = (r) => (r?.server_cpu ? r.deliveries_per_sec / r.server_cpu : null);
    const fanoutCell = (r) =>
      `${fmt(r.deliveries_per_sec)} deliveries/s (${fmt(r.publishes_per_sec, 1)} publishes/s × ${fmt(r.subscribers)}); ` +
      `${fmt(r.server_us_per_delivery, 2)} µs server CPU per delivery = ${fmt(perCore(r))} per core; p50 ${ms(r.latency_us.p50)} · p99 ${ms(r.latency_us.p99)}` +
      (r.missing ? `; **${fmt(r.missing)} missing**` : "");
    rows.push(ctx.row(`**fanout**: 1 publisher, ${fmt(f.pulsec?.subscribers)} channels joined to one topic, 8 publishes in flight; ratio of deliveries per core`, f, fanoutCell, perCore));
    const w = (key) => res[key]?.pulsec;
    const wCell = (r) =>
      r ? `${fmt(r.per_sec)} round trips/s; server CPU ${fmt(r.server_proc?.cpu * 100)}% (${fmt((r.server_proc?.cpu * 1e6) / r.per_sec, 2)} µs/op), loadgen ${fmt(r.loadgen_cpu * 100)}%, machine ${fmt(r.machine_cpu * 100)}%` : "–";
    for (const [key, label] of [
      ["workers1", "**workers**: rr, 1 process on core 0, loadgen on core 1"],
      ["workers2", "↳ 2 workers (both cores), loadgen on core 1"],
      ["workers2free", "↳ 2 workers, nothing pinned"],
    ]) {
      const base = w("workers1");
      const r = w(key);
      rows.push({ label, cells: { pulsec: wCell(r) }, ratios: { floor: key === "workers1" || !r || !base ? "–" : `${(r.per_sec / base.per_sec).toFixed(2)}× 1 process`, "socket.io": "–" } });
    }
    const cCell = (r) => (r ? `p50 ${ms(r.latency_us.p50)} · p99 ${ms(r.latency_us.p99)} · p99.9 ${ms(r.latency_us.p999)} (${fmt(r.publishes_per_sec)} publishes/s × ${fmt(r.subscribers)}, ${fmt(r.missing)} missing)` : "–");
    rows.push({ label: "**cross-node**: publish → Redis → another node → its subscribers, paced; delivery latency", cells: { pulsec: cCell(res.cross?.pulsec) }, ratios: {} });
    rows.push({ label: "↳ the same load inside one node (no Redis hop), for reference", cells: { pulsec: cCell(res.crossLocal?.pulsec) }, ratios: {} });
    return rows;
  },

  targets(ctx, res) {
    const { fmt } = ctx;
    const out = [];
    const p = res.fanout?.pulsec, s = res.fanout?.["socket.io"];
    if (p && s) {
      const pc = p.deliveries_per_sec / p.server_cpu, sc = s.deliveries_per_sec / s.server_cpu;
      out.push({ what: "fan-out deliveries per core ≥ 10× the Socket.IO baseline (io.to(room).emit)", value: `${(pc / sc).toFixed(1)}× (${fmt(pc)} vs ${fmt(sc)} deliveries per core-second)`, met: pc / sc >= 10 && !p.missing });
    }
    const w1 = res.workers1?.pulsec, w2 = res.workers2?.pulsec, w2f = res.workers2free?.pulsec;
    if (w1 && w2) {
      const best = Math.max(w2.per_sec, w2f?.per_sec ?? 0);
      out.push({ what: "rr with 2 workers ≥ 1.7× 1 process", value: `${(best / w1.per_sec).toFixed(2)}× (${fmt(best)} vs ${fmt(w1.per_sec)} round trips/s)`, met: best / w1.per_sec >= 1.7 });
    }
    return out;
  },

  analysis(ctx, res) {
    const { fmt } = ctx;
    const out = [];
    const w1 = res.workers1?.pulsec, w2 = res.workers2?.pulsec, w2f = res.workers2free?.pulsec;
    if (w1 && w2) {
      const best = [w2, w2f].filter(Boolean).reduce((a, b) => (a.per_sec >= b.per_sec ? a : b));
      if (best.per_sec / w1.per_sec < 1.7) {
        const srvUs = (r) => (r.server_proc.cpu * 1e6) / r.per_sec;
        const lgUs = (r) => (r.loadgen_cpu * 1e6) / r.per_sec;
        const ceiling = 2e6 / (srvUs(w1) + lgUs(w1));
        out.push(
          `- **workers ≥ 1.7× (missed).** The machine has 2 cores and the load generator needs one of them: at 1 process it spends ` +
            `${fmt(lgUs(w1), 2)} µs of CPU per round trip against the server's ${fmt(srvUs(w1), 2)} µs. With both cores shared by the ` +
            `workers and the loadgen, at most 2 cores ÷ ${fmt(srvUs(w1) + lgUs(w1), 2)} µs = ${fmt(ceiling)} round trips/s fit ` +
            `(${(ceiling / w1.per_sec).toFixed(2)}× 1 process), whatever the server does; measured: ${fmt(best.per_sec)}/s, server ` +
            `${fmt(best.server_proc.cpu * 100)}% + loadgen ${fmt(best.loadgen_cpu * 100)}% of the machine's 200%. ` +
            `The workers scale the server; this machine cannot also host a client that drives them at twice the rate.`,
        );
      }
    }
    const p = res.fanout?.pulsec, s = res.fanout?.["socket.io"];
    if (p && s) {
      const ratio = (p.deliveries_per_sec / p.server_cpu) / (s.deliveries_per_sec / s.server_cpu);
      const us = (r, cpu) => (cpu * 1e6) / r.deliveries_per_sec;
      const budget = s.server_us_per_delivery / 10;
      if (ratio < 10 && p.server_cpu_user !== undefined) {
        const user = us(p, p.server_cpu_user), sys = us(p, p.server_cpu - p.server_cpu_user);
        out.push(
          `- **fan-out ≥ 10× (missed: ${ratio.toFixed(1)}×).** 10× socket.io's ${fmt(s.server_us_per_delivery, 2)} µs per delivery leaves ` +
            `${fmt(budget, 2)} µs. pulsec spends ${fmt(user, 2)} µs in user space and ${fmt(sys, 2)} µs in the kernel per delivery ` +
            `(socket.io: ${fmt(us(s, s.server_cpu_user ?? 0), 2)} + ${fmt(us(s, s.server_cpu - (s.server_cpu_user ?? 0)), 2)} µs). ` +
            (sys >= budget
              ? `The kernel's share alone is over the budget: `
              : `The kernel's share takes ${fmt((sys / budget) * 100)}% of the budget: `) +
            `each member costs a write(2) on loopback, where the receiver's TCP work is charged to the writer, and pulsec already ` +
            `writes each member once per loop pass whatever the number of publishes that reached it in the pass (net.h, ` +
            `ps__listener_cork; with 8 publishes in flight a write carries up to 8 of them), where socket.io writes once per ` +
            `delivery. User space per delivery is framing and copying the member's own envelope (its channel id is in it: ` +
            `socket.io sends the room one identical packet).`,
        );
      }
    }
    return out;
  },

  method(ctx) {
    return [
      "- **fanout** (`bench/fanout`, this module): subscribers attach `/echo` and send `join {topic}` (the echo fixture's `ps_join`; the baseline's `socket.join`), then one publisher connection keeps 8 `publish` requests in flight (`ps_publish`; the baseline's `io.to(room).emit`, one packet for the whole room). Each subscriber counts its `tick` events; latency is from the moment the publisher sent the request to the moment a subscriber read the event (one clock, one process). Server CPU per delivery is the server's user + system CPU over the measured window ÷ deliveries. pulsec's envelope names each member's own channel; the baseline's names the topic (one packet for all), so the baseline does less work per member.",
      "- **workers**: the core rr load against one process pinned to core 0 (loadgen on core 1), and against `echo --workers 2` (two processes on the same port with SO_REUSEPORT) with the loadgen on core 1 or unpinned; server CPU is every worker's, summed (`--server-pid` per worker).",
      "- **cross-node**: a redis-server on a unix socket, two `echo --redis` nodes (servers on core 0, client on core 1); publishes paced at 1000/s on node A, subscribers on node B; the reference run puts both on node A.",
    ];
  },
};
