// HTTPS and WSS (issue 14): the echo fixture with --tls-cert/--tls-key, against a throw-away CA
// and certificate minted by openssl in the test. Clients really verify: socket.io-client (over
// WebSocket, over long-polling, and polling with the upgrade) gets the CA as its only trust
// anchor, and without it the connection fails. Also: TLS 1.2+ only, ALPN http/1.1, the origin
// check on a TLS port, the certificate reloaded on SIGHUP while connections stay up, and bad
// input before or instead of a ClientHello (plain HTTP, garbage, a truncated or stalled
// handshake) closing only its own connection while a witness keeps being served.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import {
  startServer, stopClean, killAll, closeClients, makeClient, waitConnect, waitConnectError,
  ackRoundTrip, sleep, withTimeout, WebSocket,
} from './lib/server.mjs';
import { ChannelTestClient, startWitness } from './lib/channels.mjs';
import { makeCa } from './lib/tls.mjs';

const ca = makeCa();
const leaf = ca.issue('server');
const tlsArgs = (l = leaf) => ['--tls-cert', l.certFile, '--tls-key', l.keyFile];

after(async () => {
  closeClients();
  await killAll();
  ca.cleanup();
});

/** A raw TLS connection with node's own client; resolves once the handshake is done. */
function tlsConnect(srv, opts = {}) {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port: srv.port, ca: ca.caPem, servername: undefined, ...opts });
    s.once('secureConnect', () => resolve(s));
    s.once('error', reject);
  });
}

/** GET over HTTPS (node's https, trusting the test CA). */
function httpsGet(srv, path, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port: srv.port, path, ca: ca.caPem, headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('error', reject);
  });
}

/** A plain TCP connection that writes `bytes` and resolves with everything read until the server closed. */
function rawExchange(srv, bytes, ms = 5000) {
  return withTimeout(
    new Promise((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port: srv.port });
      let got = Buffer.alloc(0);
      s.on('data', (d) => (got = Buffer.concat([got, d])));
      s.on('error', () => {});
      s.on('close', () => resolve(got));
      if (bytes) s.write(bytes);
    }),
    ms,
    'the server closing the connection',
  );
}

