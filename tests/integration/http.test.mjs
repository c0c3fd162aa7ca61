// HTTP/1.1 layer with byte-exact requests on raw TCP sockets: /healthz, static files
// (content types, index, keep-alive, pipelining, HEAD), no path traversal (dot segments,
// encoded variants, NUL bytes, symlinks out of the root), 404/405/413/431/400, and the
// Engine.IO request validation of SOCKETIO.md §2.1.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import {
  startServer, stopClean, killAll, closeTcp, closeClients, HttpConn, httpRaw, request, sleep,
  connectClient, assertStillServes,
} from './lib/server.mjs';

const SECRET = `TOP-SECRET-${crypto.randomBytes(8).toString('hex')}`;
let tmp;
let www;

const PNG = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), crypto.randomBytes(300)]);
const WASM = Buffer.from([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);
const FILES = {
  'index.html': { body: Buffer.from('<!doctype html><title>pulsec</title><p>index ✓</p>\n'), type: /^text\/html\b/ },
  'a.css': { body: Buffer.from('body { color: red; }\n'), type: /^text\/css\b/ },
  'b.js': { body: Buffer.from('export const x = 1;\n'), type: /^(text|application)\/javascript\b/ },
  'c.json': { body: Buffer.from('{"hello":"world"}'), type: /^application\/json\b/ },
  'd.png': { body: PNG, type: /^image\/png$/ },
  'e.svg': { body: Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"/>'), type: /^image\/svg\+xml\b/ },
  'f.wasm': { body: WASM, type: /^application\/wasm$/ },
};
const BIG = crypto.randomBytes(3 * 1024 * 1024 + 17); // a file larger than socket buffers

function makeTree() {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pulsec-http-'));
  www = path.join(tmp, 'www');
  fs.mkdirSync(www);
  fs.writeFileSync(path.join(tmp, 'secret.txt'), SECRET);
  for (const [name, f] of Object.entries(FILES)) fs.writeFileSync(path.join(www, name), f.body);
  fs.writeFileSync(path.join(www, 'big.bin'), BIG);
  fs.mkdirSync(path.join(www, 'sub'));
  fs.writeFileSync(path.join(www, 'sub', 'page.html'), '<p>sub</p>');
  fs.writeFileSync(path.join(www, 'sp ace ü.txt'), 'encoded name');
  fs.symlinkSync('../secret.txt', path.join(www, 'leak.txt')); // file symlink out of the root
  fs.symlinkSync('..', path.join(www, 'up')); // directory symlink out of the root
  fs.symlinkSync('/etc', path.join(www, 'etc')); // absolute symlink out of the root
}

after(async () => {
  closeClients();
  closeTcp();
  await killAll();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** Fresh-connection GET/HEAD/...; resolves with the first response. */
function get(srv, target, opts = {}) {
  return httpRaw(srv, request(opts.method || 'GET', target, opts), { head: opts.method === 'HEAD' });
}

describe('HTTP', () => {
  let srv;
  let witness;
  before(async () => {
    makeTree();
    srv = await startServer(['--static', www]);
    witness = await connectClient(srv.url);
  });

  /** A bad-input case: after it, the already-connected socket.io client must still be served. */
  const badTest = (name, fn) =>
    test(name, async () => {
      await fn();
      await assertStillServes(witness);
    });

  describe('cases', { concurrency: true }, () => {
    test('GET /healthz -> 200 application/json {"status":"ok"}', async () => {
      const r = await get(srv, '/healthz');
      assert.equal(r.status, 200);
      assert.match(r.headers['content-type'], /^application\/json\b/);
      assert.equal(r.text, '{"status":"ok"}');
      assert.deepEqual(JSON.parse(r.text), { status: 'ok' });
    });

    for (const [name, f] of Object.entries(FILES)) {
      test(`static /${name} -> 200 ${f.type.source} with the exact bytes`, async () => {
        const r = await get(srv, `/${name}`);
        assert.equal(r.status, 200);
        assert.match(r.headers['content-type'] || '', f.type);
        assert.equal(Number(r.headers['content-length']), f.body.length);
        assert.deepEqual(r.body, f.body);
      });
    }

    test('GET / serves index.html', async () => {
      const r = await get(srv, '/');
      assert.equal(r.status, 200);
      assert.match(r.headers['content-type'], /^text\/html\b/);
      assert.deepEqual(r.body, FILES['index.html'].body);
    });

    test('a file in a subdirectory is served', async () => {
      const r = await get(srv, '/sub/page.html');
      assert.equal(r.status, 200);
      assert.equal(r.text, '<p>sub</p>');
    });

    test('percent-encoded file names are decoded (/sp%20ace%20%C3%BC.txt)', async () => {
      const r = await get(srv, '/sp%20ace%20%C3%BC.txt');
      assert.equal(r.status, 200);
      assert.equal(r.text, 'encoded name');
    });

    test('a query string does not change which file is served', async () => {
      const r = await get(srv, '/a.css?v=123&x=%2e%2e');
      assert.equal(r.status, 200);
      assert.deepEqual(r.body, FILES['a.css'].body);
    });

    test('a 3 MiB file arrives complete', async () => {
      const r = await httpRaw(srv, request('GET', '/big.bin'), { ms: 20000 });
      assert.equal(r.status, 200);
      assert.equal(r.body.length, BIG.length);
      assert.ok(r.body.equals(BIG), 'big file content differs');
    });

    test('keep-alive: two requests one after the other on one connection', async () => {
      const c = await HttpConn.connect(srv);
      await c.write(request('GET', '/a.css'));
      const r1 = await c.readResponse();
      assert.equal(r1.status, 200);
      assert.deepEqual(r1.body, FILES['a.css'].body);
      await c.write(request('GET', '/healthz'));
      const r2 = await c.readResponse();
      assert.equal(r2.status, 200);
      assert.equal(r2.text, '{"status":"ok"}');
      assert.equal(c.ended, false);
      c.destroy();
    });

    test('keep-alive: three pipelined requests in one write are answered in order', async () => {
      const c = await HttpConn.connect(srv);
      await c.write(request('GET', '/c.json') + request('GET', '/nope-404') + request('GET', '/healthz'));
      const r1 = await c.readResponse();
      const r2 = await c.readResponse();
      const r3 = await c.readResponse();
      assert.deepEqual([r1.status, r2.status, r3.status], [200, 404, 200]);
      assert.equal(r1.text, '{"hello":"world"}');
      assert.equal(r3.text, '{"status":"ok"}');
      c.destroy();
    });

    test('keep-alive: a request split into tiny writes is parsed', async () => {
      const c = await HttpConn.connect(srv);
      const req = request('GET', '/c.json');
      for (let i = 0; i < req.length; i += 3) {
        await c.write(req.slice(i, i + 3));
        await sleep(2);
      }
      const r = await c.readResponse();
      assert.equal(r.status, 200);
      assert.equal(r.text, '{"hello":"world"}');
      c.destroy();
    });

    test('"Connection: close" -> the server closes after the response', async () => {
      const r = await get(srv, '/healthz', { close: true });
      assert.equal(r.status, 200);
      await r.conn.waitEnd();
    });

    test('HEAD -> headers with the Content-Length of GET and no body', async () => {
      const c = await HttpConn.connect(srv);
      await c.write(request('HEAD', '/d.png'));
      const h = await c.readResponse({ head: true });
      assert.equal(h.status, 200);
      assert.match(h.headers['content-type'], /^image\/png$/);
      assert.equal(Number(h.headers['content-length']), PNG.length);
      // No body may follow: the next bytes on the connection are the next response.
      await c.write(request('GET', '/healthz'));
      const g = await c.readResponse();
      assert.equal(g.status, 200);
      assert.equal(g.text, '{"status":"ok"}');
      c.destroy();
    });

    const traversals = [
      '/../secret.txt',
      '/../etc/passwd',
      '/../../../../../../etc/passwd',
      '/%2e%2e/secret.txt',
      '/%2e%2e/%2e%2e/etc/passwd',
      '/%2E%2E/%2E%2E/%2E%2E/etc/passwd',
      '/..%2fsecret.txt',
      '/..%2f..%2f..%2f..%2fetc%2fpasswd',
      '/%2e%2e%2fsecret.txt',
      '/sub/../../secret.txt',
      '/sub/%2e%2e/%2e%2e/secret.txt',
      '/.%2e/secret.txt',
      '/..%5csecret.txt',
      '/..\\secret.txt',
      '/%252e%252e/secret.txt',
      '//etc/passwd',
      '/index.html%00',
      '/index.html%00.png',
      '/%00',
      '/%00/../secret.txt',
      '/leak.txt',
      '/up/secret.txt',
      '/etc/passwd',
    ];
    for (const target of traversals) {
      badTest(`path traversal ${target} -> 404, never file contents`, async () => {
        const r = await get(srv, target);
        assert.ok(!r.body.includes(SECRET), `served the secret for ${target}`);
        assert.ok(!/root:.*:0:0:/.test(r.text), `served /etc/passwd for ${target}`);
        // A backslash is not a legal URL character: refusing the request line (400) is fine too.
        const allowed = target.includes('\\') ? [400, 404] : [404];
        assert.ok(allowed.includes(r.status), `${target} -> ${r.status}, expected ${allowed.join(' or ')}`);
      });
    }

    badTest('POST to a static path -> 405 with Allow', async () => {
      const r = await get(srv, '/index.html', { method: 'POST', body: 'x=1' });
      assert.equal(r.status, 405);
      assert.match(r.headers.allow || '', /GET/);
    });

    badTest('PUT and DELETE on a static path -> 405', async () => {
      for (const method of ['PUT', 'DELETE']) {
        const r = await get(srv, '/a.css', { method, body: '' });
        assert.equal(r.status, 405, method);
      }
    });

    badTest('a header section over 8 KiB -> 431', async () => {
      const r = await get(srv, '/healthz', { headers: { 'X-Big': 'a'.repeat(9000) } });
      assert.equal(r.status, 431);
    });

    badTest('many small headers adding up to over 8 KiB -> 431', async () => {
      const headers = {};
      for (let i = 0; i < 90; i++) headers[`X-H${i}`] = 'b'.repeat(100);
      const r = await get(srv, '/healthz', { headers });
      assert.equal(r.status, 431);
    });

    test('a request with 4 KiB of headers is fine', async () => {
      const r = await get(srv, '/healthz', { headers: { 'X-Mid': 'c'.repeat(4000) } });
      assert.equal(r.status, 200);
    });

    badTest('a declared body over the limit -> 413 without waiting for it', async () => {
      const c = await HttpConn.connect(srv);
      await c.write(`POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: ${64 * 1024 * 1024}\r\n\r\n` + 'z'.repeat(1000));
      const r = await c.readResponse();
      assert.equal(r.status, 413);
      c.destroy();
    });

    badTest('a chunked body growing over the limit -> 413', async () => {
      const c = await HttpConn.connect(srv);
      await c.write('POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n');
      const chunk = `10000\r\n${'y'.repeat(0x10000)}\r\n`;
      const responded = c.readResponse({ ms: 15000 });
      let sent = 0;
      let r;
      responded.then((x) => (r = x), () => {});
      while (!r && !c.ended && sent < 4 * 1024 * 1024) {
        const ok = await c.write(chunk);
        if (!ok) break;
        sent += 0x10000;
      }
      r = await responded;
      assert.equal(r.status, 413);
      c.destroy();
    });

    // The server answers while the body is still arriving. Closing a socket with unread input
    // sends RST, which can destroy the 413 in the client's buffer before it is read. So the
    // server sends FIN and keeps reading until the client closes. Ten clients send as fast
    // as they can; each of them must get the 413.
    badTest('bodies streamed without pause over the limit: every sender reads its 413', async () => {
      const chunk = `10000\r\n${'y'.repeat(0x10000)}\r\n`;
      const one = async () => {
        const c = await HttpConn.connect(srv);
        const responded = c.readResponse({ ms: 15000 });
        c.sock.write('POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n');
        for (let i = 0; i < 64 && !c.ended; i++) c.sock.write(chunk);
        const r = await responded;
        c.destroy();
        return r.status;
      };
      const statuses = await Promise.all(Array.from({ length: 10 }, one));
      assert.deepEqual(statuses, Array(10).fill(413));
    });

    badTest('unknown path -> 404', async () => {
      const r = await get(srv, '/does/not/exist.html');
      assert.equal(r.status, 404);
    });

    badTest('a directory without index.html -> 404 (no listing)', async () => {
      const r = await get(srv, '/sub/');
      assert.equal(r.status, 404);
      assert.ok(!r.text.includes('page.html'), 'directory listing');
    });

    badTest('malformed request line -> 400 and the connection is closed', async () => {
      const r = await httpRaw(srv, 'GARBAGE\r\n\r\n');
      assert.equal(r.status, 400);
      await r.conn.waitEnd();
    });

    badTest('malformed header line -> 400', async () => {
      const r = await httpRaw(srv, 'GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n');
      assert.equal(r.status, 400);
    });

    badTest('binary junk (a TLS ClientHello) -> 400 or closed, server unaffected', async () => {
      const c = await HttpConn.connect(srv);
      await c.write(Buffer.from('16030100a5010000a10303', 'hex'));
      await c.write(crypto.randomBytes(160));
      try {
        const r = await c.readResponse();
        assert.equal(r.status, 400);
      } catch (e) {
        assert.ok(c.ended, `neither a 400 nor a close: ${e.message}`);
      }
      const h = await get(srv, '/healthz');
      assert.equal(h.status, 200);
    });

    badTest('a connection that opens and says nothing does not block others', async () => {
      const idle = await HttpConn.connect(srv);
      const r = await get(srv, '/healthz');
      assert.equal(r.status, 200);
      idle.destroy();
    });
  });

  test('server exits 0 on SIGTERM (no leaks)', async () => {
    closeTcp();
    await stopClean(srv);
  });
});

describe('Engine.IO request validation (SOCKETIO.md §2.1)', () => {
  let srv;
  let witness;
  before(async () => {
    srv = await startServer();
    witness = await connectClient(srv.url);
  });

  const badTest = (name, fn) =>
    test(name, async () => {
      await fn();
      await assertStillServes(witness);
    });

  const upgrade = (target) =>
    `GET ${target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`;

  async function expectError(raw, code, message) {
    const r = await httpRaw(srv, raw, { ms: 3000 });
    assert.equal(r.status, 400, `${JSON.stringify(raw.split('\r\n')[0])} -> ${r.status} ${r.text}`);
    assert.match(r.headers['content-type'] || '', /^application\/json\b/);
    assert.deepEqual(JSON.parse(r.text), { code, message });
    return r;
  }

  describe('cases', { concurrency: true }, () => {
    badTest('WebSocket upgrade with EIO=3 -> 400 {"code":5,...}', () =>
      expectError(upgrade('/socket.io/?EIO=3&transport=websocket'), 5, 'Unsupported protocol version'));

    badTest('WebSocket upgrade without EIO -> 400 {"code":5,...}', () =>
      expectError(upgrade('/socket.io/?transport=websocket'), 5, 'Unsupported protocol version'));

    badTest('missing transport -> 400 {"code":0,"message":"Transport unknown"}', () =>
      expectError(request('GET', '/socket.io/?EIO=4'), 0, 'Transport unknown'));

    badTest('unknown transport -> 400 {"code":0,...}', () =>
      expectError(request('GET', '/socket.io/?EIO=4&transport=carrier-pigeon'), 0, 'Transport unknown'));

    badTest('unknown transport=foo -> 400 {"code":0,"message":"Transport unknown"} at once, no hang', async () => {
      const t0 = performance.now();
      const r = await expectError(request('GET', '/socket.io/?EIO=4&transport=foo&t=Nx1a2b3'), 0, 'Transport unknown');
      assert.equal(r.text, '{"code":0,"message":"Transport unknown"}');
      assert.ok(performance.now() - t0 < 2000);
    });

    badTest('polling POST with an unknown sid -> 400 {"code":1,...}', () =>
      expectError(request('POST', '/socket.io/?EIO=4&transport=polling&sid=abc', { body: '40' }), 1, 'Session ID unknown'));

    badTest('WebSocket upgrade with an unknown sid -> 400 {"code":1,"message":"Session ID unknown"}', () =>
      expectError(upgrade('/socket.io/?EIO=4&transport=websocket&sid=doesNotExist123'), 1, 'Session ID unknown'));

    badTest('plain GET (no Upgrade) with transport=websocket -> 400 {"code":3,"message":"Bad request"}', () =>
      expectError(request('GET', '/socket.io/?EIO=4&transport=websocket'), 3, 'Bad request'));

    test('query keys in any order, with extra keys, still upgrade', async () => {
      const c = await HttpConn.connect(srv);
      await c.write(upgrade('/socket.io/?foo=bar&transport=websocket&x=%20y&EIO=4&t=abc'));
      const r = await c.readResponse({ head: true });
      assert.equal(r.status, 101);
      c.destroy();
    });

    badTest('WebSocket upgrade with a bad Sec-WebSocket-Version -> refused (no 101)', async () => {
      const raw = upgrade('/socket.io/?EIO=4&transport=websocket').replace('Sec-WebSocket-Version: 13', 'Sec-WebSocket-Version: 8');
      const c = await HttpConn.connect(srv);
      await c.write(raw);
      const r = await c.readResponse({ head: true }).catch(() => null);
      if (r) {
        assert.ok(r.status >= 400 && r.status < 500, `status ${r.status}`);
      }
      c.destroy();
    });

    badTest('WebSocket upgrade without Sec-WebSocket-Key -> 400', async () => {
      const raw = upgrade('/socket.io/?EIO=4&transport=websocket').replace(/Sec-WebSocket-Key: [^\r]*\r\n/, '');
      const r = await httpRaw(srv, raw);
      assert.equal(r.status, 400);
    });
  });

  test('server exits 0 on SIGTERM (no leaks)', async () => {
    closeTcp();
    await stopClean(srv);
  });
});
