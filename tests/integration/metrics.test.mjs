// GET /metrics (issue 14): the Prometheus text exposition of the echo fixture, checked by
// Prometheus's own tools (Debian's `promtool check metrics`, and the parser of Debian's
// python3-prometheus-client), with values that move as traffic flows: sessions and channels up
// and down, counters up, both latency histograms filling. Off by default; --metrics serves it on
// the main port, --metrics-listen on an address of its own (then not on the main port).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import net from 'node:net';
import {
  startServer, stopClean, killAll, closeClients, makeClient, waitConnect, ackRoundTrip, httpRaw,
  request, sleep, withTimeout,
} from './lib/server.mjs';
import { ChannelTestClient } from './lib/channels.mjs';
import { makeCa } from './lib/tls.mjs';

after(async () => {
  closeClients();
  await killAll();
});

/** GET /metrics on host:port over plain HTTP; returns { status, headers, text }. */
async function scrape(target, path = '/metrics') {
  const r = await httpRaw(target, request('GET', path, { close: true }));
  r.conn.destroy();
  return r;
}

/** promtool's verdict on an exposition: { ok, out }. */
function promtool(text) {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  return { ok: r.status === 0, out: `${r.stdout}${r.stderr}` };
}

/** The families as the official Python client parses them: { name: { type, samples: [[name, labels, value]] } }. */
function pyParse(text) {
  const script = `
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = {"type": f.type, "samples": [[s.name, s.labels, s.value] for s in f.samples]}
print(json.dumps(out))
`;
  // Debian's python3 (the package lives in /usr/lib/python3/dist-packages).
  return JSON.parse(execFileSync('/usr/bin/python3', ['-c', script], { input: text, encoding: 'utf8' }));
}

const value = (fams, family, sample = family, labels = {}) => {
  const f = fams[family];
  assert.ok(f, `no family ${family}`);
  const s = f.samples.find(([n, l]) => n === sample && Object.entries(labels).every(([k, v]) => l[k] === v));
  assert.ok(s, `no sample ${sample} ${JSON.stringify(labels)} in ${family}`);
  return s[2];
};

