// Issue 16: the demo servers (examples/chat, examples/playground) take `--origin` as the echo
// fixture does (examples/common/example.h): with the flag, a WebSocket upgrade or a polling
// request from another Origin gets 403, the listed origin is served (with CORS headers on
// polling), and repeated flags list several origins. Each server ends with SIGTERM -> exit 0
// (LeakSanitizer clean with the ASan build).
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  BUILD_DIR, startServer, stopClean, killAll, closeClients, makeClient, waitConnect, withTimeout, sleep,
} from './lib/server.mjs';
import { send, eioTarget, closePollConns } from './lib/polling.mjs';
import { tcpConnect, upgradeRequest } from './lib/wire.mjs';

after(async () => {
  closeClients();
  closePollConns();
  await killAll();
});

const GOOD = 'http://good.test';
const OTHER = 'http://other.test:8080';
const EVIL = 'http://evil.test';

async function upgradeStatus(srv, origin) {
  const s = await tcpConnect(srv);
  s.write(upgradeRequest(srv, { origin }));
  await withTimeout(
    (async () => {
      while (!/\r\n\r\n/.test(s.data.toString('latin1')) && !s.destroyed) await sleep(5);
    })(),
    3000,
    `upgrade answer for Origin ${origin}`,
  );
  s.destroy();
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(s.data.toString('latin1'))?.[1]);
}

for (const name of ['chat', 'playground']) {
  describe(`examples/${name} --origin`, () => {
    const bin = path.join(BUILD_DIR, 'examples', name);

    test(`--origin ${GOOD} --origin ${OTHER}: those two are served, ${EVIL} gets 403`, async () => {
      const srv = await startServer(['--origin', GOOD, '--origin', OTHER], { bin });
      assert.equal(await upgradeStatus(srv, EVIL), 403);
      assert.equal(await upgradeStatus(srv, 'https://good.test'), 403, 'another scheme is another origin');
      assert.equal(await upgradeStatus(srv, GOOD), 101);
      assert.equal(await upgradeStatus(srv, OTHER), 101);

      const bad = await send(srv, 'GET', eioTarget(), { headers: { Origin: EVIL } });
      assert.equal(bad.status, 403);
      const ok = await send(srv, 'GET', eioTarget(), { headers: { Origin: GOOD } });
      assert.equal(ok.status, 200);
      assert.match(ok.text, /^0\{"sid":/);
      assert.equal(ok.headers['access-control-allow-origin'], GOOD);
      assert.equal(ok.headers['access-control-allow-credentials'], 'true');

      const c = makeClient(srv.url, { extraHeaders: { Origin: OTHER } });
      await waitConnect(c);
      const refused = makeClient(srv.url, { extraHeaders: { Origin: EVIL } });
      await withTimeout(new Promise((resolve) => refused.once('connect_error', resolve)), 5000, 'connect_error');
      assert.equal(refused.connected, false);
      assert.ok(c.connected, 'the listed origin stays connected');
      c.disconnect();
      refused.disconnect();
      await stopClean(srv, name);
    });

    test("without --origin only the server's own pages may connect (issue 14): another Origin gets 403 on both transports", async () => {
      const srv = await startServer([], { bin });
      assert.equal(await upgradeStatus(srv, EVIL), 403);
      assert.equal(await upgradeStatus(srv, srv.url), 101);
      const r = await send(srv, 'GET', eioTarget(), { headers: { Origin: EVIL } });
      assert.equal(r.status, 403);
      assert.equal(r.headers['access-control-allow-origin'], undefined);
      // The raw polling helper sends "Host: 127.0.0.1" (no port): that is the page's origin then.
      const own = await send(srv, 'GET', eioTarget(), { headers: { Origin: `http://${srv.host}` } });
      assert.equal(own.status, 200);
      assert.equal(own.headers['access-control-allow-origin'], undefined);
      await stopClean(srv, name);
    });
  });
}
