// Origins (issue 8, made safe by default in issue 14; DESIGN §8). Without --origin only pages
// of the server's own origin (Origin matching the Host the request was sent to) may connect:
// another Origin gets 403 on polling and on the WebSocket upgrade, so Cross-Site WebSocket
// Hijacking is closed by default; requests without Origin (programs) always connect.
// `--origin http://allowed.test` adds that origin, with CORS headers and credentials, and
// answers its preflight. `--origin "*"` admits any origin without credentials: CORS
// `Access-Control-Allow-Origin: *` without Allow-Credentials, and the session's handshake does
// not show the cookies or Authorization the browser attached.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import {
  startServer, stopClean, killAll, closeTcp, closeClients, makeClient, waitConnect, ackRoundTrip,
  RawWs, withTimeout, httpRaw, sleep,
} from './lib/server.mjs';
import { Polling, send, eioTarget, assertEioError, MESSAGES, closePollConns, TEXT_PLAIN } from './lib/polling.mjs';

const ALLOWED = 'http://allowed.test';
const EVIL = 'http://evil.test';

const wss = new Set();
after(async () => {
  for (const w of wss) w.terminate();
  closeClients();
  closeTcp();
  closePollConns();
  await killAll();
});

function corsHeaders(r) {
  return Object.fromEntries(Object.entries(r.headers).filter(([k]) => k.startsWith('access-control-')));
}

/** A WebSocket handshake with this Origin over raw TCP: resolves with the status code. */
async function wsStatus(srv, path, origin) {
  const key = crypto.randomBytes(16).toString('base64');
  let raw = `GET ${path} HTTP/1.1\r\nHost: ${srv.host}:${srv.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n`;
  if (origin) raw += `Origin: ${origin}\r\n`;
  const r = await httpRaw(srv, `${raw}\r\n`, { ms: 3000, head: true });
  r.conn.destroy();
  return r;
}