describe('--metrics on the main port', () => {
  let srv;
  before(async () => {
    srv = await startServer(['--metrics']);
  });
  after(async () => {
    closeClients();
    await stopClean(srv);
  });

  test('text format 0.0.4 that promtool accepts and the Python client parses; every ps_server_stats field', async () => {
    const r = await scrape(srv);
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
    const lint = promtool(r.text);
    assert.ok(lint.ok, `promtool check metrics:\n${lint.out}\n--- exposition ---\n${r.text}`);
    assert.equal(lint.out.trim(), '', `promtool lint findings:\n${lint.out}`);
    const fams = pyParse(r.text);
    for (const [name, type] of [
      ['pulsec_connections', 'gauge'], ['pulsec_sessions', 'gauge'], ['pulsec_views', 'gauge'],
      ['pulsec_channels', 'gauge'], ['pulsec_sessions_accepted', 'counter'], ['pulsec_messages_received', 'counter'],
      ['pulsec_messages_sent', 'counter'], ['pulsec_messages_dropped', 'counter'], ['pulsec_protocol_errors', 'counter'],
      ['pulsec_slow_consumers', 'counter'], ['pulsec_connections_refused', 'counter'], ['pulsec_websocket_buffers', 'gauge'],
      ['pulsec_queued_bytes', 'gauge'], ['pulsec_request_duration_seconds', 'histogram'],
      ['pulsec_server_request_duration_seconds', 'histogram'], ['pulsec_server_requests', 'counter'],
      ['pulsec_build_info', 'gauge'], ['pulsec_start_time_seconds', 'gauge'],
    ]) {
      assert.equal(fams[name]?.type, type, `${name}: ${JSON.stringify(fams[name])}`);
    }
    // Every field of the stats the echo fixture reports has its metric (same names, same values
    // for the gauges that cannot move between the two reads).
    const c = await ChannelTestClient.connect(srv.url);
    const v = await c.attachEcho();
    const st = await c.stats(v.channel);
    const f2 = pyParse((await scrape(srv)).text);
    assert.equal(value(f2, 'pulsec_views'), st.views);
    assert.equal(value(f2, 'pulsec_channels'), st.channels);
    assert.equal(value(f2, 'pulsec_sessions'), st.sessions);
    c.disconnect();
    // GET only (HEAD too); no body for HEAD.
    const head = await httpRaw(srv, request('HEAD', '/metrics', { close: true }), { head: true });
    head.conn.destroy();
    assert.equal(head.status, 200);
    const post = await httpRaw(srv, request('POST', '/metrics', { body: 'x', close: true }));
    post.conn.destroy();
    assert.equal(post.status, 405);
    assert.equal((await scrape(srv, '/healthz')).status, 200, '/healthz stays');
  });

  test('values move with traffic: sessions, channels, counters, both histograms, queued bytes', async () => {
    const before = pyParse((await scrape(srv)).text);
    const clients = [];
    for (let i = 0; i < 3; i++) {
      const c = await ChannelTestClient.connect(srv.url);
      const v = await c.attachEcho();
      clients.push({ c, v });
    }
    const during = pyParse((await scrape(srv)).text);
    assert.equal(value(during, 'pulsec_sessions') - value(before, 'pulsec_sessions'), 3);
    assert.equal(value(during, 'pulsec_channels') - value(before, 'pulsec_channels'), 3);
    assert.ok(value(during, 'pulsec_connections') >= value(before, 'pulsec_connections') + 3);
    // Client requests: 10 each, one deferred by 60 ms (the histogram must see it above 50 ms).
    for (const { c, v } of clients) {
      for (let i = 0; i < 10; i++) assert.equal((await c.request(v.channel, 'echo', i)).payload, i);
    }
    assert.deepEqual((await clients[0].c.request(clients[0].v.channel, 'defer', { ms: 60 })).payload, { ms: 60 });
    // Server requests: one answered, one answered with an error, one left to time out.
    const [{ c: a, v: av }] = clients;
    a.answer(av.channel, 'q-ok', (p) => ({ payload: p }));
    a.answer(av.channel, 'q-err', () => ({ error: 'nope' }));
    a.emit(av.channel, 'ask', { event: 'q-ok', payload: 1, timeout_ms: 5000 });
    a.emit(av.channel, 'ask', { event: 'q-err', payload: 2, timeout_ms: 5000 });
    a.emit(av.channel, 'ask', { event: 'q-silent', payload: 3, timeout_ms: 100 });
    await withTimeout((async () => { while (a.log.filter((m) => m.event === 'ask:result').length < 3) await sleep(10); })(), 5000, 'three ask results');
    const after1 = pyParse((await scrape(srv)).text);
    const n = (f, name) => value(f, name, `${name}_count`);
    assert.equal(n(after1, 'pulsec_request_duration_seconds') - n(before, 'pulsec_request_duration_seconds'), 31);
    const bucket = (f, le) => value(f, 'pulsec_request_duration_seconds', 'pulsec_request_duration_seconds_bucket', { le });
    assert.ok(bucket(after1, '+Inf') - bucket(after1, '0.05') >= 1, 'the 60 ms deferred reply is above the 0.05 bucket');
    // libuv starts the fixture's 60 ms timer from the loop's cached clock, which can be a few ms
    // older than the request's arrival: the real wait is at least 50 ms, not always 60.
    assert.ok(value(after1, 'pulsec_request_duration_seconds', 'pulsec_request_duration_seconds_sum') >= 0.05);
    assert.equal(n(after1, 'pulsec_server_request_duration_seconds') - n(before, 'pulsec_server_request_duration_seconds'), 2);
    const outcome = (f, o) => value(f, 'pulsec_server_requests', 'pulsec_server_requests_total', { outcome: o });
    assert.equal(outcome(after1, 'ok') - outcome(before, 'ok'), 1);
    assert.equal(outcome(after1, 'error') - outcome(before, 'error'), 1);
    assert.equal(outcome(after1, 'timeout') - outcome(before, 'timeout'), 1);
    const recv = (f) => value(f, 'pulsec_messages_received', 'pulsec_messages_received_total');
    const sent = (f) => value(f, 'pulsec_messages_sent', 'pulsec_messages_sent_total');
    assert.ok(recv(after1) - recv(before) >= 36, `received ${recv(after1) - recv(before)}`);
    assert.ok(sent(after1) - sent(before) >= 36, `sent ${sent(after1) - sent(before)}`);
    assert.ok(promtool((await scrape(srv)).text).ok);
    // Leaving: gauges come back down, counters stay.
    for (const { c } of clients) c.disconnect();
    await withTimeout((async () => {
      while (value(pyParse((await scrape(srv)).text), 'pulsec_sessions') !== value(before, 'pulsec_sessions')) await sleep(20);
    })(), 5000, 'sessions back to the start');
    const gone = pyParse((await scrape(srv)).text);
    assert.equal(value(gone, 'pulsec_channels'), value(before, 'pulsec_channels'));
    const accepted = (f) => value(f, 'pulsec_sessions_accepted', 'pulsec_sessions_accepted_total');
    assert.ok(accepted(gone) >= accepted(before) + 3);
  });

  test('queued bytes: output a client leaves unread shows up, then drains', { timeout: 30000 }, async () => {
    const c = await ChannelTestClient.connect(srv.url);
    const v = await c.attachEcho();
    const raw = c.socket.io.engine.transport.ws._socket;
    raw.pause();
    const big = 'z'.repeat(200_000);
    for (let i = 0; i < 40; i++) c.emit(v.channel, 'echo', { i, big });
    let peak = 0;
    await withTimeout((async () => {
      while (peak < 1 << 20) {
        peak = Math.max(peak, value(pyParse((await scrape(srv)).text), 'pulsec_queued_bytes'));
        await sleep(20);
      }
    })(), 10000, `queued bytes over 1 MiB (peak ${peak})`);
    raw.resume();
    await withTimeout((async () => { while (value(pyParse((await scrape(srv)).text), 'pulsec_queued_bytes') > 0) await sleep(20); })(), 10000, 'queue drained');
    c.disconnect();
  });
});

