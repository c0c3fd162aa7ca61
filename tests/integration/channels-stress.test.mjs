// Lifecycle under load (issue 3, "10 000 attach/detach/disconnect cycles with no growth in
// memory, leak-free under ASan and valgrind"):
//   - 10 000 attach/detach cycles over 20 connections plus 500 full connect/attach/disconnect
//     cycles against $PULSEC_BUILD_DIR (the sanitizer build): every counter returns to its
//     baseline and the server exits 0 on SIGTERM (LeakSanitizer clean);
//   - server RSS after 1 000 and after 10 000 cycles with the release build: growth < 2 MB;
//   - the release build under valgrind: 200 attach/request/detach cycles and a disconnect with
//     a pending request, then SIGTERM -> exit 0 (no definite leak, no memory error).
// Some cycles leave work pending when the view goes away (a server request without timeout, a
// deferred reply, an event in flight) so that those release paths run thousands of times too.
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { startServer, stopClean, killAll, closeClients } from './lib/server.mjs';
import { ChannelTestClient, openMonitor, pollUntil, envelope, randomId } from './lib/channels.mjs';

after(async () => {
  closeClients();
  await killAll();
});

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const RELEASE_ECHO = path.join(REPO_ROOT, 'build', 'examples', 'echo');

/**
 * `n` attach/detach cycles on one client. Every `pendingEvery`-th cycle leaves a server request
 * without timeout, a deferred reply and an echo event in flight when the view is detached.
 */
async function cycles(c, n, { pendingEvery = 25 } = {}) {
  for (let i = 0; i < n; i++) {
    const { attachId, channel } = await c.attachEcho();
    if (pendingEvery && i % pendingEvery === 0) {
      c.emit(channel, 'ask', { event: 'hang', payload: i, timeout_ms: 0 });
      c.send(envelope({ channel, event: 'defer', payload: { ms: 60000 }, requestId: randomId('d-') }));
      c.emit(channel, 'echo', { i });
    }
    c.detach(attachId);
    if (c.log.length > 2000) c.log.length = 0; // only marks taken after this point are used
  }
}

/** Runs `total` cycles spread over `clients` in parallel. */
async function parallelCycles(clients, total, opts) {
  const per = Math.floor(total / clients.length);
  const extra = total - per * clients.length;
  await Promise.all(clients.map((c, k) => cycles(c, per + (k < extra ? 1 : 0), opts)));
}

/** One full session: connect, attach, maybe leave work pending, disconnect (two ways). */
async function fullCycle(url, i) {
  const c = await ChannelTestClient.connect(url);
  const { channel } = await c.attachEcho();
  if (i % 5 === 0) {
    c.emit(channel, 'ask', { event: 'hang', payload: i, timeout_ms: 0 });
    c.send(envelope({ channel, event: 'defer', payload: { ms: 60000 }, requestId: randomId('d-') }));
    await c.waitFor((m) => m.event === 'hang' && m.requestId);
  }
  if (i % 2 === 0) c.disconnect(); // Socket.IO DISCONNECT, then close
  else c.socket.io.engine.close(); // transport closed without a DISCONNECT packet
}

function rssKb(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  assert.ok(m, `VmRSS in /proc/${pid}/status`);
  return Number(m[1]);
}

async function connectMany(url, n) {
  return Promise.all(Array.from({ length: n }, () => ChannelTestClient.connect(url)));
}

function checkAsks(s) {
  assert.equal(s.asks.twice, 0, `a request completed twice: ${JSON.stringify(s.asks)}`);
  assert.equal(s.asks.started, s.asks.ok + s.asks.timeout + s.asks.closed + s.asks.error, `every request completed: ${JSON.stringify(s.asks)}`);
}