describe('HTTPS and WSS with socket.io-client', () => {
  let srv;
  before(async () => {
    srv = await startServer(tlsArgs());
  });
  after(async () => {
    closeClients();
    await stopClean(srv);
  });

  test('the server announces https:// and serves /healthz over HTTPS', async () => {
    assert.match(srv.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const r = await httpsGet(srv, '/healthz');
    assert.equal(r.status, 200);
    assert.equal(r.body, '{"status":"ok"}');
  });

  for (const transports of [['websocket'], ['polling'], ['polling', 'websocket']]) {
    test(`socket.io-client over ${transports.join(' then ')}, trusting only the test CA: events, acks, channels`, async () => {
      const c = makeClient(srv.url, { transports, ca: ca.caPem });
      await waitConnect(c);
      assert.deepEqual(await ackRoundTrip(c, 'tls', ['secure', { n: 1 }]), ['secure', { n: 1 }]);
      if (transports.length === 2) {
        await withTimeout((async () => { while (c.io.engine.transport.name !== 'websocket') await sleep(20); })(), 5000, 'upgrade');
      }
      c.disconnect();
      const ch = await ChannelTestClient.connect(srv.url, { transports, ca: ca.caPem });
      const v = await ch.attachEcho();
      const big = 'x'.repeat(100_000); // several TLS records each way
      const res = await ch.request(v.channel, 'echo', { big });
      assert.equal(res.payload.big, big);
      ch.disconnect();
    });
  }

  test('without the CA the certificate is not trusted: connect_error, for both transports', async () => {
    for (const transports of [['websocket'], ['polling']]) {
      const c = makeClient(srv.url, { transports });
      const err = await waitConnectError(c);
      assert.ok(err, `${transports}`);
      c.disconnect();
    }
  });

  test('TLS 1.2 and 1.3 are served with forward-secret AEAD ciphers; TLS 1.1 is refused', async () => {
    const s13 = await tlsConnect(srv);
    assert.equal(s13.getProtocol(), 'TLSv1.3');
    s13.destroy();
    const s12 = await tlsConnect(srv, { maxVersion: 'TLSv1.2' });
    assert.equal(s12.getProtocol(), 'TLSv1.2');
    assert.match(s12.getCipher().name, /^ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$/);
    s12.destroy();
    await assert.rejects(tlsConnect(srv, { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }));
    // A TLS 1.2 client that offers only CBC/RSA-kx suites finds nothing in common.
    await assert.rejects(tlsConnect(srv, { maxVersion: 'TLSv1.2', ciphers: 'AES128-SHA:AES256-SHA' }));
  });

  test('ALPN: http/1.1 is chosen; a client that offers only h2 is refused', async () => {
    const s = await tlsConnect(srv, { ALPNProtocols: ['h2', 'http/1.1'] });
    assert.equal(s.alpnProtocol, 'http/1.1');
    s.destroy();
    const none = await tlsConnect(srv);
    assert.equal(none.alpnProtocol, false);
    none.destroy();
    await assert.rejects(tlsConnect(srv, { ALPNProtocols: ['h2'] }), /no.application.protocol|alert/i);
  });

  test("on a TLS port the server's own origin is https://; http:// of the same host and others get 403", async () => {
    const own = `https://127.0.0.1:${srv.port}`;
    const ok = makeClient(srv.url, { ca: ca.caPem, extraHeaders: { Origin: own } });
    await waitConnect(ok);
    ok.disconnect();
    for (const origin of [`http://127.0.0.1:${srv.port}`, 'https://evil.test']) {
      const r = await httpsGet(srv, '/socket.io/?EIO=4&transport=polling', { Origin: origin });
      assert.equal(r.status, 403, origin);
    }
  });
});

describe('backpressure through TLS', () => {
  test('a client that stops reading: the server stops reading it too, then everything arrives in order', { timeout: 60000 }, async () => {
    const srv = await startServer([...tlsArgs(), '--max-queued', String(64 << 20)]);
    const ws = new WebSocket(`wss://127.0.0.1:${srv.port}/socket.io/?EIO=4&transport=websocket`, { ca: ca.caPem });
    const frames = [];
    ws.on('message', (d) => {
      const t = String(d);
      if (t === '2') ws.send('3');
      else frames.push(t);
    });
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
    ws.send('40');
    await withTimeout((async () => { while (!frames.some((f) => f.startsWith('40{'))) await sleep(10); })(), 5000, 'CONNECT reply');
    ws._socket.pause(); // stop reading: the server's output backs up past its high-water mark
    const N = 60;
    const big = 'y'.repeat(100_000);
    for (let i = 0; i < N; i++) ws.send(`42["big",${i},"${big}"]`);
    await sleep(1000);
    ws._socket.resume();
    const got = () => frames.filter((f) => f.startsWith('42["big"'));
    await withTimeout((async () => { while (got().length < N) await sleep(20); })(), 30000, `all ${N} echoes (got ${got().length})`);
    assert.deepEqual(got().map((f) => JSON.parse(f.slice(2))[1]), [...Array(N).keys()]);
    assert.ok(got().every((f) => JSON.parse(f.slice(2))[2] === big), 'every echo whole');
    ws.close();
    await stopClean(srv);
  });
});

describe('bad input on the TLS port', () => {
  let srv;
  let wit;
  let witness;
  before(async () => {
    srv = await startServer([...tlsArgs(), '--tls-handshake-timeout', '500']);
    wit = await ChannelTestClient.connect(srv.url, { ca: ca.caPem });
    const v = await wit.attachEcho();
    witness = startWitness(wit, v.channel, { ms: 5000, every: 10 });
  });
  after(async () => {
    const lat = await witness.stop();
    assert.ok(lat.length > 3, `the witness made only ${lat.length} round trips`);
    wit.disconnect();
    const r = await stopClean(srv);
    void r;
  });

  test('plain HTTP to the TLS port: a plain 400 saying so, then the connection closes', async () => {
    const got = await rawExchange(srv, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.match(got.toString('latin1'), /^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*HTTPS only/);
    const opts = await rawExchange(srv, 'OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.match(opts.toString('latin1'), /^HTTP\/1\.1 400 /);
  });

  test('garbage instead of a ClientHello: an alert (or nothing), then the connection closes', async () => {
    for (const bytes of [Buffer.alloc(64, 0), Buffer.from('\x16\x03\x01\x00\x05hello', 'latin1'), Buffer.from([0x80, 0x80, 0x01, 0x03]),
      Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x40, 0x00]), Buffer.alloc(0x4000, 0xff)])]) {
      const got = await rawExchange(srv, bytes);
      assert.ok(got.length === 0 || got[0] === 0x15, `answer to garbage: ${got.toString('hex').slice(0, 40)}`);
    }
  });

  test('a truncated ClientHello, then silence: closed at the handshake timeout (500 ms)', async () => {
    // The first bytes of a real ClientHello, captured from node's own client.
    const hello = await new Promise((resolve) => {
      const fake = net.createServer((s) => s.once('data', (d) => { resolve(d); s.destroy(); fake.close(); })).listen(0, '127.0.0.1', () => {
        const c = tls.connect({ host: '127.0.0.1', port: fake.address().port, rejectUnauthorized: false });
        c.on('error', () => {});
      });
    });
    const t0 = performance.now();
    const got = await rawExchange(srv, hello.subarray(0, Math.floor(hello.length / 2)), 5000);
    const took = performance.now() - t0;
    assert.equal(got.length, 0);
    assert.ok(took >= 400, `closed after ${took} ms, before the timeout`);
    // A connection that sends nothing at all is bounded the same way.
    const t1 = performance.now();
    await rawExchange(srv, null, 5000);
    assert.ok(performance.now() - t1 >= 400);
  });

  test('a client that goes away mid-handshake, or right after it, leaves the server serving', async () => {
    for (let i = 0; i < 20; i++) {
      const s = net.connect({ host: '127.0.0.1', port: srv.port });
      s.on('error', () => {});
      s.once('connect', () => s.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])));
      await sleep(2);
      if (i % 2) s.resetAndDestroy(); else s.destroy();
      const t = await tlsConnect(srv);
      t.destroy();
    }
    const c = makeClient(srv.url, { ca: ca.caPem });
    await waitConnect(c);
    assert.deepEqual(await ackRoundTrip(c, 'after', [1]), [1]);
    c.disconnect();
  });
});

