// Topics across nodes through Redis (issue 11, DESIGN §5), with Debian's redis-server started
// by the test in a temporary directory (unix socket, and a free TCP port reached by host name).
//
//   - 2 nodes x 2 workers: a publish on any worker of either node reaches every joined channel
//     on every worker of both nodes, exactly once, in order per publisher;
//   - Redis killed mid-run and restarted: local delivery (both workers of the publishing node)
//     never stops, cross-node delivery stops and resumes after the reconnect, /healthz says
//     degraded meanwhile, and the counters show the loss;
//   - Redis down at start; Redis that stops answering (SIGSTOP): the loop never waits for it,
//     publishes beyond --max-redis-queued are dropped and counted;
//   - hostile messages published on our channels by someone else: refused and counted, never
//     delivered, and a well-formed foreign message is delivered.
// Every server stops with SIGTERM and must exit 0 (LeakSanitizer ran in every worker).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, stopClean, killAll, closeClients, sleep, httpRaw, request } from './lib/server.mjs';
import { Subscriber, until } from './lib/topics.mjs';
import { Redis } from './lib/redis.mjs';

const SOAK = Number(process.env.PULSEC_SOAK || 0) > 0; // make soak: longer runs

after(async () => {
  closeClients();
  await killAll();
});

/** Opens subscribers on `server` joined to `topic` until every worker has `per` of them. */
async function subscribersPerWorker(server, topic, workers, per = 2) {
  const by = new Map();
  for (let i = 0; i < 80; i++) {
    if ([...Array(workers).keys()].every((w) => (by.get(w)?.length ?? 0) >= per)) return by;
    const s = await Subscriber.open(server.url, topic);
    const { worker } = await s.stats();
    if (!by.has(worker)) by.set(worker, []);
    by.get(worker).push(s);
  }
  throw new Error(`connections never reached all ${workers} workers`);
}

async function health(server) {
  const res = await httpRaw(server, request('GET', '/healthz', { close: true }));
  res.conn.destroy();
  return { status: res.status, body: JSON.parse(res.text) };
}

/** A well-formed message of the broker codec (src/broker.h), made here as another node would. */
function encode(topic, event, payload, { version = 1, node = Buffer.alloc(16, 7), seq = 1n } = {}) {
  const t = Buffer.from(topic), e = Buffer.from(event), p = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const h = Buffer.alloc(38);
  h.write('PSB', 0, 'latin1');
  h[3] = version;
  h[4] = 0;
  h[5] = 0;
  node.copy(h, 6);
  h.writeBigUInt64BE(seq, 22);
  h.writeUInt16BE(t.length, 30);
  h.writeUInt16BE(e.length, 32);
  h.writeUInt32BE(p.length, 34);
  return Buffer.concat([h, t, e, p]);
}

describe('two nodes x two workers on one Redis', () => {
  let redis, a, b;
  before(async () => {
    redis = await Redis.start({ tcp: true });
    a = await startServer(['--workers', '2', '--redis', redis.url]);
    b = await startServer(['--workers', '2', '--redis', redis.tcpUrl]);
  });
  after(async () => {
    closeClients();
    if (a) await stopClean(a, 'node a');
    if (b) await stopClean(b, 'node b');
    await redis?.stop();
  });

  test('a publish on any worker of any node reaches every member everywhere, once, in order', async () => {
    const subsA = await subscribersPerWorker(a, 'room', 2);
    const subsB = await subscribersPerWorker(b, 'room', 2);
    const all = [...subsA.values(), ...subsB.values()].flat();
    // Every worker of both nodes is connected and has subscribed (4 subscribers in Redis).
    await until(async () => (await redis.numsub('pulsec:room')) === 4, 'every worker subscribed');
    const publishers = [subsA.get(0)[0], subsA.get(1)[0], subsB.get(0)[0], subsB.get(1)[0]];
    const N = SOAK ? 500 : 25;
    // 25 requests in flight per publisher (one connection handles its requests in order).
    await Promise.all(
      publishers.map((p, k) =>
        (async () => {
          for (let i = 0; i < N; i += 25) {
            const batch = [];
            for (let j = i; j < Math.min(N, i + 25); j++)
              batch.push(p.client.request(p.channel, 'publish', { topic: 'room', event: `p${k}`, payload: j }, { ms: 20000 }));
            await Promise.all(batch);
          }
        })(),
      ),
    );
    for (const s of all) {
      for (let k = 0; k < publishers.length; k++) {
        const got = await s.waitCount(`p${k}`, N, 15000);
        assert.deepEqual(got.map((m) => m.payload), [...Array(N).keys()], `publisher ${k}: in order`);
      }
    }
    await sleep(300);
    for (const s of all) for (let k = 0; k < 4; k++) assert.equal(s.events(`p${k}`).length, N, 'exactly once');
    const st = await publishers[0].stats();
    assert.equal(st.redis_up, 1);
    assert.ok(st.remote_out >= 2 * N, `sent to the other worker and to Redis: ${st.remote_out}`);
    assert.equal(st.remote_lost, 0);
    assert.equal(st.remote_invalid, 0);
    assert.deepEqual((await health(a)).body, { status: 'ok', redis: 'up' });
    for (const s of all) s.close();
    // The last members left: every worker unsubscribed.
    await until(async () => (await redis.numsub('pulsec:room')) === 0, 'unsubscribed');
  });
});