describe('lifecycle under load', () => {
  test('10 000 attach/detach + 500 connect/attach/disconnect cycles: counters back to baseline, exit 0 (sanitizers)', { timeout: 120000 }, async (t) => {
    const srv = await startServer();
    const mon = await openMonitor(srv.url);
    const clients = await connectMany(srv.url, 20);
    const t0 = performance.now();
    await parallelCycles(clients, 10000);
    const t1 = performance.now();
    for (let b = 0; b < 500; b += 20) {
      await Promise.all(Array.from({ length: 20 }, (_, k) => fullCycle(srv.url, b + k)));
    }
    const t2 = performance.now();
    t.diagnostic(`10 000 attach/detach: ${(t1 - t0).toFixed(0)} ms; 500 full sessions: ${(t2 - t1).toFixed(0)} ms`);

    // The monitor's own view and channel are the only ones left; 20 cycling clients + monitor connected.
    // (TCP connections of just-closed sessions may still be in their close handshake for a moment.)
    const s = await pollUntil(mon.stats, (x) => x.views === 1 && x.channels === 1 && x.sessions === 21 && x.connections === 21, { ms: 10000 });
    t.diagnostic(`stats after the cycles: ${JSON.stringify(s)}`);
    assert.equal(s.views, 1, 'views (only the monitor\'s)');
    assert.equal(s.channels, 1, 'channels (only the monitor\'s)');
    assert.equal(s.sessions, 21, 'sessions (the 20 cycling clients + the monitor)');
    assert.equal(s.connections, 21, 'TCP connections');
    assert.ok(s.views_disposed >= 10500, `views_disposed ${s.views_disposed} >= 10 500`);
    assert.ok(s.sessions_total >= 521, `sessions_total ${s.sessions_total}`);
    assert.ok(s.asks.closed >= 400 + 100, `pending requests closed by detach/disconnect: ${s.asks.closed}`);
    checkAsks(s);

    for (const c of clients) c.disconnect();
    const s2 = await pollUntil(mon.stats, (x) => x.sessions === 1 && x.connections === 1, { ms: 10000 });
    assert.equal(s2.sessions, 1);
    assert.equal(s2.connections, 1);
    assert.equal(s2.views, 1);
    assert.equal(s2.channels, 1);
    checkAsks(s2);
    mon.close();
    await stopClean(srv, 'echo server after 10 500 cycles');
  });

  test('release build: RSS growth between 1 000 and 10 000 attach/detach cycles < 2 MB', { timeout: 120000 }, async (t) => {
    if (!fs.existsSync(RELEASE_ECHO)) {
      t.skip(`release build ${RELEASE_ECHO} not found (make build)`);
      return;
    }
    const srv = await startServer([], { bin: RELEASE_ECHO });
    const mon = await openMonitor(srv.url);
    const clients = await connectMany(srv.url, 20);
    await parallelCycles(clients, 1000);
    await pollUntil(mon.stats, (x) => x.views === 1);
    const rss1 = rssKb(srv.proc.pid);
    await parallelCycles(clients, 9000);
    const s = await pollUntil(mon.stats, (x) => x.views === 1 && x.channels === 1);
    const rss2 = rssKb(srv.proc.pid);
    const growth = rss2 - rss1;
    const line = `server RSS after 1 000 cycles: ${rss1} kB; after 10 000 cycles: ${rss2} kB; growth ${growth} kB`;
    t.diagnostic(line);
    assert.equal(s.views, 1);
    assert.equal(s.channels, 1);
    checkAsks(s);
    assert.ok(growth < 2048, line);
    for (const c of clients) c.disconnect();
    mon.close();
    await stopClean(srv, 'release echo server');
  });

  test('valgrind: 200 attach/request/detach cycles and a disconnect with a pending request, exit 0', { timeout: 180000 }, async (t) => {
    let valgrind = null;
    try {
      valgrind = execFileSync('sh', ['-c', 'command -v valgrind'], { encoding: 'utf8' }).trim();
    } catch {
      /* not on PATH */
    }
    if (!valgrind) {
      t.skip('valgrind is not on PATH: skipping the valgrind leak check');
      return;
    }
    if (!fs.existsSync(RELEASE_ECHO)) {
      t.skip(`release build ${RELEASE_ECHO} not found (make build)`);
      return;
    }
    // startServer spawns `bin --host ... --port 0`: a wrapper script execs valgrind on the echo server.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pulsec-valgrind-'));
    const wrapper = path.join(dir, 'echo-under-valgrind');
    fs.writeFileSync(
      wrapper,
      '#!/bin/sh\n' +
        `exec ${JSON.stringify(valgrind)} --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 ` +
        `${JSON.stringify(RELEASE_ECHO)} "$@"\n`,
      { mode: 0o755 },
    );
    try {
      const srv = await startServer([], { bin: wrapper, startTimeoutMs: 60000, stopTimeoutMs: 60000 });
      const c = await ChannelTestClient.connect(srv.url, { timeout: 30000 });
      for (let i = 0; i < 200; i++) {
        const { attachId, channel } = await c.attachEcho();
        const res = await c.request(channel, i % 10 === 0 ? 'fail' : 'echo', { text: 'x', i }, { ms: 30000 });
        if (i % 10 === 0) assert.equal(res.error, 'failed: x');
        else assert.deepEqual(res.payload, { text: 'x', i });
        if (i % 20 === 0) {
          c.emit(channel, 'ask', { event: 'hang', payload: i, timeout_ms: 0 });
          c.send(envelope({ channel, event: 'defer', payload: { ms: 60000 }, requestId: randomId('d-') }));
        }
        c.detach(attachId);
      }
      // A client with a pending server request (no timeout) disconnects.
      const p = await ChannelTestClient.connect(srv.url, { timeout: 30000 });
      const pv = await p.attachEcho();
      const from = p.mark();
      p.emit(pv.channel, 'ask', { event: 'hang', payload: 'pending', timeout_ms: 0 });
      await p.waitFor((m) => m.event === 'hang' && m.requestId, { from, ms: 30000 });
      const mv = await c.attachEcho();
      const before = await c.stats(mv.channel);
      p.disconnect();
      const s = await pollUntil(() => c.stats(mv.channel), (x) => x.sessions === 1 && x.asks.closed > before.asks.closed, { ms: 30000, every: 100 });
      assert.equal(s.sessions, 1);
      assert.equal(s.views, 1);
      assert.equal(s.asks.closed - before.asks.closed, 1, 'the pending request closed on disconnect');
      checkAsks(s);
      c.disconnect();
      const result = await srv.stop('SIGTERM', 60000);
      const summary = /ERROR SUMMARY: .*/.exec(result.stderr)?.[0] ?? '(no summary)';
      t.diagnostic(`valgrind: exit ${result.code}; ${summary}`);
      assert.ok(
        !result.hung && result.code === 0,
        `echo under valgrind: exit code ${result.code} signal ${result.signal}${result.hung ? ' (hung)' : ''}\n--- stderr ---\n${result.stderr}`,
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
