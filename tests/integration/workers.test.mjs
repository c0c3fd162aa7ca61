// Workers (issue 11, DESIGN §5): `echo --workers 2` runs two processes on one port with
// SO_REUSEPORT. The kernel picks a worker for every TCP connection, so a long-polling client
// whose requests each come on a new connection (socket.io-client's default in Node) keeps
// reaching the worker that does not own its session; the request must be handed over to the
// owner (the sid names it). Also: the polling -> WebSocket upgrade across workers, keep-alive
// connections shared by sessions of both workers (every request routed again), topics across
// workers, a worker killed with SIGKILL (restarted, the other's clients unaffected), and a
// graceful SIGTERM of the whole group (every worker exits 0: LeakSanitizer ran in each).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startServer, stopClean, killAll, closeClients, sleep, httpRaw, request, HttpConn } from './lib/server.mjs';
import { ChannelTestClient } from './lib/channels.mjs';
import { Subscriber, until } from './lib/topics.mjs';

const SOAK = Number(process.env.PULSEC_SOAK || 0) > 0; // make soak: more rounds

after(async () => {
  closeClients();
  await killAll();
});

/** Connects `n` channel clients with `extra` options and attaches /echo on each. */
async function openMany(url, n, extra) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const c = await ChannelTestClient.connect(url, extra);
    const { channel } = await c.attachEcho();
    out.push({ c, channel });
  }
  return out;
}

/** stats of every worker that owns one of `clients` (keyed by worker index). */
async function statsByWorker(clients) {
  const by = new Map();
  for (const { c, channel } of clients) {
    const st = await c.stats(channel);
    by.set(st.worker, st);
  }
  return by;
}

