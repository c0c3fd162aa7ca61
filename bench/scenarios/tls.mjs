// The cost of TLS per round trip (issue 14): the same request/response load (loadgen `rr`)
// against pulsec's echo fixture in the clear and over TLS (--tls-cert/--tls-key with a
// certificate openssl mints for the run; the loadgen's --tls: wss://, TLS 1.3 with OpenSSL's
// defaults), so the difference in server CPU per round trip, throughput and latency is what TLS
// costs. pulsec only: the other servers have no TLS here. The module interface is described in
// bench/README.md.

import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import path from "node:path";

/** A throw-away self-signed certificate for 127.0.0.1 in `dir`. */
function mint(dir) {
  mkdirSync(dir, { recursive: true });
  const cert = path.join(dir, "tls-cert.pem");
  const key = path.join(dir, "tls-key.pem");
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
  { stdio: "ignore" });
  return { cert, key };
}

const shape = (ctx) => {
  const Q = ctx.Q;
  return {
    loaded: ["-c", Q ? 20 : 100, "-k", 8, "-d", Q ? 2 : 6, "-w", Q ? 1 : 2],
    light: ["-c", 10, "-k", 1, "-d", Q ? 2 : 4, "-w", 1],
  };
};

export default {
  name: "tls",

  steps(ctx) {
    const { cert, key } = mint(ctx.WORK);
    const clear = ctx.SERVERS.pulsec;
    const tls = { name: "pulsec", cmd: [...clear.cmd, "--tls-cert", cert, "--tls-key", key] };
    const { loaded, light } = shape(ctx);
    const est = (argv) => Number(argv[argv.indexOf("-d") + 1]) + Number(argv[argv.indexOf("-w") + 1]) + 4;
    return [
      { key: "tlsLoadedClear", scenario: "rr", argv: () => loaded, servers: [clear], est: est(loaded) },
      { key: "tlsLoaded", scenario: "rr", argv: () => [...loaded, "--tls"], servers: [tls], est: est(loaded) },
      { key: "tlsLightClear", scenario: "rr", argv: () => light, servers: [clear], est: est(light) },
      { key: "tlsLight", scenario: "rr", argv: () => [...light, "--tls"], servers: [tls], est: est(light) },
    ];
  },

  rows(ctx, res) {
    const { fmt, cpuUsPerOp, latencyCell } = ctx;
    const { loaded, light } = shape(ctx);
    const cell = (clear, tls) => {
      const a = cpuUsPerOp(clear), b = cpuUsPerOp(tls);
      return `over TLS ${fmt(tls.per_sec)}/s, ${fmt(b, 2)} µs CPU per round trip, ${latencyCell(tls)}; in the clear ` +
        `${fmt(clear.per_sec)}/s, ${fmt(a, 2)} µs, ${latencyCell(clear)}: **TLS +${fmt(b - a, 2)} µs per round trip** (${fmt((b / a - 1) * 100)}%)`;
    };
    const rows = [];
    for (const [key, argv, what] of [["tlsLoaded", loaded, "in flight"], ["tlsLight", light, "in flight"]]) {
      const clear = res[`${key}Clear`]?.pulsec, tls = res[key]?.pulsec;
      if (!clear || !tls) continue;
      const c = argv[argv.indexOf("-c") + 1], k = argv[argv.indexOf("-k") + 1];
      rows.push({ label: `**rr over TLS** against rr in the clear: ${fmt(c)} connections × ${k} ${what}`, cells: { pulsec: cell(clear, tls) }, ratios: {} });
    }
    return rows;
  },

  analysis(ctx, res) {
    const { fmt, cpuUsPerOp } = ctx;
    const clear = res.tlsLoadedClear?.pulsec, tls = res.tlsLoaded?.pulsec;
    if (!clear || !tls) return [];
    const a = cpuUsPerOp(clear), b = cpuUsPerOp(tls);
    return [
      `TLS (rows "rr over TLS"): at the same load the server spends ${fmt(b - a, 2)} µs more CPU per round trip over TLS ` +
        `(${fmt(b, 2)} against ${fmt(a, 2)} µs): one record decrypted and one encrypted per round trip (AES-GCM), plus ` +
        "OpenSSL's record-buffer allocation, which SSL_MODE_RELEASE_BUFFERS trades for ~15 KB less memory per idle " +
        "connection (docs/SECURITY.md#tls). Handshakes happen in the ramp, outside the measured window.",
      "",
    ];
  },

  method: () => [
    "- TLS: the loadgen's `--tls` speaks wss:// through OpenSSL memory BIOs, without verifying the certificate (it measures cost, not trust); the server's certificate is a P-256 one minted by openssl for the run.",
  ],
};
