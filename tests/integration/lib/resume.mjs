// Shared by the connection state recovery suites (resume*.test.mjs): a pulsec-client (over the
// official socket.io-client) attached to the echo fixture's /echo view through a CutProxy, and
// recorders that check what crossed the cuts: every event of a stream once and in order, every
// client request answered once, every server request handled once.

import assert from 'node:assert/strict';
import { createClient } from '../../../clients/js/src/index.js';
import { withTimeout } from './server.mjs';

/** A pulsec-client on `url` that reconnects fast; `log` collects its status and connects. */
export function recoveringClient(url, { transports = ['websocket'], ...extra } = {}) {
  const client = createClient({
    url,
    transports,
    reconnectionDelay: 30,
    reconnectionDelayMax: 150,
    randomizationFactor: 0.5,
    timeout: 5000,
    ...extra,
  });
  const log = { statuses: [], connects: [], errors: [] };
  client.on('status', (s) => log.statuses.push(s));
  client.on('connect', (info) => log.connects.push(info.recovered));
  client.on('error', (e) => log.errors.push(e));
  client.log = log;
  return client;
}

/** Attaches /echo; resolves with { view, bridge, channelId }. */
export async function attachEcho(client, props = {}) {
  const view = await withTimeout(client.attach('/echo', props), 10000, 'attach /echo');
  const channelId = view.props.channelId;
  return { view, bridge: client.channel(channelId), channelId };
}

/**
 * Records a stream of events `event` with payload {n}: `check(count)` asserts 1..count, each
 * once, in order.
 */
export function streamRecorder(bridge, event) {
  const seen = [];
  bridge.on(event, (p) => seen.push(p.n));
  return {
    seen,
    done: (count) => seen.length >= count,
    check(count) {
      const dups = seen.length - new Set(seen).size;
      assert.equal(dups, 0, `${dups} events delivered twice`);
      const lost = [];
      const have = new Set(seen);
      for (let i = 1; i <= count; i++) if (!have.has(i)) lost.push(i);
      assert.deepEqual(lost.slice(0, 20), [], `${lost.length} events lost`);
      for (let i = 1; i < seen.length; i++) {
        if (seen[i] !== seen[i - 1] + 1) assert.fail(`order broken at #${i}: ${seen[i - 1]} then ${seen[i]}`);
      }
      assert.equal(seen.length, count);
    },
  };
}

/**
 * Answers the server's requests `event` ({i}) with {i} and counts how often the handler ran for
 * each i; asks arrive through "ask:result" events. `check(n)` asserts every i in 0..n-1 was
 * handled exactly once and completed exactly once with status ok.
 */
export function askRecorder(bridge, event) {
  const handled = new Map();
  const results = new Map();
  bridge.on(event, (p) => {
    handled.set(p.i, (handled.get(p.i) || 0) + 1);
    return { i: p.i };
  });
  bridge.on('ask:result', (r) => {
    const i = r.payload?.i;
    const list = results.get(i) || [];
    list.push(r.status);
    results.set(i, list);
  });
  return {
    handled,
    results,
    done: (n) => results.size >= n,
    check(n) {
      const twice = [...handled].filter(([, c]) => c !== 1);
      assert.deepEqual(twice, [], 'server requests handled more than once');
      assert.equal(handled.size, n, 'server requests handled');
      const bad = [...results].filter(([, l]) => l.length !== 1 || l[0] !== 'ok');
      assert.deepEqual(bad.slice(0, 10), [], 'server requests completed other than once with ok');
      assert.equal(results.size, n, 'server requests completed');
    },
  };
}

/**
 * Runs `total` calls of `fn(i)` (each returning a Promise) with at most `inflight` at once;
 * resolves with the results in order of i.
 */
export async function pool(total, inflight, fn) {
  const out = new Array(total);
  let next = 0;
  async function worker() {
    while (next < total) {
      const i = next++;
      out[i] = await fn(i);
    }
  }
  await Promise.all(Array.from({ length: Math.min(inflight, total) }, worker));
  return out;
}

/** Polls `fn` until it returns a truthy value; rejects with `what` after `ms`. */
export async function until(fn, { ms = 10000, every = 20, what = 'condition' } = {}) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

/**
 * Cuts the client's connection (again and again while it has not noticed) until it reconnects;
 * resolves with whether that reconnect recovered the session.
 */
export async function cutAndWait(proxy, client, ms = 20000) {
  const before = client.log.connects.length;
  await until(
    () => {
      if (client.log.connects.length > before) return true;
      if (client.status === 'connected') proxy.cutAll();
      return false;
    },
    { ms, every: 25, what: 'a reconnect after the cut' },
  );
  return client.log.connects.at(-1);
}

/** incr results must be exactly 1..n (each request handled once, none lost). */
export function checkCounter(values, n) {
  const sorted = [...values].sort((a, b) => a - b);
  for (let i = 0; i < n; i++) {
    if (sorted[i] !== i + 1) assert.fail(`incr results are not 1..${n}: at ${i} got ${sorted[i]} (duplicates or losses)`);
  }
}