describe('two workers on one port', () => {
  let srv;

  before(async () => {
    srv = await startServer(['--workers', '2', '--ping-interval', '2000', '--ping-timeout', '3000']);
  });
  after(async () => {
    closeClients();
    await stopClean(srv, 'echo --workers 2');
    assert.match(srv.exitResult.stderr + srv.stdout(), /listening on/);
  });

  test('polling clients with a new TCP connection per request: every request reaches its session', async () => {
    const clients = await openMany(srv.url, SOAK ? 64 : 16, { transports: ['polling'], upgrade: false });
    for (let round = 0; round < (SOAK ? 40 : 3); round++) {
      await Promise.all(clients.map(({ c, channel }) => c.assertEchoes(channel, `r${round}`)));
    }
    const owners = new Set();
    for (const { c, channel } of clients) {
      const st = await c.stats(channel);
      owners.add(st.worker);
      assert.equal(c.socket.io.engine.transport.name, 'polling');
    }
    assert.deepEqual([...owners].sort(), [0, 1], 'sessions on both workers');
    const by = await statsByWorker(clients);
    const handed = [...by.values()].reduce((t, s) => t + s.handed_over, 0);
    const taken = [...by.values()].reduce((t, s) => t + s.taken_over, 0);
    assert.ok(handed > 10, `requests handed over between workers: ${handed}`);
    assert.ok(taken > 10, `requests taken over: ${taken}`);
    for (const { c } of clients) c.disconnect();
  });

  test('one keep-alive connection carrying requests of sessions on both workers: each is routed again', async () => {
    // Handshakes on fresh connections until there is a session on each worker (the sid's
    // first character names its worker: A = 0, B = 1).
    const sids = new Map();
    for (let i = 0; i < 60 && sids.size < 2; i++) {
      const res = await httpRaw(srv, request('GET', '/socket.io/?EIO=4&transport=polling', { close: true }));
      res.conn.destroy();
      assert.equal(res.status, 200, res.text);
      const { sid } = JSON.parse(res.text.slice(1));
      sids.set(sid[0], sid);
    }
    assert.deepEqual([...sids.keys()].sort(), ['A', 'B'], 'sessions on both workers');
    const conn = await HttpConn.connect(srv);
    const poll = async (sid, method, body) => {
      await conn.write(request(method, `/socket.io/?EIO=4&transport=polling&sid=${sid}`, { body, headers: body ? { 'Content-Type': 'text/plain;charset=UTF-8' } : {} }));
      return conn.readResponse();
    };
    for (const sid of sids.values()) {
      assert.equal((await poll(sid, 'POST', '40')).text, 'ok');
      assert.match((await poll(sid, 'GET')).text, /^40\{"sid"/);
    }
    for (let round = 0; round < (SOAK ? 200 : 6); round++) {
      for (const [w, sid] of sids) {
        const posted = await poll(sid, 'POST', `42["w${w}",${round}]`);
        assert.equal(posted.status, 200, posted.text);
        assert.equal(posted.text, 'ok');
        const got = await poll(sid, 'GET');
        assert.equal(got.text, `42["w${w}",${round}]`, `round ${round}, session on worker ${w}`);
      }
    }
    assert.equal(conn.ended, false, 'the one connection served every request');
    conn.destroy();
  });

  test('a sid naming no worker, or a worker that does not exist, is refused as unknown', async () => {
    for (const sid of ['Z' + 'x'.repeat(19), '~bogus', 'B' + 'x'.repeat(19)]) {
      const res = await httpRaw(srv, request('GET', `/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(sid)}`, { close: true }));
      res.conn.destroy();
      assert.equal(res.status, 400, `${sid}: ${res.status} ${res.text}`);
      assert.deepEqual(JSON.parse(res.text), { code: 1, message: 'Session ID unknown' });
    }
  });

  test('the polling -> WebSocket upgrade works when the upgrade lands on the other worker', async () => {
    const clients = await openMany(srv.url, 16, { transports: ['polling', 'websocket'] });
    await until(() => clients.every(({ c }) => c.socket.io.engine.transport.name === 'websocket'), 'every client upgraded');
    await Promise.all(clients.map(({ c, channel }) => c.assertEchoes(channel, 'upgraded')));
    const by = await statsByWorker(clients);
    assert.equal(by.size, 2, 'sessions on both workers');
    for (const { c } of clients) c.disconnect();
  });

  test('a publish on one worker reaches the members on every worker, once, in order', async () => {
    const subs = [];
    const seen = new Set();
    // Until both workers have members (the kernel spreads connections at random).
    while (subs.length < 12 || seen.size < 2) {
      const s = await Subscriber.open(srv.url, 'across', { transports: ['polling', 'websocket'] });
      seen.add((await s.stats()).worker);
      subs.push(s);
      assert.ok(subs.length < 60, 'connections never reached both workers');
    }
    const pub = subs[0];
    for (let i = 0; i < 20; i++) pub.client.request(pub.channel, 'publish', { topic: 'across', event: 'n', payload: i, exceptSelf: true });
    for (const s of subs.slice(1)) {
      const got = await s.waitCount('n', 20);
      assert.deepEqual(got.map((m) => m.payload), [...Array(20).keys()], 'in order, each once');
    }
    await sleep(200);
    for (const s of subs.slice(1)) assert.equal(s.events('n').length, 20, 'no duplicates');
    assert.equal(pub.events('n').length, 0, 'exceptSelf');
    const st = await pub.stats();
    assert.ok(st.remote_out >= 20, `remote_out ${st.remote_out}`);
    assert.equal(st.remote_lost, 0);
    for (const s of subs) s.close();
  });
});

describe('a worker killed with SIGKILL', () => {
  let srv;

  before(async () => {
    srv = await startServer(['--workers', '2']);
  });
  after(async () => {
    closeClients();
    await stopClean(srv, 'echo --workers 2 after a worker was killed');
  });

  test('is restarted, and the clients of the other worker are not disturbed', async () => {
    const clients = [];
    const byWorker = new Map([[0, []], [1, []]]);
    while (byWorker.get(0).length < 3 || byWorker.get(1).length < 3) {
      const [x] = await openMany(srv.url, 1);
      const st = await x.c.stats(x.channel);
      x.worker = st.worker;
      x.pid = st.pid;
      byWorker.get(st.worker).push(x);
      clients.push(x);
      assert.ok(clients.length < 60, 'connections never reached both workers');
    }
    const victim = byWorker.get(1)[0].pid;
    const survivors = byWorker.get(0);
    let witnessErrors = 0;
    let witnessRounds = 0;
    let stop = false;
    const witness = (async () => {
      while (!stop) {
        await Promise.all(survivors.map(({ c, channel }) => c.assertEchoes(channel, 'witness').catch(() => witnessErrors++)));
        witnessRounds++;
        await sleep(10);
      }
    })();
    process.kill(victim, 'SIGKILL');
    await Promise.all(byWorker.get(1).map(({ c }) => c.waitDisconnect(10000)));
    // The supervisor restarts worker 1: new connections reach a process with another pid.
    await until(() => /worker 1 \(pid \d+\) killed by signal 9/.test(srv.stderr()), 'the supervisor saw the kill');
    await until(() => /worker 1 restarted \(pid \d+\)/.test(srv.stderr()), 'worker 1 restarted', { ms: 15000 });
    let fresh;
    for (let i = 0; i < 60 && !fresh; i++) {
      const [x] = await openMany(srv.url, 1);
      const st = await x.c.stats(x.channel);
      if (st.worker === 1) fresh = st;
      x.c.disconnect();
    }
    assert.ok(fresh, 'a connection reached the restarted worker');
    assert.notEqual(fresh.pid, victim);
    stop = true;
    await witness;
    assert.equal(witnessErrors, 0, 'the other worker\'s clients kept being answered');
    assert.ok(witnessRounds > 3);
    for (const { c } of survivors) assert.ok(c.connected);
    for (const { c } of clients) c.disconnect();
  });
});

describe('workers that cannot listen', () => {
  test('the supervisor exits 1 saying why (port taken), without an abort or a leak', async () => {
    const taken = net.createServer();
    await new Promise((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      await assert.rejects(startServer(['--workers', '2', '--port', String(taken.address().port)]),
        (e) => /exited before listening \(code 1, signal null\)/.test(e.message) && /address already in use/.test(e.message));
    } finally {
      taken.close();
    }
  });
});