describe('certificate reload on SIGHUP', () => {
  test('new connections get the new certificate, open ones keep working; a bad file keeps the old one', async () => {
    const live = ca.issue('live');
    const next = ca.issue('next');
    const certFile = `${ca.dir}/current.pem`;
    const keyFile = `${ca.dir}/current.key`;
    fs.copyFileSync(live.certFile, certFile);
    fs.copyFileSync(live.keyFile, keyFile);
    const srv = await startServer(['--tls-cert', certFile, '--tls-key', keyFile]);
    const fp = async () => {
      const s = await tlsConnect(srv);
      const f = s.getPeerCertificate().fingerprint256;
      s.destroy();
      return f;
    };
    assert.equal(await fp(), live.fingerprint256);
    // Open sessions of both transports, and a raw WSS.
    const ws = makeClient(srv.url, { ca: ca.caPem });
    const poll = makeClient(srv.url, { ca: ca.caPem, transports: ['polling'] });
    await Promise.all([waitConnect(ws), waitConnect(poll)]);
    const raw = new WebSocket(`wss://127.0.0.1:${srv.port}/socket.io/?EIO=4&transport=websocket`, { ca: ca.caPem });
    await new Promise((resolve, reject) => { raw.once('open', resolve); raw.once('error', reject); });

    fs.copyFileSync(next.certFile, certFile);
    fs.copyFileSync(next.keyFile, keyFile);
    srv.proc.kill('SIGHUP');
    await withTimeout((async () => { while ((await fp()) !== next.fingerprint256) await sleep(20); })(), 5000, 'the new certificate');
    assert.deepEqual(await ackRoundTrip(ws, 'kept', [1]), [1]);
    assert.deepEqual(await ackRoundTrip(poll, 'kept', [2]), [2]);
    assert.equal(raw.readyState, WebSocket.OPEN);
    const fresh = makeClient(srv.url, { ca: ca.caPem });
    await waitConnect(fresh);
    fresh.disconnect();

    // A reload that fails (a key that does not match, then an unreadable file): logged, old cert kept.
    fs.copyFileSync(live.keyFile, keyFile);
    srv.proc.kill('SIGHUP');
    await withTimeout((async () => { while (!/reload/i.test(srv.stderr())) await sleep(20); })(), 5000, 'the reload error in the log');
    assert.equal(await fp(), next.fingerprint256);
    fs.writeFileSync(certFile, 'not a certificate');
    srv.proc.kill('SIGHUP');
    await sleep(200);
    assert.equal(await fp(), next.fingerprint256);
    assert.deepEqual(await ackRoundTrip(ws, 'still', [3]), [3]);
    raw.close();
    ws.disconnect();
    poll.disconnect();
    await stopClean(srv);
  });

  test('a certificate that cannot be loaded at start: the server refuses to start, saying why', async () => {
    const other = ca.issue('other');
    await assert.rejects(startServer(['--tls-cert', leaf.certFile, '--tls-key', other.keyFile]), /private key/);
    await assert.rejects(startServer(['--tls-cert', `${ca.dir}/missing.pem`, '--tls-key', leaf.keyFile]), /certificate/);
    await assert.rejects(startServer(['--tls-cert', leaf.certFile]), /tls_key_file/);
  });

  test('an RSA certificate works too', async () => {
    const rsa = ca.issue('rsa', { rsa: true });
    const srv = await startServer(tlsArgs(rsa));
    const c = makeClient(srv.url, { ca: ca.caPem });
    await waitConnect(c);
    assert.deepEqual(await ackRoundTrip(c, 'rsa', [1]), [1]);
    c.disconnect();
    await stopClean(srv);
  });
});

