// Topics in one process (issue 11, DESIGN §5): ps_join / ps_leave / ps_publish through the echo
// fixture's join, leave and publish requests. Every joined channel receives a publish as an
// ordinary channel event; exceptSelf skips the sender; a closing channel leaves its topics;
// names and limits are checked; binary payloads stay binary; order is kept.
import { describe, test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, stopClean, killAll, closeClients } from './lib/server.mjs';
import { ChannelTestClient } from './lib/channels.mjs';
import { Subscriber, join, leave, assertOk, until } from './lib/topics.mjs';

after(async () => {
  closeClients();
  await killAll();
});

describe('topics in one process', () => {
  let srv;
  const opened = [];
  const sub = async (topics) => {
    const s = await Subscriber.open(srv.url, topics);
    opened.push(s);
    return s;
  };

  before(async () => {
    srv = await startServer(['--max-topics-per-channel', '4', '--max-topics', '50']);
  });
  afterEach(() => {
    for (const s of opened.splice(0)) s.close();
  });
  after(async () => {
    await stopClean(srv);
  });

  test('a publish reaches every joined channel as a channel event, and only those', async () => {
    const a = await sub('room');
    const b = await sub(['room', 'other']);
    const outsider = await sub('other');
    const pub = await sub([]);
    await pub.publish('room', 'news', { n: 1, text: 'héllo' });
    for (const s of [a, b]) {
      const [m] = await s.waitCount('news', 1);
      assert.deepEqual(m.payload, { n: 1, text: 'héllo' });
      assert.equal(m.channel, s.channel);
      assert.equal(m.requestId, undefined);
    }
    await outsider.client.expectNone((m) => m.event === 'news', { ms: 200 });
    await pub.client.expectNone((m) => m.event === 'news', { ms: 0 });
  });

  test('exceptSelf skips the publishing channel; without it the sender gets its own publish', async () => {
    const a = await sub('chat');
    const b = await sub('chat');
    await a.publish('chat', 'msg', 'from a', { exceptSelf: true });
    await b.waitCount('msg', 1);
    await a.client.expectNone((m) => m.event === 'msg', { ms: 200 });
    await a.publish('chat', 'msg', 'again');
    await a.waitCount('msg', 1);
    await b.waitCount('msg', 2);
  });

  test('leave stops delivery; leaving twice is harmless; rejoining resumes', async () => {
    const a = await sub('t1');
    const pub = await sub([]);
    assertOk(await a.leave('t1'), 'leave');
    assertOk(await a.leave('t1'), 'leave again');
    await pub.publish('t1', 'x', 1);
    await a.client.expectNone((m) => m.event === 'x', { ms: 200 });
    assertOk(await a.join('t1'), 'rejoin');
    assertOk(await a.join('t1'), 'join twice');
    await pub.publish('t1', 'x', 2);
    const got = await a.waitCount('x', 1);
    assert.deepEqual(got.map((m) => m.payload), [2], 'joining twice must not deliver twice');
  });

  test('a closing channel leaves its topics (detach, disconnect), and stats count them', async () => {
    const mon = await sub([]);
    const base = await mon.stats();
    const a = await sub(['g1', 'g2']);
    const b = await sub(['g1']);
    let st = await mon.stats();
    assert.equal(st.topic_members - base.topic_members, 3);
    assert.equal(st.topics - base.topics, 2);
    a.client.detach(a.attachId); // the view goes, its channel closes
    await until(async () => (await mon.stats()).topic_members - base.topic_members === 1, 'detach leaves');
    b.close();
    await until(async () => (await mon.stats()).topic_members === base.topic_members, 'disconnect leaves');
    st = await mon.stats();
    assert.equal(st.topics, base.topics, 'empty topics are freed');
    const before = st.deliveries;
    await mon.publish('g1', 'nobody', null);
    st = await mon.stats();
    assert.equal(st.deliveries, before, 'nobody left to deliver to');
    assert.ok(st.published > base.published);
  });

  test('invalid topics, invalid events and limits get error replies', async () => {
    const c = await sub([]);
    const bad = ['', 'x'.repeat(201), 42, null];
    for (const topic of bad) {
      const res = await c.client.request(c.channel, 'join', { topic });
      assert.ok(typeof res.error === 'string' && res.error.length > 0, `join ${JSON.stringify(topic)}: ${JSON.stringify(res)}`);
    }
    assertOk(await join(c.client, c.channel, 'x'.repeat(200)), 'a 200-byte name');
    assertOk(await join(c.client, c.channel, 'ünïcødé ✓'), 'a UTF-8 name');
    for (const event of ['', '__close__', 7]) {
      const res = await c.client.request(c.channel, 'publish', { topic: 'ok', event, payload: 1 });
      assert.ok(typeof res.error === 'string', `publish event ${JSON.stringify(event)}: ${JSON.stringify(res)}`);
    }
    // --max-topics-per-channel 4: two joined above, two more fit, the fifth does not.
    assertOk(await join(c.client, c.channel, 'p3'), 'third');
    assertOk(await join(c.client, c.channel, 'p4'), 'fourth');
    const over = await join(c.client, c.channel, 'p5');
    assert.match(over.error ?? '', /limit/i, JSON.stringify(over));
    assertOk(await leave(c.client, c.channel, 'p4'), 'leave one');
    assertOk(await join(c.client, c.channel, 'p5'), 'fits again');
  });

  test('--max-topics bounds distinct topics per process; joining an existing one still works', async () => {
    const mon = await sub([]);
    const used = (await mon.stats()).topics;
    const subs = [];
    let n = used;
    while (n < 50) {
      const s = await sub([]);
      subs.push(s);
      for (let i = 0; i < 4 && n < 50; i++, n++) assertOk(await s.join(`many-${n}`), `join many-${n}`);
    }
    const extra = await sub([]);
    const res = await extra.join('one-too-many');
    assert.match(res.error ?? '', /limit/i, JSON.stringify(res));
    assertOk(await extra.join(`many-${used}`), 'an existing topic is not a new one');
  });

  test('publishes arrive in order, binary payloads as binary, and one publish reaches 200 channels', async () => {
    const a = await sub('ordered');
    const pub = await sub([]);
    for (let i = 0; i < 100; i++) pub.client.request(pub.channel, 'publish', { topic: 'ordered', event: 'seq', payload: i });
    const got = await a.waitCount('seq', 100);
    assert.deepEqual(got.map((m) => m.payload), [...Array(100).keys()]);

    const bytes = Buffer.from([0, 1, 2, 250, 255]);
    await pub.publish('ordered', 'bin', { data: bytes, n: 1 });
    const [m] = await a.waitCount('bin', 1);
    assert.ok(Buffer.isBuffer(m.payload.data), `binary arrives as a Buffer: ${JSON.stringify(m.payload)}`);
    assert.deepEqual([...m.payload.data], [...bytes]);

    // 20 clients x 10 channels on one topic.
    const clients = [];
    for (let i = 0; i < 20; i++) {
      const c = await ChannelTestClient.connect(srv.url);
      clients.push(c);
      for (let j = 0; j < 10; j++) {
        const { channel } = await c.attachEcho();
        assertOk(await join(c, channel, 'wide'), 'join wide');
      }
    }
    const before = (await pub.stats()).deliveries;
    await pub.publish('wide', 'all', { hi: true });
    for (const c of clients) {
      await until(() => c.log.filter((m) => m?.event === 'all').length === 10, 'ten deliveries per client');
    }
    assert.equal((await pub.stats()).deliveries - before, 200);
    for (const c of clients) c.disconnect();
  });
});

