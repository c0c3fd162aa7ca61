// RFC 6455 layer with raw frames: UTF-8 validation (1007), message size limit (1009),
// masking (1002), fragmentation with interleaved control frames, ping/pong, the close
// handshake, framing violations (1002) and binary packets (placeholders and attachments). Every bad input
// must close only that connection: a witness socket.io-client keeps working.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, stopClean, killAll, connectClient, assertStillServes, closeClients, closeRaws,
  closeTcp, openRaw, TcpWs, OP, closePayload, encodeFrame, once,
} from './lib/server.mjs';

after(async () => {
  closeClients();
  closeRaws();
  closeTcp();
  await killAll();
});

const MAX = 1000;

/** A text message of exactly `size` bytes that the echo server sends back unchanged. */
function eventOfSize(size) {
  const head = '42["e","';
  const tail = '"]';
  return head + 'x'.repeat(size - head.length - tail.length) + tail;
}

describe(`raw WebSocket frames (--max-payload ${MAX})`, () => {
  let srv;
  let witness;
  before(async () => {
    srv = await startServer(['--max-payload', String(MAX)]);
    witness = await connectClient(srv.url);
  });

  /** A hand-made WebSocket that has done the Engine.IO handshake and joined "/". */
  const tcp = async () => (await TcpWs.connect(srv)).engineAndConnect();

  /** Asserts the server answers with a close frame carrying `code` and then closes TCP. */
  async function expectClose(c, code) {
    const got = await c.waitCloseFrame();
    assert.equal(got.code, code, `close code ${got.code} (${got.reason}), expected ${code}; frames: ${c.describe()}`);
    await c.waitEnd();
    await assertStillServes(witness);
  }

  describe('cases', { concurrency: true }, () => {
    test('invalid UTF-8 in a text frame -> close 1007', async () => {
      const raw = await openRaw(srv);
      raw.send(Buffer.concat([Buffer.from('42["x","'), Buffer.from([0xff, 0xfe]), Buffer.from('"]')]), { binary: false });
      const { code } = await raw.waitClose();
      assert.equal(code, 1007);
      await assertStillServes(witness);
    });

    test('overlong UTF-8 encoding (C0 AF) -> close 1007', async () => {
      const c = await tcp();
      c.sendFrame({ opcode: OP.TEXT, payload: Buffer.concat([Buffer.from('42["'), Buffer.from([0xc0, 0xaf]), Buffer.from('"]')]) });
      await expectClose(c, 1007);
    });

    test('UTF-8 encoded surrogate (ED A0 80) -> close 1007', async () => {
      const c = await tcp();
      c.sendFrame({ opcode: OP.TEXT, payload: Buffer.concat([Buffer.from('42["'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"]')]) });
      await expectClose(c, 1007);
    });

    test('code point above U+10FFFF (F4 90 80 80) -> close 1007', async () => {
      const c = await tcp();
      c.sendFrame({ opcode: OP.TEXT, payload: Buffer.concat([Buffer.from('42["'), Buffer.from([0xf4, 0x90, 0x80, 0x80]), Buffer.from('"]')]) });
      await expectClose(c, 1007);
    });

    test('truncated UTF-8 sequence at the end of a message -> close 1007', async () => {
      const c = await tcp();
      c.sendFrame({ opcode: OP.TEXT, payload: Buffer.concat([Buffer.from('42["x"]'), Buffer.from([0xe2, 0x82])]) });
      await expectClose(c, 1007);
    });

    test('a multi-byte character split across fragments is valid and echoed', async () => {
      const c = await tcp();
      const msg = Buffer.from('42["split","é€😀"]');
      const cut1 = msg.indexOf(Buffer.from('é')) + 1; // inside é
      const cut2 = msg.indexOf(Buffer.from('😀')) + 2; // inside the emoji
      c.sendFrame({ fin: false, opcode: OP.TEXT, payload: msg.subarray(0, cut1) });
      c.sendFrame({ fin: false, opcode: OP.CONT, payload: msg.subarray(cut1, cut2) });
      c.sendFrame({ fin: true, opcode: OP.CONT, payload: msg.subarray(cut2) });
      await c.waitText('42["split","é€😀"]');
      c.destroy();
    });

    test('boundary code points (U+007F, U+0800, U+FFFE, U+FFFF, U+10000, U+10FFFF) are valid UTF-8', async () => {
      const c = await tcp();
      const chars = Buffer.from([0x7f, 0xdf, 0xbf, 0xe0, 0xa0, 0x80, 0xef, 0xbf, 0xbe, 0xef, 0xbf, 0xbf, 0xf0, 0x90, 0x80, 0x80, 0xf4, 0x8f, 0xbf, 0xbf]);
      const msg = Buffer.concat([Buffer.from('42["u","'), chars, Buffer.from('"]')]);
      c.sendFrame({ opcode: OP.TEXT, payload: msg });
      const f = await c.waitFrame((fr) => fr.opcode === OP.TEXT && fr.text.startsWith('42["u"'));
      assert.deepEqual(f.payload, msg);
      c.destroy();
    });

    test('invalid UTF-8 in a close frame reason -> close 1007', async () => {
      const c = await tcp();
      c.sendFrame({ opcode: OP.CLOSE, payload: Buffer.concat([closePayload(4000), Buffer.from([0xff])]) });
      await expectClose(c, 1007);
    });

    test('invalid UTF-8 in the last fragment of a message -> close 1007', async () => {
      const c = await tcp();
      c.sendFrame({ fin: false, opcode: OP.TEXT, payload: '42["fine so far' });
      c.sendFrame({ fin: true, opcode: OP.CONT, payload: Buffer.from([0x80, 0x22, 0x5d]) });
      await expectClose(c, 1007);
    });

    test(`a message of exactly ${MAX} bytes is accepted`, async () => {
      const raw = await openRaw(srv);
      const msg = eventOfSize(MAX);
      assert.equal(Buffer.byteLength(msg), MAX);
      raw.send(msg);
      await raw.waitFrame(msg);
      raw.terminate();
    });

    test(`a ${2 * MAX}-byte message (over --max-payload) -> close 1009`, async () => {
      const raw = await openRaw(srv);
      raw.send(eventOfSize(2 * MAX));
      const { code } = await raw.waitClose();
      assert.equal(code, 1009);
      await assertStillServes(witness);
    });

    test('fragments adding up to more than --max-payload -> close 1009', async () => {
      const c = await tcp();
      const msg = Buffer.from(eventOfSize(1200));
      c.sendFrame({ fin: false, opcode: OP.TEXT, payload: msg.subarray(0, 600) });
      c.sendFrame({ fin: true, opcode: OP.CONT, payload: msg.subarray(600) });
      await expectClose(c, 1009);
    });

    test('a frame header announcing 2^40 bytes -> close 1009 without waiting for the payload', async () => {
      const c = await tcp();
      c.write(encodeFrame({ opcode: OP.TEXT, payload: Buffer.from('42'), length: 2 ** 40 }).subarray(0, 14));
      await expectClose(c, 1009);
    });

    // Issue 16: RFC 6455 §5.2 makes the most significant bit of a 64-bit length 0; a frame
    // that sets it is malformed whatever its size, so the answer is 1002 (not the 1009 of an
    // oversized message), and it comes on the header alone, before any size check.
    for (const [what, opcode, fin] of [['text', OP.TEXT, true], ['binary', OP.BINARY, true], ['continuation', OP.CONT, true], ['first fragment', OP.TEXT, false]]) {
      test(`a ${what} frame whose 64-bit length has the top bit set -> close 1002, not 1009`, async () => {
        const c = await tcp();
        if (opcode === OP.CONT) c.sendFrame({ fin: false, opcode: OP.TEXT, payload: '42["a' });
        const head = Buffer.alloc(14);
        head[0] = (fin ? 0x80 : 0) | opcode;
        head[1] = 0x80 | 127;
        head.writeBigUInt64BE(0x8000000000000002n, 2); // top bit set, "2 bytes" below it
        c.write(head); // the masking key follows; no payload is ever sent
        await expectClose(c, 1002);
      });
    }

    test('a 64-bit length with the top bit set closes with 1002 even on a server without a size bound', async () => {
      const big = await startServer(['--max-payload', String(2 ** 62)]);
      try {
        const c = await (await TcpWs.connect(big)).engineAndConnect();
        const head = Buffer.alloc(14);
        head[0] = 0x81;
        head[1] = 0x80 | 127;
        head.writeBigUInt64BE(0xffffffffffffffffn, 2);
        c.write(head);
        const got = await c.waitCloseFrame();
        assert.equal(got.code, 1002, `close ${got.code} (${got.reason}); frames: ${c.describe()}`);
        await c.waitEnd();
      } finally {
        await stopClean(big);
      }
    });

    test('an unmasked client frame -> close 1002', async () => {
      const c = await TcpWs.connect(srv);
      await c.waitText(/^0\{/);
      c.sendFrame({ opcode: OP.TEXT, payload: '40', mask: false });
      await expectClose(c, 1002);
    });

    test('an unmasked frame after a good CONNECT -> close 1002', async () => {
      const c = await tcp();
      c.sendFrame({ opcode: OP.TEXT, payload: '42["x"]', mask: false });
      await expectClose(c, 1002);
    });

    test('fragmented text with a ping between fragments is reassembled; the ping is answered', async () => {
      const c = await tcp();
      c.sendFrame({ fin: false, opcode: OP.TEXT, payload: '42["frag' });
      c.sendFrame({ opcode: OP.PING, payload: 'between' });
      c.sendFrame({ fin: false, opcode: OP.CONT, payload: 'mented",' });
      c.sendFrame({ fin: false, opcode: OP.CONT, payload: '' });
      c.sendFrame({ fin: true, opcode: OP.CONT, payload: '{"n":1}]' });
      const pong = await c.waitFrame((f) => f.opcode === OP.PONG);
      assert.equal(pong.text, 'between');
      await c.waitText('42["fragmented",{"n":1}]');
      // And an ack request split into single-byte fragments.
      const msg = '427["a",1]';
      for (let i = 0; i < msg.length; i++) {
        c.sendFrame({ fin: i === msg.length - 1, opcode: i === 0 ? OP.TEXT : OP.CONT, payload: msg[i] });
      }
      await c.waitText('437[1]');
      c.destroy();
    });

    test('server frames are unmasked and one Engine.IO packet per message', async () => {
      const c = await tcp();
      c.sendText('42["a"]');
      c.sendText('42["b"]');
      await c.waitText('42["b"]');
      for (const f of c.frames) {
        assert.equal(f.masked, false, 'server frame is masked');
        assert.equal(f.rsv, 0);
        assert.ok(!f.text.includes('\x1e'), `batched frame ${f.text}`);
      }
      c.destroy();
    });

    test('ping -> pong with the same payload (empty, text, binary, 125 bytes)', async () => {
      const c = await tcp();
      const payloads = [Buffer.alloc(0), Buffer.from('hello'), Buffer.from([0, 1, 2, 0xff, 0xfe]), Buffer.alloc(125, 0x61)];
      for (const p of payloads) {
        const from = c.frames.length;
        c.sendFrame({ opcode: OP.PING, payload: p });
        const pong = await c.waitFrame((f) => f.opcode === OP.PONG, 5000, from);
        assert.deepEqual(pong.payload, p);
      }
      c.destroy();
    });

    test('an unsolicited pong is ignored', async () => {
      const c = await tcp();
      c.sendFrame({ opcode: OP.PONG, payload: 'unsolicited' });
      c.sendText('42["after pong"]');
      await c.waitText('42["after pong"]');
      c.destroy();
    });

    test('close frame 4000 from the client -> close reply 4000, then the socket is closed', async () => {
      const c = await tcp();
      c.sendFrame({ opcode: OP.CLOSE, payload: closePayload(4000, 'bye now') });
      const got = await c.waitCloseFrame();
      assert.equal(got.code, 4000);
      await c.waitEnd();
      await assertStillServes(witness);
    });

    test('close frame 1000 from the client -> close reply 1000 (ws client sees a clean close)', async () => {
      const raw = await openRaw(srv);
      raw.close(1000, 'done');
      const { code } = await raw.waitClose();
      assert.equal(code, 1000);
      await assertStillServes(witness);
    });

    test('close frame with a 1-byte payload -> close 1002', async () => {
      const c = await tcp();
      c.sendFrame({ opcode: OP.CLOSE, payload: Buffer.from([0x03]) });
      await expectClose(c, 1002);
    });

    test('close frame with the reserved code 1005 -> close 1002', async () => {
      const c = await tcp();
      c.sendFrame({ opcode: OP.CLOSE, payload: closePayload(1005) });
      await expectClose(c, 1002);
    });

    test('continuation frame with no message started -> close 1002', async () => {
      const c = await tcp();
      c.sendFrame({ fin: true, opcode: OP.CONT, payload: '42["x"]' });
      await expectClose(c, 1002);
    });

    test('a new text frame while a fragmented message is open -> close 1002', async () => {
      const c = await tcp();
      c.sendFrame({ fin: false, opcode: OP.TEXT, payload: '42["a' });
      c.sendFrame({ fin: true, opcode: OP.TEXT, payload: '42["b"]' });
      await expectClose(c, 1002);
    });

    test('a fragmented ping -> close 1002', async () => {
      const c = await tcp();
      c.sendFrame({ fin: false, opcode: OP.PING, payload: 'x' });
      await expectClose(c, 1002);
    });

    test('a ping with a 126-byte payload -> close 1002', async () => {
      const c = await tcp();
      c.sendFrame({ opcode: OP.PING, payload: Buffer.alloc(126, 0x62) });
      await expectClose(c, 1002);
    });

    test('reserved bit RSV1 set (no extension negotiated) -> close 1002', async () => {
      const c = await tcp();
      c.sendFrame({ rsv: 4, opcode: OP.TEXT, payload: '42["x"]' });
      await expectClose(c, 1002);
    });

    test('reserved opcode 0x3 -> close 1002', async () => {
      const c = await tcp();
      c.sendFrame({ opcode: 0x3, payload: 'x' });
      await expectClose(c, 1002);
    });

    test('reserved control opcode 0xB -> close 1002', async () => {
      const c = await tcp();
      c.sendFrame({ opcode: 0xb, payload: 'x' });
      await expectClose(c, 1002);
    });

    test('a binary frame nobody announced -> close 1002', async () => {
      const raw = await openRaw(srv);
      raw.send(Buffer.from([1, 2, 3, 4]));
      const { code } = await raw.waitClose();
      assert.equal(code, 1002);
      await assertStillServes(witness);
    });

    test('a binary Socket.IO event (451-[...placeholder] + attachment) comes back as binary', async () => {
      const raw = await openRaw(srv);
      const from = raw.frames.length;
      raw.send('451-["x",{"_placeholder":true,"num":0}]');
      raw.send(Buffer.from([1, 2, 3, 4]));
      const header = '451-["x",{"_placeholder":true,"num":0}]';
      await raw.waitFrame(header, 5000, from);
      const at = raw.frames.indexOf(header, from);
      const blob = await raw.waitFrame((f) => Buffer.isBuffer(f), 5000, at + 1);
      assert.deepEqual([...blob], [1, 2, 3, 4]);
      assert.equal(raw.frames[at + 1], blob, 'the attachment follows its header at once');
      await assertStillServes(witness);
    });

    test('a text packet while an attachment is owed -> close 1002', async () => {
      const raw = await openRaw(srv);
      raw.send('451-["x",{"_placeholder":true,"num":0}]');
      raw.send('42["x"]');
      const { code } = await raw.waitClose();
      assert.equal(code, 1002);
      await assertStillServes(witness);
    });

    test('a binary Socket.IO ack for an unknown id (461-...) is ignored', async () => {
      const raw = await openRaw(srv);
      raw.send('461-0[{"_placeholder":true,"num":0}]');
      raw.send(Buffer.from([1]));
      const from = raw.frames.length;
      raw.send('427["still",1]');
      await raw.waitFrame('437[1]', 5000, from); /* the echo acks with the arguments */
      await assertStillServes(witness);
    });

    test('socket.io-client emitting Buffers gets them back (event and ack)', async () => {
      const s = await connectClient(srv.url);
      const back = once(s, 'bin', 5000);
      s.emit('bin', Buffer.from([1, 2, 3]), { nested: Buffer.from([4]) });
      const [a, b] = await back;
      assert.deepEqual([...a], [1, 2, 3]);
      assert.deepEqual([...b.nested], [4]);
      const acked = await s.timeout(5000).emitWithAck('bin', Buffer.from([9]));
      assert.deepEqual([...acked], [9]);
      await assertStillServes(witness);
    });

    test('a TCP connection dropped in the middle of a frame is cleaned up', async () => {
      const c = await tcp();
      c.write(encodeFrame({ opcode: OP.TEXT, payload: eventOfSize(500) }).subarray(0, 100));
      c.destroy();
      await assertStillServes(witness);
    });
  });

  test('server exits 0 on SIGTERM (no leaks)', async () => {
    closeClients();
    closeTcp();
    await stopClean(srv);
  });
});