describe('metrics off and on their own address', () => {
  test('off by default: /metrics is 404', async () => {
    const srv = await startServer();
    assert.equal((await scrape(srv)).status, 404);
    await stopClean(srv);
  });

  test('--metrics-listen 127.0.0.1:0: served there (with /healthz), not on the main port; TLS on the main port does not apply to it', async () => {
    const ca = makeCa();
    const leaf = ca.issue('m');
    const srv = await startServer(['--metrics-listen', '127.0.0.1:0', '--tls-cert', leaf.certFile, '--tls-key', leaf.keyFile]);
    const m = /metrics on http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(srv.stdout());
    assert.ok(m, `no metrics line in ${srv.stdout()}`);
    const target = { host: '127.0.0.1', port: Number(m[1]) };
    const r = await scrape(target);
    assert.equal(r.status, 200);
    assert.ok(promtool(r.text).ok);
    const fams = pyParse(r.text);
    assert.equal(value(fams, 'pulsec_tls_handshakes', 'pulsec_tls_handshakes_total'), 0);
    assert.equal((await scrape(target, '/healthz')).status, 200);
    assert.equal((await scrape(target, '/other')).status, 404);
    // The main port (HTTPS) has no /metrics; a TLS client moves the TLS counters.
    const c = makeClient(srv.url, { ca: ca.caPem });
    await waitConnect(c);
    assert.deepEqual(await ackRoundTrip(c, 'x', [1]), [1]);
    const https = await import('node:https');
    const status = await new Promise((resolve, reject) => {
      https.get({ host: '127.0.0.1', port: srv.port, path: '/metrics', ca: ca.caPem, agent: false }, (res) => { res.resume(); resolve(res.statusCode); }).on('error', reject);
    });
    assert.equal(status, 404);
    const f2 = pyParse((await scrape(target)).text);
    assert.ok(value(f2, 'pulsec_tls_handshakes', 'pulsec_tls_handshakes_total') >= 2);
    c.disconnect();
    await stopClean(srv);
    ca.cleanup();
  });

  test('a --metrics-listen address that does not parse or bind: the server refuses to start', async () => {
    await assert.rejects(startServer(['--metrics-listen', 'nonsense']), /exited before listening/);
  });
});

describe('metrics with workers', () => {
  test('each worker serves its own figures on the metrics port + its index; on the main port it is refused', { timeout: 60000 }, async () => {
    await assert.rejects(startServer(['--workers', '2', '--metrics']), /exited before listening/);
    // Two free ports in a row for the two workers (retried: another process may take one).
    let srv, base, lastError;
    for (let attempt = 0; attempt < 5 && !srv; attempt++) {
      base = await new Promise((resolve) => {
        const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
      });
      if (base > 65000) continue;
      try {
        srv = await startServer(['--workers', '2', '--metrics-listen', `127.0.0.1:${base}`]);
      } catch (e) {
        srv = null;
        lastError = e;
      }
    }
    assert.ok(srv, `a server with two workers and a metrics port; the last attempt: ${lastError?.message}`);
    const workers = new Set();
    for (const port of [base, base + 1]) {
      const r = await scrape({ host: '127.0.0.1', port });
      assert.equal(r.status, 200);
      assert.ok(promtool(r.text).ok);
      const fams = pyParse(r.text);
      workers.add(fams.pulsec_build_info.samples[0][1].worker);
    }
    assert.deepEqual([...workers].sort(), ['0', '1']);
    await stopClean(srv, 'echo --workers 2 --metrics-listen');
  });
});