describe('topics over TLS', () => {
  // A fan-out gathers each member's output for the loop pass: over TLS what is gathered is the
  // encrypted records, in order, so every member still reads valid TLS and every publish.
  test('publishes reach WSS and HTTPS-polling members, in order', async () => {
    const { makeCa } = await import('./lib/tls.mjs');
    const ca = makeCa();
    const leaf = ca.issue('server');
    const srv = await startServer(['--tls-cert', leaf.certFile, '--tls-key', leaf.keyFile]);
    try {
      const subs = [];
      for (const transports of [['websocket'], ['polling']])
        for (let i = 0; i < 3; i++) subs.push(await Subscriber.open(srv.url, 'tls-room', { transports, ca: ca.caPem }));
      const pub = await Subscriber.open(srv.url, [], { ca: ca.caPem });
      for (let i = 0; i < 50; i++) pub.client.request(pub.channel, 'publish', { topic: 'tls-room', event: 'n', payload: { i, pad: 'x'.repeat(i * 40) } });
      for (const s of subs) {
        const got = await s.waitCount('n', 50);
        assert.deepEqual(got.map((m) => m.payload.i), [...Array(50).keys()]);
      }
      for (const s of [...subs, pub]) s.close();
    } finally {
      await stopClean(srv, 'TLS server');
      ca.cleanup();
    }
  });
});
