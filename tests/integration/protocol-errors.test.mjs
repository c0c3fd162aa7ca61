// Engine.IO and Socket.IO garbage over a well-formed WebSocket: each bad packet closes that
// connection with a WebSocket close frame (1002 for Engine.IO/Socket.IO parse errors, 1008
// for traffic on a namespace that was never joined) and the server keeps serving others.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, stopClean, killAll, connectClient, assertStillServes, closeClients, closeRaws,
  openRaw, RawWs, sleep,
} from './lib/server.mjs';

after(async () => {
  closeClients();
  closeRaws();
  await killAll();
});

describe('Engine.IO / Socket.IO garbage', () => {
  let srv;
  let witness;
  before(async () => {
    srv = await startServer();
    witness = await connectClient(srv.url);
  });

  /**
   * Opens a raw connection (joined to "/" unless nsp is null), sends `frames` and asserts the
   * server closes with `code`; then checks the witness client still gets served.
   */
  async function expectClose(frames, code, { nsp = '/' } = {}) {
    const raw = await openRaw(srv, { nsp });
    for (const f of [].concat(frames)) raw.send(f);
    const got = await raw.waitClose(5000);
    assert.equal(
      got.code, code,
      `sent ${JSON.stringify(frames)}: close code ${got.code} (${got.reason}), expected ${code}; frames: ${JSON.stringify(raw.frames)}`,
    );
    await assertStillServes(witness);
    return raw;
  }

  describe('cases', { concurrency: true }, () => {
    test('Engine.IO packet type 9 ("9xyz") -> close 1002', () => expectClose('9xyz', 1002));
    test('Engine.IO packet type "x" ("xyz") -> close 1002', () => expectClose('xyz', 1002));
    test('empty text frame -> close 1002', () => expectClose('', 1002));
    test('Engine.IO garbage before any CONNECT -> close 1002', () => expectClose('9xyz', 1002, { nsp: null }));
    test('Socket.IO type "{" ("4{") -> close 1002', () => expectClose('4{', 1002));
    test('Socket.IO type 7 ("47[]") -> close 1002', () => expectClose('47["x"]', 1002));
    test('EVENT with bad JSON ("42{bad json") -> close 1002', () => expectClose('42{bad json', 1002));
    test('EVENT with truncated JSON (\'42["x",\') -> close 1002', () => expectClose('42["x",', 1002));
    test('EVENT with trailing garbage (\'42["x"]zz\') -> close 1002', () => expectClose('42["x"]zz', 1002));
    test('EVENT named "disconnect" -> close 1002', () => expectClose('42["disconnect"]', 1002));
    test('EVENT named "connect" -> close 1002', () => expectClose('42["connect"]', 1002));
    test('EVENT with an empty array ("42[]") -> close 1002', () => expectClose('42[]', 1002));
    test('EVENT with an object payload (\'42{"a":1}\') -> close 1002', () => expectClose('42{"a":1}', 1002));
    test('EVENT whose name is an object -> close 1002', () => expectClose('42[{"a":1}]', 1002));
    test('ACK with a non-array payload (\'430"x"\') -> close 1002', () => expectClose('430"x"', 1002));
    test('CONNECT with an array payload ("40[]") -> close 1002', () => expectClose('40[]', 1002, { nsp: null }));
    test('DISCONNECT with a payload (\'41{"a":1}\') -> close 1002', () => expectClose('41{"a":1}', 1002));
    test('namespace without a leading slash ("42custom,[\\"x\\"]") -> close 1002', () => expectClose('42custom,["x"]', 1002));
    // Issue 16: ack ids are JavaScript numbers, exact up to Number.MAX_SAFE_INTEGER (2^53-1);
    // all of them are legal, so every one is acked under the very id that was sent.
    for (const id of ['999999999999999', '1000000000000000', '4503599627370496', '9007199254740990', '9007199254740991']) {
      test(`an event with ack id ${id} is acked with that id`, async () => {
        const raw = await openRaw(srv);
        raw.send(`42${id}["x",1]`);
        const ack = await raw.waitFrame((f) => typeof f === 'string' && f.startsWith('43'), 5000);
        assert.equal(ack, `43${id}[1]`);
        raw.send(`42/nope,${id}["y"]`); // the connection is still fine: this only earns a 1008
        assert.equal((await raw.waitClose(5000)).code, 1008);
        await assertStillServes(witness);
      });
    }
    test('ack ids from 2^53 on (9007199254740992, 17 digits) -> close 1002', async () => {
      for (const id of ['9007199254740992', '9999999999999999', '10000000000000000']) {
        await expectClose(`42${id}["x"]`, 1002);
      }
    });
    test('an ack id too large for the server is refused (1002), never acked under another id', async () => {
      const id = '99999999999999999999999';
      const raw = await openRaw(srv);
      raw.send(`42${id}["x"]`);
      const ack = raw.waitFrame((f) => typeof f === 'string' && f.startsWith('43'), 5000).then((f) => ({ ack: f }));
      const closed = raw.waitClose(5000).then((c) => ({ close: c }));
      const got = await Promise.race([ack, closed]);
      ack.catch(() => {});
      if (got.ack !== undefined) assert.equal(got.ack, `43${id}[]`, 'acked under a different id');
      else assert.equal(got.close.code, 1002);
      raw.terminate();
      await assertStillServes(witness);
    });
    test('event on a namespace never joined (/custom) -> close 1008', () => expectClose('42/custom,["x"]', 1008));
    test('event on "/" before any CONNECT -> close 1008', () => expectClose('42["x"]', 1008, { nsp: null }));
    test('event on a namespace that does not exist (/nope) -> close 1008', () => expectClose('42/nope,["x"]', 1008));
    test('event on a namespace after its CONNECT was refused -> close 1008', async () => {
      const raw = await openRaw(srv);
      raw.send('40/nope,');
      await raw.waitFrame('44/nope,{"message":"Invalid namespace"}');
      raw.send('42/nope,["x"]');
      const got = await raw.waitClose(5000);
      assert.equal(got.code, 1008);
      await assertStillServes(witness);
    });
    test('event on a namespace after leaving it (41 then 42) -> close 1008', async () => {
      const raw = await openRaw(srv);
      raw.send('41');
      raw.send('42["x"]');
      const got = await raw.waitClose(5000);
      assert.equal(got.code, 1008);
      await assertStillServes(witness);
    });
    test('a second CONNECT to an already joined namespace closes the connection', async () => {
      const raw = await openRaw(srv);
      raw.send('40');
      const got = await raw.waitClose(5000);
      assert.ok([1002, 1008].includes(got.code), `close code ${got.code}`);
      await assertStillServes(witness);
    });

    test('an ACK with an unknown id is ignored and the connection keeps working', async () => {
      const raw = await openRaw(srv);
      raw.send('43999["nobody asked"]');
      raw.send('421["x"]');
      await raw.waitFrame('431[]');
      assert.equal(raw.closeInfo, null);
      raw.terminate();
    });

    test('an EVENT without payload ("42") does not crash the server', async () => {
      const raw = await openRaw(srv);
      raw.send('42');
      await sleep(200);
      if (!raw.closeInfo) {
        // Either answer is fine (an ack, or the close of a slow server arriving late): no crash.
        raw.send('421["x"]');
        await Promise.race([raw.waitFrame('431[]').catch(() => raw.closed), raw.closed]);
      }
      raw.terminate();
      await assertStillServes(witness);
    });

    test('a client DISCONNECT of / leaves the Engine.IO connection open for /custom', async () => {
      const raw = await openRaw(srv);
      raw.send('41');
      await sleep(100);
      assert.equal(raw.closeInfo, null, 'server closed the Engine.IO connection on 41');
      raw.send('40/custom,');
      await raw.waitFrame(/^40\/custom,\{"sid":/);
      raw.send('42/custom,3["y"]');
      await raw.waitFrame('43/custom,3[]');
      raw.terminate();
    });

    test('garbage flood: 200 connections each sending a bad packet, server keeps serving', async () => {
      const bad = ['9xyz', '', '4{', '42{bad json', '42["disconnect"]', '42[]', '42/custom,["x"]', '40[]'];
      const raws = await Promise.all(Array.from({ length: 200 }, (_, i) => {
        const r = new RawWs(srv);
        return r.handshake().then(() => {
          r.send('40');
          return r.waitFrame(/^40\{/).then(() => {
            r.send(bad[i % bad.length]);
            return r;
          });
        });
      }));
      const closes = await Promise.all(raws.map((r) => r.waitClose(10000)));
      for (const [i, c] of closes.entries()) {
        const expected = bad[i % bad.length] === '42/custom,["x"]' ? 1008 : 1002;
        assert.equal(c.code, expected, `packet ${JSON.stringify(bad[i % bad.length])} got close ${c.code}`);
      }
      await assertStillServes(witness);
    });
  });

  test('server exits 0 on SIGTERM (no leaks)', async () => {
    closeClients();
    await stopClean(srv);
  });
});
