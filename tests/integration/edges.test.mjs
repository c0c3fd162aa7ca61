// Correctness at the edges (issue 14): a Date header on every kind of response, the Cookie
// parser (first of repeated names, names and values trimmed), X-Forwarded-For believed only
// from --trusted-proxy peers, binding a host name and IPv6, and JSON-lines logging.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  startServer, stopClean, killAll, closeTcp, closeClients, makeClient, waitConnect, ackRoundTrip,
  httpRaw, request, io, clientOptions,
} from './lib/server.mjs';
import { upgradeRequest } from './lib/wire.mjs';
import { send, eioTarget } from './lib/polling.mjs';

after(async () => {
  closeClients();
  closeTcp();
  await killAll();
});

/** What the echo fixture's "handshake" event says the connect saw. */
async function handshakeSeen(url, extra, ...cookies) {
  const c = makeClient(url, extra);
  await waitConnect(c);
  const seen = await c.timeout(3000).emitWithAck('handshake', ...cookies);
  c.disconnect();
  return seen;
}

function assertDate(r, what) {
  const d = r.headers.date;
  assert.match(d || '', /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$/, `${what}: Date ${d}`);
  const skew = Math.abs(Date.parse(d) - Date.now());
  assert.ok(skew < 5000, `${what}: Date ${d} is ${skew} ms off`);
}

describe('Date header and cookies', () => {
  let srv;
  before(async () => {
    srv = await startServer();
  });
  after(async () => {
    closeClients();
    await stopClean(srv);
  });

  test('every response carries a Date (healthz, 404, Engine.IO error, polling open, 101)', async () => {
    assertDate(await httpRaw(srv, request('GET', '/healthz', { close: true })), '/healthz');
    assertDate(await httpRaw(srv, request('GET', '/nothing-here', { close: true })), '404');
    assertDate(await send(srv, 'GET', eioTarget({ eio: '3' })), 'Engine.IO error');
    assertDate(await send(srv, 'GET', eioTarget()), 'polling open');
    const up = await httpRaw(srv, upgradeRequest(srv), { head: true });
    assert.equal(up.status, 101);
    assertDate(up, '101');
    up.conn.destroy();
  });

  test('the first of a repeated cookie name wins; whitespace around names and values is trimmed', async () => {
    for (const transports of [['websocket'], ['polling']]) {
      const seen = await handshakeSeen(srv.url, { transports, extraHeaders: { Cookie: ' sid = first ;theme=dark;  sid=second;\tq="quoted" ; =nameless; flag' } },
        'sid', 'theme', 'q', 'flag', '');
      assert.deepEqual(seen.cookies, { sid: 'first', theme: 'dark', q: 'quoted', flag: null, '': null }, `${transports}: ${JSON.stringify(seen)}`);
    }
  });
});

describe('X-Forwarded-For', () => {
  test('without --trusted-proxy the header is ignored: the address is the peer', async () => {
    const srv = await startServer();
    const seen = await handshakeSeen(srv.url, { extraHeaders: { 'X-Forwarded-For': '203.0.113.9' } });
    assert.equal(seen.address, '127.0.0.1');
    await stopClean(srv);
  });

  test('from a trusted proxy: the nearest untrusted address, read from the right (WebSocket and polling)', async () => {
    const srv = await startServer(['--trusted-proxy', '127.0.0.0/8', '--trusted-proxy', '10.0.0.0/8']);
    for (const transports of [['websocket'], ['polling']]) {
      const xff = '6.6.6.6, 203.0.113.9, 10.1.2.3';
      const seen = await handshakeSeen(srv.url, { transports, extraHeaders: { 'X-Forwarded-For': xff } });
      assert.equal(seen.address, '203.0.113.9', `${transports}`);
    }
    const none = await handshakeSeen(srv.url, {});
    assert.equal(none.address, '127.0.0.1');
    const junk = await handshakeSeen(srv.url, { extraHeaders: { 'X-Forwarded-For': 'not-an-ip' } });
    assert.equal(junk.address, '127.0.0.1');
    await stopClean(srv);
  });

  test('a trusted proxy may name the host the browser asked for (X-Forwarded-Host) for the same-origin check', async () => {
    const srv = await startServer(['--trusted-proxy', '127.0.0.1']);
    const page = 'https://app.example.test';
    const r = await send(srv, 'GET', eioTarget(), { headers: { Origin: page, 'X-Forwarded-Host': 'app.example.test' } });
    assert.equal(r.status, 200, `${r.status} ${r.text}`);
    const other = await send(srv, 'GET', eioTarget(), { headers: { Origin: 'https://evil.test', 'X-Forwarded-Host': 'app.example.test' } });
    assert.equal(other.status, 403);
    await stopClean(srv);
    // The same header from a peer that is not trusted changes nothing.
    const plain = await startServer();
    const r2 = await send(plain, 'GET', eioTarget(), { headers: { Origin: page, 'X-Forwarded-Host': 'app.example.test' } });
    assert.equal(r2.status, 403);
    await stopClean(plain);
  });

  test('a trusted proxy entry that does not parse: the server refuses to start', async () => {
    await assert.rejects(startServer(['--trusted-proxy', '10.0.0.0/99']), /exited before listening/);
  });
});

const v6 = await new Promise((resolve) => {
  const s = net.createServer().once('error', () => resolve(false)).listen(0, '::1', () => s.close(() => resolve(true)));
});

describe('binding host names and IPv6', () => {
  test('--host localhost resolves and serves', async () => {
    const srv = await startServer([], { hostArg: 'localhost' });
    assert.equal(srv.host, 'localhost');
    const c = makeClient(`http://127.0.0.1:${srv.port}`);
    await waitConnect(c);
    assert.deepEqual(await ackRoundTrip(c, 'x', ['named']), ['named']);
    c.disconnect();
    await stopClean(srv);
  });

  test('--host ::1 serves socket.io-client over IPv6 (listening line in brackets)', { skip: !v6 && 'no IPv6 loopback' }, async () => {
    const srv = await startServer([], { hostArg: '::1' });
    assert.equal(srv.host, '[::1]');
    for (const transports of [['websocket'], ['polling']]) {
      const c = io(`http://[::1]:${srv.port}`, clientOptions({ transports }));
      await waitConnect(c);
      assert.deepEqual(await ackRoundTrip(c, 'x', ['v6']), ['v6']);
      // Same origin over IPv6: the Host is "[::1]:port".
      c.disconnect();
    }
    const own = io(`http://[::1]:${srv.port}`, clientOptions({ extraHeaders: { Origin: `http://[::1]:${srv.port}` } }));
    await waitConnect(own);
    own.disconnect();
    await stopClean(srv);
  });
});

describe('--log-json', () => {
  test('every log line on stderr is one JSON object with time, level, logger and msg', async () => {
    const srv = await startServer(['--log-json', '--verbose']);
    const c = makeClient(srv.url);
    await waitConnect(c);
    await ackRoundTrip(c, 'x', [1]);
    c.disconnect();
    const r = await stopClean(srv);
    const lines = r.stderr.split('\n').filter(Boolean);
    assert.ok(lines.length > 0, 'no log lines');
    for (const line of lines) {
      const j = JSON.parse(line);
      assert.deepEqual(Object.keys(j), ['time', 'level', 'logger', 'msg'], line);
      assert.match(j.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
      assert.ok(['error', 'warn', 'info', 'debug'].includes(j.level), line);
      assert.equal(j.logger, 'echo');
    }
    assert.ok(lines.some((l) => JSON.parse(l).msg.includes('stopping')), `no stop line in ${r.stderr}`);
  });
});

