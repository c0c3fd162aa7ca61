// The core scenarios of `make bench` (issues 6 and 15): request/response and events at peak,
// paced at a half and a quarter of pulsec's peak, a light load, idle and recently active
// connections' memory, and connection set-up. Each runs on every server of ctx.SERVERS (the
// floor, pulsec, Socket.IO). The module interface is described in bench/README.md.

export default {
  name: "core",

  steps(ctx) {
    const P = ctx.PLAN;
    const rr = ["-c", P.conns, "-d", P.duration, "-w", P.warmup];
    const paced = (res, fraction) => ["-r", Math.round(res.rrPeak.pulsec.per_sec * fraction), "-k", 64, ...rr];
    const loaded = P.warmup + P.duration + 4;
    return [
      // The peak decides the CPU target and the paced rates: always the better of two runs.
      { key: "rrPeak", scenario: "rr", argv: () => ["-k", P.inflight, ...rr], est: loaded, runs: 2 },
      // The same load on the fixture's json_t handlers (ps_on), beside its raw-payload ones.
      { key: "rrJson", scenario: "rr", argv: () => ["-k", P.inflight, ...rr], est: loaded, servers: [jsonServer(ctx)] },
      { key: "rrHalf", scenario: "rr", argv: (res) => paced(res, 1 / 2), est: loaded },
      { key: "rrQuarter", scenario: "rr", argv: (res) => paced(res, 1 / 4), est: loaded },
      { key: "rrLight", scenario: "rr", argv: () => ["-c", P.lightConns, "-k", 1, "-d", Math.min(5, P.duration), "-w", 1], est: 9 },
      { key: "events", scenario: "events", argv: () => ["-k", P.inflight, ...rr], est: loaded, runs: 2 },
      { key: "idle", scenario: "idle", argv: () => ["-c", P.idleConns, "-d", P.idleHold, "-w", P.idleSettle, "--connect-concurrency", 256], est: P.idleHold + P.idleSettle + 12 },
      // Every connection sends one request a second: the memory of connections active in the
      // last second, against the idle ones above.
      { key: "active", scenario: "rr", argv: () => ["-c", P.idleConns, "-r", P.idleConns, "-k", 4, "-d", P.activeHold, "-w", 2, "--connect-concurrency", 256], est: P.activeHold + 16 },
      { key: "connect", scenario: "connect", argv: () => ["-c", P.connectors, "-d", P.duration, "-w", 2], est: P.duration + 6 },
    ];
  },

  rows(ctx, res) {
    const { fmt, ms, kb, row, P = ctx.PLAN } = ctx;
    const rows = [];
    const perSec = (r) => `${fmt(r.per_sec)} ${r.unit}`;
    const tp = (r) => r.per_sec;
    const p99 = (r) => r.latency_us?.p99;
    const withLat = (r) => `${perSec(r)}; ${ctx.latencyCell(r)}`;
    rows.push(row(`**rr**: ${fmt(P.conns)} connections × ${P.inflight} requests in flight`, res.rrPeak, withLat, tp));
    rows.push(ctx.cpuRow(res.rrPeak));
    if (res.rrJson) {
      // pulsec's column is the fixture on ps_on (json_t payloads); the others are the rr row's.
      const json = { ...res.rrPeak, pulsec: res.rrJson[jsonServer(ctx).name] };
      rows.push(row(`**rr, json_t API**: the same load, the fixture's \`echo\` on \`ps_on\` (\`--json-api\`); floor and socket.io as above`, json, withLat, tp));
      rows.push(ctx.cpuRow(json));
    }
    for (const [key, what] of [["rrHalf", "half"], ["rrQuarter", "a quarter"]])
      rows.push(row(`**rr paced** at ${fmt(res[key].pulsec.rate)} round trips/s (${what} of pulsec's peak), ${fmt(P.conns)} connections; ratio of p99`, res[key], (r) => `${fmt(r.per_sec)}/s achieved; ${ctx.latencyCell(r)}`, p99), ctx.cpuRow(res[key]));
    rows.push(row(`**rr light**: ${P.lightConns} connections × 1 in flight`, res.rrLight, withLat, tp), ctx.cpuRow(res.rrLight));
    rows.push(row(`**events**: ${fmt(P.conns)} connections × ${P.inflight} echo events in flight`, res.events, withLat, tp), ctx.cpuRow(res.events));
    const idleB = (r) => r.server_proc.bytes_per_conn;
    rows.push(row(`**idle**: ${fmt(P.idleConns)} attached connections, server RSS per connection`, res.idle, (r) => `${kb(idleB(r))} (${fmt(r.server_proc.rss_before_kb / 1024, 1)} → ${fmt(r.server_proc.rss_held_kb / 1024, 1)} MiB, ${fmt(r.connected)} attached in ${fmt(r.ramp_s, 1)} s)`, idleB));
    const extra = (name) => activeExtra(res, name);
    const activeB = (r) => ((r.server_proc.rss_end_kb - r.server_proc.rss_before_kb) * 1024) / r.connected;
    rows.push(row(`**active**: the same ${fmt(P.idleConns)} connections each sending a request a second; server RSS per connection (ratio of these)`, res.active, (r) => `${kb(activeB(r))}: ${kb(extra(r.server))} more than idle (${fmt(r.per_sec)} requests/s achieved; p99 ${ms(r.latency_us.p99)})`, activeB));
    rows.push(row(`**connect**: ${P.connectors} parallel connectors, handshake + CONNECT + attach + close`, res.connect, (r) => `${perSec(r)}; p50 ${ms(r.latency_us.p50)} · p99 ${ms(r.latency_us.p99)}`, tp), ctx.cpuRow(res.connect));
    return rows;
  },

  targets(ctx, res) {
    const { fmt, ms, kb, cpuUsPerOp, P = ctx.PLAN } = ctx;
    const T = { cpuUs: 1.6, cpuMilestoneUs: 2.5, p99Us: 2000, idleBytes: 2048, activeBytes: 4096 };
    const out = [];
    for (const [key, what] of [["rrPeak", "round trip at rr"], ["events", "echo at events"]]) {
      const p = cpuUsPerOp(res[key].pulsec), s = cpuUsPerOp(res[key]["socket.io"]), f = cpuUsPerOp(res[key].floor);
      const value = `${fmt(p, 2)} µs (socket.io ${fmt(s, 2)}, a tenth of it ${fmt(s / 10, 2)}; floor ${fmt(f, 2)})`;
      out.push({ what: `server CPU per ${what} ${fmt(P.conns)} × ${P.inflight} ≤ ${T.cpuUs} µs, a tenth of socket.io's`, value, met: p <= T.cpuUs });
      out.push({ what: `↳ milestone: ≤ ${T.cpuMilestoneUs} µs`, value: `${fmt(p, 2)} µs`, met: p <= T.cpuMilestoneUs });
    }
    const half = res.rrHalf.pulsec;
    out.push({
      what: `p99 latency at half of pulsec's peak, paced, ${fmt(P.conns)} connections ≤ ${T.p99Us / 1000} ms`,
      value: `${ms(half.latency_us.p99)} at ${fmt(half.per_sec)} round trips/s (floor ${ms(res.rrHalf.floor.latency_us.p99)} at the same rate)`,
      met: half.latency_us.p99 <= T.p99Us && half.errors === 0,
    });
    const idle = res.idle.pulsec;
    out.push({
      what: `server RSS per idle connection at ${fmt(P.idleConns)} connections ≤ ${kb(T.idleBytes)}`,
      value: `${fmt(idle.server_proc.bytes_per_conn)} bytes (${kb(idle.server_proc.bytes_per_conn)}), ${fmt(idle.connected)} attached`,
      met: idle.server_proc.bytes_per_conn <= T.idleBytes && idle.connected === P.idleConns,
    });
    const extra = activeExtra(res, "pulsec");
    out.push({
      what: `extra RSS of a connection active in the last second ≤ ${kb(T.activeBytes)}`,
      value: `${fmt(extra)} bytes (${kb(extra)}) more than an idle one`,
      met: extra <= T.activeBytes && res.active.pulsec.errors === 0,
    });
    return out;
  },

  method: (ctx) => [
    "- **rr**: each connection keeps k `echo` requests in flight on its channel (closed loop); the rr and events rows at " +
      `${ctx.fmt(ctx.PLAN.conns)} connections are run twice per server, the better kept. **rr paced**: requests at a fixed total rate ` +
      "(spread every 100 µs by a timerfd) over the same connections, the same rate for every server.",
    "- **events**: the client emits `echo` events; the server's handler emits each back; a window of k per connection.",
    "- **idle**: the server's VmRSS (/proc/PID/status) on the fresh server before the ramp and after holding every connection " +
      `attached for ${ctx.PLAN.idleSettle} + ${ctx.PLAN.idleHold} s; the difference divided by the connections.`,
    "- **active**: the same number of connections, each sending one request a second (paced rr at that rate) for " +
      `${ctx.PLAN.activeHold} s; its RSS per connection at the end, less the idle row's, is what a connection active in the last second costs.`,
    "- **connect**: each connector loops: TCP connect, upgrade, open, CONNECT, attach, attach_ack, then a WebSocket close " +
      "(the server closes TCP, so TIME_WAIT stays on its side). The rate counts attach_acks.",
  ],
};

// The echo fixture with --json-api: its "echo" answered by a ps_on handler with a json_t payload.
function jsonServer(ctx) {
  return { name: "pulsec-json", cmd: [...ctx.SERVERS.pulsec.cmd, "--json-api"] };
}

// RSS per connection of the active run beyond the idle run's, in bytes.
function activeExtra(res, name) {
  const a = res.active[name], i = res.idle[name];
  if (!a?.server_proc || !i?.server_proc) return null;
  return ((a.server_proc.rss_end_kb - a.server_proc.rss_before_kb) * 1024) / a.connected - i.server_proc.bytes_per_conn;
}