describe('Redis killed mid-run and restarted', () => {
  let redis, a, b;
  before(async () => {
    redis = await Redis.start();
    a = await startServer(['--workers', '2', '--redis', redis.url, '--redis-timeout', '1000']);
    b = await startServer(['--redis', redis.url, '--redis-timeout', '1000']);
  });
  after(async () => {
    closeClients();
    if (a) await stopClean(a, 'node a');
    if (b) await stopClean(b, 'node b');
    await redis?.stop();
  });

  test('local delivery never stops, cross-node delivery resumes, the loss is counted', async () => {
    const subsA = await subscribersPerWorker(a, 'ticks', 2, 1);
    const subsB = await subscribersPerWorker(b, 'ticks', 1, 2);
    await until(async () => (await redis.numsub('pulsec:ticks')) === 3, 'subscribed');
    const pub = subsA.get(0)[0];
    const local = [...subsA.values()].flat();
    const remote = subsB.get(0);
    let n = 0;
    let stop = false;
    const ticking = (async () => {
      while (!stop) {
        await pub.publish('ticks', 't', n++);
        await sleep(10);
      }
    })();
    await until(() => remote.every((s) => s.events('t').length >= 10), 'cross-node before the kill');
    await redis.kill();
    const killedAt = n;
    await until(async () => (await pub.stats()).redis_up === 0, 'the publisher saw Redis go');
    await sleep(SOAK ? 5000 : 600);
    const down = await health(a);
    assert.equal(down.status, 200);
    assert.deepEqual(down.body, { status: 'degraded', redis: 'down' });
    const lostWhileDown = (await pub.stats()).remote_lost;
    assert.ok(lostWhileDown > 0, `publishes that could not go to Redis are counted: ${lostWhileDown}`);
    await redis.restart();
    await until(async () => (await redis.numsub('pulsec:ticks')) === 3, 'every worker subscribed again', { ms: 15000 });
    const resumedFrom = n;
    await until(() => remote.every((s) => s.events('t').some((m) => m.payload >= resumedFrom + 5)), 'cross-node after the restart', { ms: 15000 });
    stop = true;
    await ticking;
    const last = n - 1;
    // Local: every tick, in order, on both workers of node a, through the outage.
    for (const s of local) {
      await s.waitCount('t', n);
      assert.deepEqual(s.payloads('t'), [...Array(n).keys()], 'local delivery never stopped');
    }
    // Remote: in order, nothing twice; a gap around the outage, nothing after it missing.
    for (const s of remote) {
      const got = s.payloads('t');
      for (let i = 1; i < got.length; i++) assert.ok(got[i] > got[i - 1], 'in order, at most once');
      assert.ok(got.includes(killedAt - 1) || got.at(-1) >= killedAt - 5, 'delivered before the kill');
      assert.ok(got.length < n, 'the outage lost some');
      assert.ok(got.at(-1) >= last - 1 || got.at(-1) === last, 'delivered after the restart');
    }
    const st = await pub.stats();
    assert.equal(st.redis_up, 1);
    assert.ok(st.redis_reconnects >= 1, `reconnects ${st.redis_reconnects}`);
    assert.deepEqual((await health(a)).body.redis, 'up');
    for (const s of [...local, ...remote]) s.close();
  });

  test('Redis down at start: the node serves, topics work locally, and it connects later', async () => {
    await redis.kill();
    const c = await startServer(['--redis', redis.url, '--redis-timeout', '500']);
    try {
      assert.deepEqual((await health(c)).body, { status: 'degraded', redis: 'down' });
      const s1 = await Subscriber.open(c.url, 'solo');
      const s2 = await Subscriber.open(c.url, 'solo');
      await s1.publish('solo', 'hi', 1);
      await s2.waitCount('hi', 1);
      assert.ok((await s1.stats()).remote_lost >= 1);
      await redis.restart();
      await until(async () => (await health(c)).body.redis === 'up', 'connected once Redis came', { ms: 15000 });
      await until(async () => (await redis.numsub('pulsec:solo')) === 1, 'subscribed on connect');
      s1.close();
      s2.close();
    } finally {
      await stopClean(c, 'node started without Redis');
    }
  });
});

