// The Python scenarios of `make bench` (issue 13): the /echo view written in Python, on the
// pulsec package (python/) and on python-socketio 5, the stack Pulse runs on today.
//
//   pulsec column     bench/python/pulsec_echo.py in <build>/python-venv (make bench installs the
//                     package there, linked against the release libpulsec)
//   socket.io column  bench/python/socketio_echo.py: python-socketio's AsyncServer under uvicorn
//                     with uvloop, httptools and websockets (Debian's python3-* packages)
//
// Both speak the protocol of examples/echo's /echo view, are one asyncio thread, and are pinned
// to the server core like every server of run.mjs, so round trips per second are per core.
// Targets: rr >= 10x python-socketio's round trips per core, and <= 1/4 of its memory per idle
// connection. The module interface is described in bench/README.md.

import { existsSync } from "node:fs";
import path from "node:path";

const T = { rrRatio: 10, idleRatio: 4 };

function servers(ctx) {
  const venv = path.join(ctx.BUILD, "python-venv/bin/python");
  for (const f of [venv, "/usr/bin/python3"])
    if (!existsSync(f)) throw new Error(`missing ${f}: make bench builds the Python venv`);
  // Named by the columns they appear in: the pulsec and socket.io columns of the Python rows.
  return [
    { name: "pulsec", cmd: [venv, path.join(ctx.ROOT, "bench/python/pulsec_echo.py"), "--max-connections", "19000"] },
    { name: "socket.io", cmd: ["/usr/bin/python3", path.join(ctx.ROOT, "bench/python/socketio_echo.py")] },
  ];
}

const plan = (ctx) => ({ idleConns: ctx.Q ? 500 : 3000, idleHold: ctx.Q ? 1 : 3, idleSettle: 2 });

export default {
  name: "python",

  steps(ctx) {
    const P = ctx.PLAN, I = plan(ctx), S = servers(ctx);
    const rr = ["-k", P.inflight, "-c", P.conns, "-d", P.duration, "-w", P.warmup];
    const loaded = P.warmup + P.duration + 8;
    return [
      { key: "pyRr", scenario: "rr", argv: () => rr, est: loaded, runs: 2, servers: S },
      { key: "pyEvents", scenario: "events", argv: () => rr, est: loaded, servers: S },
      {
        key: "pyIdle",
        scenario: "idle",
        argv: () => ["-c", I.idleConns, "-d", I.idleHold, "-w", I.idleSettle, "--connect-concurrency", 64],
        est: I.idleHold + I.idleSettle + 25,
        servers: S,
      },
    ];
  },

  rows(ctx, res) {
    const { fmt, kb, row, P = ctx.PLAN } = ctx;
    const I = plan(ctx);
    const withLat = (r) => `${fmt(r.per_sec)} ${r.unit}; ${ctx.latencyCell(r)}`;
    const idleB = (r) => r.server_proc.bytes_per_conn;
    return [
      row(`**Python rr** (pulsec package vs python-socketio): ${fmt(P.conns)} connections × ${P.inflight} requests in flight`, res.pyRr, withLat, (r) => r.per_sec),
      ctx.cpuRow(res.pyRr),
      row(`**Python events**: ${fmt(P.conns)} connections × ${P.inflight} echo events in flight`, res.pyEvents, withLat, (r) => r.per_sec),
      ctx.cpuRow(res.pyEvents),
      row(`**Python idle**: ${fmt(I.idleConns)} attached connections, server RSS per connection`, res.pyIdle, (r) => `${kb(idleB(r))} (${fmt(r.server_proc.rss_before_kb / 1024, 1)} → ${fmt(r.server_proc.rss_held_kb / 1024, 1)} MiB, ${fmt(r.connected)} attached)`, idleB),
    ];
  },

  targets(ctx, res) {
    const { fmt, kb, cpuUsPerOp, P = ctx.PLAN } = ctx;
    const I = plan(ctx);
    const p = res.pyRr.pulsec, s = res.pyRr["socket.io"];
    const perCpu = cpuUsPerOp(s) / cpuUsPerOp(p);
    const pi = res.pyIdle.pulsec, si = res.pyIdle["socket.io"];
    const idle = si.server_proc.bytes_per_conn / pi.server_proc.bytes_per_conn;
    return [
      {
        what: `Python: rr round trips per core at ${fmt(P.conns)} × ${P.inflight} ≥ ${T.rrRatio}× python-socketio's (issue 13)`,
        value: `${(p.per_sec / s.per_sec).toFixed(1)}× (${fmt(p.per_sec)} vs ${fmt(s.per_sec)} round trips/s; CPU per round trip ${fmt(cpuUsPerOp(p), 1)} vs ${fmt(cpuUsPerOp(s), 1)} µs, ${perCpu.toFixed(1)}×)`,
        met: p.per_sec / s.per_sec >= T.rrRatio && p.errors === 0,
      },
      {
        what: `Python: memory per idle connection ≤ 1/${T.idleRatio} of python-socketio's (issue 13)`,
        value: `1/${idle.toFixed(1)} (${kb(pi.server_proc.bytes_per_conn)} vs ${kb(si.server_proc.bytes_per_conn)}, ${fmt(pi.connected)} of ${fmt(I.idleConns)} attached)`,
        met: idle >= T.idleRatio && pi.connected === I.idleConns,
      },
    ];
  },

  method(ctx) {
    return [
      "- **Python rows** (issue 13): the same `/echo` view written in Python: `bench/python/pulsec_echo.py` on the pulsec",
      "  package (python/, in `build-release/python-venv`, linked against the release libpulsec) in the pulsec column, and",
      "  `bench/python/socketio_echo.py` on python-socketio 5's `AsyncServer` under uvicorn with uvloop, httptools and websockets",
      "  (Debian's packages; the stack Pulse runs on) in the socket.io column. Each is one asyncio thread on the server core.",
    ];
  },
};