describe('TLS with workers', () => {
  test('refused unless websocket-only: long-polling requests move between workers, TLS connections cannot', async () => {
    await assert.rejects(startServer([...tlsArgs(), '--workers', '2']), /TLS with workers needs websocket_only/);
  });

  test('websocket-only with 2 workers: WSS sessions on both, SIGHUP to the supervisor reloads every worker', { timeout: 60000 }, async () => {
    const live = ca.issue('wlive');
    const next = ca.issue('wnext');
    const certFile = `${ca.dir}/wcurrent.pem`;
    const keyFile = `${ca.dir}/wcurrent.key`;
    fs.copyFileSync(live.certFile, certFile);
    fs.copyFileSync(live.keyFile, keyFile);
    const srv = await startServer(['--tls-cert', certFile, '--tls-key', keyFile, '--workers', '2', '--websocket-only']);
    const open = async () => {
      const c = await ChannelTestClient.connect(srv.url, { ca: ca.caPem });
      const v = await c.attachEcho();
      return { c, v, worker: (await c.stats(v.channel)).worker };
    };
    const clients = [];
    for (let i = 0; i < 40 && new Set(clients.map((x) => x.worker)).size < 2; i++) clients.push(await open());
    assert.deepEqual([...new Set(clients.map((x) => x.worker))].sort(), [0, 1], 'WSS sessions on both workers');
    // Fingerprints seen by fresh connections, until both workers were reached.
    const seen = async () => {
      const s = await tlsConnect(srv);
      const f = s.getPeerCertificate().fingerprint256;
      s.destroy();
      return f;
    };
    fs.copyFileSync(next.certFile, certFile);
    fs.copyFileSync(next.keyFile, keyFile);
    srv.proc.kill('SIGHUP');
    await withTimeout((async () => {
      // 20 fresh connections in a row with the new certificate: both workers reloaded.
      for (let ok = 0; ok < 20;) ok = (await seen()) === next.fingerprint256 ? ok + 1 : 0;
    })(), 10000, 'every worker serving the new certificate');
    for (const { c, v } of clients) await c.assertEchoes(v.channel, 'after the reload');
    // A WebSocket naming another worker's sid is not moved: it is unknown here.
    for (const { c } of clients) c.disconnect();
    await stopClean(srv, 'echo --workers 2 with TLS');
  });
});