describe('a Redis that stops answering', () => {
  let redis, a;
  before(async () => {
    redis = await Redis.start();
    a = await startServer(['--redis', redis.url, '--redis-timeout', '800', '--max-redis-queued', '20000']);
  });
  after(async () => {
    closeClients();
    redis?.resume();
    if (a) await stopClean(a, 'node');
    await redis?.stop();
  });

  test('never blocks the loop; bounded queue, dropped publishes counted; back when it answers', async () => {
    const s = await Subscriber.open(a.url, 'slow');
    const pub = await Subscriber.open(a.url, []);
    await until(async () => (await redis.numsub('pulsec:slow')) === 1, 'subscribed');
    redis.pause();
    const big = 'x'.repeat(1000);
    const t0 = performance.now();
    for (let i = 0; i < 60; i++) await pub.publish('slow', 'big', { i, big });
    const elapsed = performance.now() - t0;
    await s.waitCount('big', 60);
    // 60 publishes answered one after another while Redis answers nothing.
    assert.ok(elapsed < 5000, `publishing took ${elapsed.toFixed(0)} ms`);
    const st = await pub.stats();
    assert.ok(st.remote_lost >= 30, `beyond 20 KB unanswered, publishes are dropped: ${st.remote_lost}`);
    await s.client.assertEchoes(s.channel, 'loop-free');
    await until(async () => (await pub.stats()).redis_up === 0, 'unanswered PINGs take the broker down', { ms: 10000 });
    assert.equal((await health(a)).body.status, 'degraded');
    redis.resume();
    await until(async () => (await pub.stats()).redis_up === 1, 'back once Redis answers', { ms: 15000 });
    await until(async () => (await redis.numsub('pulsec:slow')) === 1, 'subscribed again');
    s.close();
    pub.close();
  });
});

describe('hostile messages on our Redis channels', () => {
  let redis, a;
  before(async () => {
    redis = await Redis.start();
    a = await startServer(['--redis', redis.url, '--max-payload', '4096']);
  });
  after(async () => {
    closeClients();
    if (a) await stopClean(a, 'node');
    await redis?.stop();
  });

  test('truncated, oversized, unknown-version, bad JSON or mismatched messages are refused and counted', async () => {
    const s = await Subscriber.open(a.url, 'room');
    await until(async () => (await redis.numsub('pulsec:room')) === 1, 'subscribed');
    const good = encode('room', 'news', '{"ok":1}');
    const hostile = [
      Buffer.from('hello'), // not ours
      good.subarray(0, 20), // truncated header
      good.subarray(0, good.length - 1), // truncated payload
      Buffer.concat([good, Buffer.from('x')]), // trailing bytes
      encode('room', 'news', '{"ok":1}', { version: 2 }), // unknown version
      encode('room', 'news', '{"ok":'), // invalid JSON
      encode('room', 'news', Buffer.from([0x22, 0xff, 0x22])), // not UTF-8
      encode('room', 'news', '{}  {}'), // two values
      encode('room', '__close__', 'null'), // would close the client's channel
      encode('other', 'news', '1'), // topic differs from its channel
      encode('room', 'news', JSON.stringify('y'.repeat(8000))), // over --max-payload
      Buffer.alloc(0),
    ];
    for (const m of hostile) assert.equal(await redis.publishRaw('pulsec:room', m), 1);
    await redis.publishRaw('pulsec:room', good);
    const [m] = await s.waitCount('news', 1);
    assert.deepEqual(m.payload, { ok: 1 }, 'a well-formed message from another node is delivered');
    await sleep(200);
    assert.equal(s.events('news').length, 1, 'nothing hostile was delivered');
    assert.equal(s.events('__close__').length, 0);
    const st = await s.stats();
    assert.equal(st.remote_invalid, hostile.length, JSON.stringify(st));
    assert.equal(st.remote_in, 1);
    await s.client.assertEchoes(s.channel, 'still-serving');
    s.close();
  });
});
