// make soak (issue 11): the cluster under churn for minutes, not part of make test. Two nodes x
// two workers on one redis-server (started here), clients on WebSocket and on long-polling (a
// new TCP connection per request), a publisher per node publishing all the time; meanwhile
// Redis is killed and restarted, and workers are killed with SIGKILL, again and again. At the
// end: every node's own subscribers received every publish of their node in order (local
// delivery never stops), cross-node delivery came back after every outage, nothing arrived
// twice, and every process exits 0 on SIGTERM (LeakSanitizer ran in each worker).
//
//   PULSEC_SOAK_SECONDS (default 120) sets the length.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, stopClean, killAll, closeClients, sleep } from '../integration/lib/server.mjs';
import { Subscriber, until } from '../integration/lib/topics.mjs';
import { Redis } from '../integration/lib/redis.mjs';

const SECONDS = Number(process.env.PULSEC_SOAK_SECONDS || 120);

after(async () => {
  closeClients();
  await killAll();
});

test(`cluster churn for ${SECONDS} s: Redis and workers killed, delivery keeps its promises`, { timeout: (SECONDS + 120) * 1000 }, async () => {
  const redis = await Redis.start();
  const nodes = [
    await startServer(['--workers', '2', '--redis', redis.url, '--redis-timeout', '1000']),
    await startServer(['--workers', '2', '--redis', redis.url, '--redis-timeout', '1000']),
  ];
  const opts = [{}, { transports: ['polling'], upgrade: false }];
  const subs = nodes.map(() => []);
  for (let n = 0; n < 2; n++)
    for (let i = 0; i < 8; i++) subs[n].push(await Subscriber.open(nodes[n].url, 'soak', opts[i % 2]));
  await until(async () => (await redis.numsub('pulsec:soak')) >= 3, 'subscribed', { ms: 15000 });
  const pubs = [];
  for (let n = 0; n < 2; n++) pubs.push(await Subscriber.open(nodes[n].url, []));
  const sent = [0, 0];
  let stop = false;
  const publishing = pubs.map((p, n) =>
    (async () => {
      while (!stop) {
        try {
          await p.publish('soak', `n${n}`, sent[n]);
          sent[n]++;
        } catch {
          /* the publisher's own worker was killed: its client is gone, stop this one */
          return;
        }
        await sleep(5);
      }
    })(),
  );
  const deadline = Date.now() + SECONDS * 1000;
  let kills = 0, outages = 0;
  while (Date.now() < deadline) {
    await sleep(3000);
    if (outages <= kills) {
      await redis.kill();
      await sleep(1500);
      await redis.restart();
      outages++;
    } else {
      // SIGKILL a worker of node 1 that owns no publisher (node 0's publisher stays alive).
      const alive = subs[1].filter((s) => s.client.connected);
      const victim = alive.length ? (await alive[kills % alive.length].stats().catch(() => null))?.pid : null;
      if (victim) {
        process.kill(victim, 'SIGKILL');
        kills++;
      }
      // New pages arrive meanwhile, on whichever worker the kernel picks (restarted ones too).
      await sleep(500);
      for (let i = 0; i < 2; i++) subs[1].push(await Subscriber.open(nodes[1].url, 'soak', opts[i % 2]));
    }
  }
  stop = true;
  await Promise.all(publishing);
  await sleep(1500);
  // Node 0's publisher lived throughout: each of node 0's surviving subscribers (its worker was
  // never killed) got every publish of node 0, in order.
  for (const s of subs[0]) {
    if (!s.client.connected) continue;
    const got = s.payloads('n0');
    assert.deepEqual(got, [...Array(sent[0]).keys()].slice(0, got.length), 'local delivery in order, nothing skipped');
    assert.equal(got.length, sent[0], 'local delivery never stopped');
  }
  // Cross-node: in order, never twice, and it came back after the last outage.
  for (const s of subs[1]) {
    if (!s.client.connected) continue;
    const got = s.payloads('n0');
    for (let i = 1; i < got.length; i++) assert.ok(got[i] > got[i - 1], 'at most once, in order');
    assert.ok(got.at(-1) >= sent[0] - 50, `cross-node delivery resumed (${got.at(-1)} of ${sent[0]})`);
  }
  console.log(`# soak: ${SECONDS} s, ${sent[0] + sent[1]} publishes, Redis killed ${outages} times, workers killed ${kills} times`);
  for (const s of [...subs.flat(), ...pubs]) s.close();
  for (const n of nodes) await stopClean(n, 'node after the soak');
  await redis.stop();
});