describe(`--origin ${ALLOWED}`, () => {
  let srv;
  before(async () => {
    srv = await startServer(['--origin', ALLOWED]);
  });
  after(async () => {
    for (const w of wss) w.terminate();
    closeClients();
    await stopClean(srv);
  });

  describe('cases', { concurrency: true }, () => {
    test('handshake, POST and GET from the allowed origin carry Allow-Origin and Allow-Credentials', async () => {
      const p = new Polling(srv, { headers: { Origin: ALLOWED } });
      await p.handshake();
      const h = p.handshakeResponse.headers;
      assert.equal(h['access-control-allow-origin'], ALLOWED);
      assert.equal(h['access-control-allow-credentials'], 'true');
      assert.match(h.vary || '', /\bOrigin\b/i, 'Vary: Origin must accompany an echoed origin');
      const post = await p.postOk('40');
      assert.equal(post.headers['access-control-allow-origin'], ALLOWED);
      assert.equal(post.headers['access-control-allow-credentials'], 'true');
      const get = await p.get();
      assert.match(get.text, /^40\{"sid":/);
      assert.equal(get.headers['access-control-allow-origin'], ALLOWED);
      assert.equal(get.headers['access-control-allow-credentials'], 'true');
    });

    test('a held GET from the allowed origin, answered later, carries the CORS headers too', async () => {
      const p = new Polling(srv, { headers: { Origin: ALLOWED } });
      await p.handshake();
      await p.connectSio();
      const g = p.startGet();
      await sleep(100);
      await p.postOk('42["late",1]');
      const r = await g.res;
      assert.equal(r.text, '42["late",1]');
      assert.equal(r.headers['access-control-allow-origin'], ALLOWED, `held GET response head:\n${r.head}`);
      assert.equal(r.headers['access-control-allow-credentials'], 'true');
    });

    test('the allowed origin matches case-insensitively (scheme and host)', async () => {
      const r = await send(srv, 'GET', eioTarget(), { headers: { Origin: 'HTTP://Allowed.Test' } });
      assert.equal(r.status, 200);
    });

    test('OPTIONS preflight from the allowed origin -> 204 with Allow-Methods (GET, POST), Allow-Headers, credentials', async () => {
      const r = await send(srv, 'OPTIONS', eioTarget(), {
        headers: { Origin: ALLOWED, 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type' },
      });
      assert.equal(r.status, 204, `preflight: ${r.status} ${r.text}`);
      assert.equal(r.headers['access-control-allow-origin'], ALLOWED);
      assert.equal(r.headers['access-control-allow-credentials'], 'true');
      const methods = (r.headers['access-control-allow-methods'] || '').split(/\s*,\s*/).map((m) => m.toUpperCase());
      assert.ok(methods.includes('GET') && methods.includes('POST'), `Allow-Methods: ${r.headers['access-control-allow-methods']}`);
      assert.match(r.headers['access-control-allow-headers'] || '', /content-type/i);
      assert.equal(r.body.length, 0);
    });

    test('OPTIONS preflight for a POST with a sid -> 204 too', async () => {
      const p = new Polling(srv, { headers: { Origin: ALLOWED } });
      await p.handshake();
      const r = await send(srv, 'OPTIONS', p.target(), { headers: { Origin: ALLOWED, 'Access-Control-Request-Method': 'POST' } });
      assert.equal(r.status, 204);
      assert.equal(r.headers['access-control-allow-origin'], ALLOWED);
    });

    test(`polling from ${EVIL} -> 403 {"code":4,"message":"Forbidden"}, no Allow-Origin`, async () => {
      const r = await send(srv, 'GET', eioTarget(), { headers: { Origin: EVIL } });
      assertEioError(r, 403, 4, MESSAGES[4], 'handshake from evil');
      assert.equal(r.headers['access-control-allow-origin'], undefined);
      // Also with the sid of a real session, and for POST.
      const p = new Polling(srv, { headers: { Origin: ALLOWED } });
      await p.handshake();
      assertEioError(await send(srv, 'GET', p.target(), { headers: { Origin: EVIL } }), 403, 4, MESSAGES[4], 'GET from evil');
      assertEioError(
        await send(srv, 'POST', p.target(), { headers: { Origin: EVIL, 'Content-Type': TEXT_PLAIN }, body: '40' }),
        403, 4, MESSAGES[4], 'POST from evil',
      );
      // The refused requests did not touch the session.
      await p.postOk('40');
      assert.match((await p.get()).text, /^40\{"sid":/);
    });

    test(`a preflight from ${EVIL} gets no CORS grant`, async () => {
      const r = await send(srv, 'OPTIONS', eioTarget(), { headers: { Origin: EVIL, 'Access-Control-Request-Method': 'POST' } });
      assert.deepEqual(corsHeaders(r), {}, `preflight from evil: ${r.status} ${JSON.stringify(r.headers)}`);
      assert.ok(r.status >= 400, `preflight from evil: ${r.status}`);
    });

    test(`a WebSocket from ${EVIL} is refused (no 101); from ${ALLOWED} and without Origin it is accepted`, async () => {
      const bad = await wsStatus(srv, '/socket.io/?EIO=4&transport=websocket', EVIL);
      assert.ok(bad.status === 403 || bad.status === 400, `WebSocket from evil: ${bad.status}`);
      const good = await wsStatus(srv, '/socket.io/?EIO=4&transport=websocket', ALLOWED);
      assert.equal(good.status, 101);
      const none = await wsStatus(srv, '/socket.io/?EIO=4&transport=websocket', null);
      assert.equal(none.status, 101);
    });

    test(`an upgrade probe from ${EVIL} for an allowed session is refused; the session keeps polling`, async () => {
      const p = new Polling(srv, { headers: { Origin: ALLOWED } });
      await p.handshake();
      await p.connectSio();
      const r = await wsStatus(srv, `/socket.io/?EIO=4&transport=websocket&sid=${p.sid}`, EVIL);
      assert.notEqual(r.status, 101);
      await p.postOk('421["x",1]');
      assert.deepEqual(await p.collect(1), ['431[1]']);
    });

    test('errors for the allowed origin carry the CORS headers (the page can read them)', async () => {
      const r = await send(srv, 'GET', eioTarget({ sid: 'AAAAAAAAAAAAAAAAAAAA' }), { headers: { Origin: ALLOWED } });
      assertEioError(r, 400, 1, MESSAGES[1], 'unknown sid');
      assert.equal(r.headers['access-control-allow-origin'], ALLOWED);
      assert.equal(r.headers['access-control-allow-credentials'], 'true');
    });

    test("the listed origin and the server's own keep their cookies in the handshake", async () => {
      for (const origin of [ALLOWED, srv.url]) {
        const c = makeClient(srv.url, { extraHeaders: { Origin: origin, Cookie: 'session=secret' } });
        await waitConnect(c);
        const seen = await c.timeout(3000).emitWithAck('handshake', 'session');
        assert.deepEqual(seen.cookies, { session: 'secret' }, origin);
        c.disconnect();
      }
    });

    test('a non-browser client (no Origin) still polls, without CORS headers', async () => {
      const p = new Polling(srv);
      await p.handshake();
      assert.deepEqual(corsHeaders(p.handshakeResponse), {});
      await p.connectSio();
    });

    test('socket.io-client over polling with Origin: allowed connects; with Origin: evil it cannot', async () => {
      const ok = makeClient(srv.url, { transports: ['polling'], extraHeaders: { Origin: ALLOWED } });
      await waitConnect(ok);
      assert.deepEqual(await ackRoundTrip(ok, 'x', ['cors']), ['cors']);
      ok.disconnect();
      const bad = makeClient(srv.url, { transports: ['polling'], extraHeaders: { Origin: EVIL } });
      const err = await withTimeout(new Promise((resolve) => bad.once('connect_error', resolve)), 5000, 'connect_error');
      assert.ok(err);
      assert.equal(bad.connected, false);
      bad.disconnect();
    });
  });
});

describe('--origin "*"', () => {
  let srv;
  before(async () => {
    srv = await startServer(['--origin', '*']);
  });
  after(async () => {
    closeClients();
    await stopClean(srv);
  });

  test('any origin may poll, with "Access-Control-Allow-Origin: *" and never credentials', async () => {
    const r = await send(srv, 'GET', eioTarget(), { headers: { Origin: 'http://any.test:8080' } });
    assert.equal(r.status, 200);
    assert.equal(r.headers['access-control-allow-origin'], '*');
    assert.equal(r.headers['access-control-allow-credentials'], undefined);
    const pre = await send(srv, 'OPTIONS', eioTarget(), { headers: { Origin: 'http://any.test', 'Access-Control-Request-Method': 'POST' } });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers['access-control-allow-origin'], '*');
    assert.equal(pre.headers['access-control-allow-credentials'], undefined);
  });

  test('a foreign page gets in, but its cookies and Authorization are hidden from the app', async () => {
    const headers = { Cookie: 'session=secret; theme=dark', Authorization: 'Bearer t0ken' };
    // Over WebSocket and over polling, a foreign Origin: no credentials reach the handshake.
    for (const transports of [['websocket'], ['polling']]) {
      const evil = makeClient(srv.url, { transports, extraHeaders: { Origin: 'http://evil.test', ...headers } });
      await waitConnect(evil);
      const seen = await evil.timeout(3000).emitWithAck('handshake', 'session', 'theme');
      assert.deepEqual(seen.cookies, { session: null, theme: null }, `${transports}: ${JSON.stringify(seen)}`);
      assert.equal(seen.authorization, null);
      evil.disconnect();
    }
    // The server's own page and a program (no Origin) keep theirs.
    for (const origin of [srv.url, null]) {
      const own = makeClient(srv.url, { extraHeaders: { ...(origin ? { Origin: origin } : {}), ...headers } });
      await waitConnect(own);
      const seen = await own.timeout(3000).emitWithAck('handshake', 'session', 'theme');
      assert.deepEqual(seen.cookies, { session: 'secret', theme: 'dark' }, `Origin ${origin}: ${JSON.stringify(seen)}`);
      assert.equal(seen.authorization, 'Bearer t0ken');
      own.disconnect();
    }
  });
});

describe('two --origin flags', () => {
  let srv;
  before(async () => {
    srv = await startServer(['--origin', ALLOWED, '--origin', 'https://second.test']);
  });
  after(async () => {
    await stopClean(srv);
  });

  test('both are allowed, others refused', async () => {
    for (const o of [ALLOWED, 'https://second.test']) {
      const r = await send(srv, 'GET', eioTarget(), { headers: { Origin: o } });
      assert.equal(r.status, 200, o);
      assert.equal(r.headers['access-control-allow-origin'], o);
    }
    assertEioError(await send(srv, 'GET', eioTarget(), { headers: { Origin: 'https://third.test' } }), 403, 4, MESSAGES[4], 'third');
    // A prefix or suffix of an allowed origin is not allowed.
    assertEioError(await send(srv, 'GET', eioTarget(), { headers: { Origin: 'http://allowed.test.evil.test' } }), 403, 4, MESSAGES[4], 'suffix');
  });
});

describe("without --origin (the server's own origin only)", () => {
  let srv;
  before(async () => {
    srv = await startServer();
  });
  after(async () => {
    for (const w of wss) w.terminate();
    closeClients();
    await stopClean(srv);
  });

  test(`polling from ${EVIL} -> 403 code 4 (handshake, and GET/POST of a real session)`, async () => {
    assertEioError(await send(srv, 'GET', eioTarget(), { headers: { Origin: EVIL } }), 403, 4, MESSAGES[4], 'handshake from evil');
    const p = new Polling(srv);
    await p.handshake();
    assertEioError(await send(srv, 'GET', p.target(), { headers: { Origin: EVIL } }), 403, 4, MESSAGES[4], 'GET from evil');
    assertEioError(
      await send(srv, 'POST', p.target(), { headers: { Origin: EVIL, 'Content-Type': TEXT_PLAIN }, body: '40' }),
      403, 4, MESSAGES[4], 'POST from evil',
    );
    await p.postOk('40');
    assert.match((await p.get()).text, /^40\{"sid":/);
  });

  test(`a WebSocket from ${EVIL} (and from Origin "null", or a sibling port) -> 403; socket.io-client gets connect_error`, async () => {
    for (const origin of [EVIL, 'null', `http://${srv.host}:${srv.port + 1}`, `https://${srv.host}:${srv.port}.evil.test`]) {
      const r = await wsStatus(srv, '/socket.io/?EIO=4&transport=websocket', origin);
      assert.equal(r.status, 403, `WebSocket from ${origin}: ${r.status}`);
    }
    for (const transports of [['websocket'], ['polling']]) {
      const bad = makeClient(srv.url, { transports, extraHeaders: { Origin: EVIL } });
      const err = await withTimeout(new Promise((resolve) => bad.once('connect_error', resolve)), 5000, 'connect_error');
      assert.ok(err);
      assert.equal(bad.connected, false);
      bad.disconnect();
    }
  });

  test("the server's own origin (Origin = the Host asked for) polls and upgrades, without CORS headers", async () => {
    const own = `http://${srv.host}:${srv.port}`;
    // (The raw polling helper sends "Host: 127.0.0.1", without the port.)
    const p = new Polling(srv, { headers: { Origin: `http://${srv.host}` } });
    await p.handshake();
    assert.deepEqual(corsHeaders(p.handshakeResponse), {});
    await p.connectSio();
    assert.equal((await wsStatus(srv, '/socket.io/?EIO=4&transport=websocket', own)).status, 101);
    for (const transports of [['websocket'], ['polling', 'websocket']]) {
      const c = makeClient(srv.url, { transports, extraHeaders: { Origin: own } });
      await waitConnect(c);
      assert.deepEqual(await ackRoundTrip(c, 'x', ['own']), ['own']);
      c.disconnect();
    }
  });

  test('a program (no Origin) connects over both transports', async () => {
    assert.equal((await wsStatus(srv, '/socket.io/?EIO=4&transport=websocket', null)).status, 101);
    const w = new RawWs(srv);
    wss.add(w);
    await w.handshake();
    await w.connectNs('/');
    w.send('421["ws",1]');
    await w.waitFrame('431[1]');
    w.close(1000);
    const p = new Polling(srv);
    await p.handshake();
    assert.deepEqual(corsHeaders(p.handshakeResponse), {});
    await p.connectSio();
  });

  test('a preflight from another origin is refused (403) without a CORS grant', async () => {
    const r = await send(srv, 'OPTIONS', eioTarget(), { headers: { Origin: EVIL, 'Access-Control-Request-Method': 'POST' } });
    assert.equal(r.status, 403);
    assert.deepEqual(corsHeaders(r), {});
  });
});
