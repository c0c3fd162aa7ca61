// Helpers for the topic suites (issue 11): the /echo fixture's join, leave and publish
// requests on top of ChannelTestClient, and a subscriber that records every publish it
// receives, for the one-process, multi-worker and multi-node tests alike.
//
//   const sub = await Subscriber.open(url, 'room');     // attach /echo, join 'room'
//   await publish(sub.client, sub.channel, 'room', 'news', { n: 1 });
//   await sub.waitCount('news', 1);
//
// Nothing here contacts anything but the servers under test (127.0.0.1).

import assert from 'node:assert/strict';
import { ChannelTestClient } from './channels.mjs';
import { withTimeout } from './server.mjs';

/** The /echo fixture's join request; resolves with the response envelope. */
export function join(client, channel, topic) {
  return client.request(channel, 'join', { topic });
}

export function leave(client, channel, topic) {
  return client.request(channel, 'leave', { topic });
}

/** Publishes through the fixture; asserts {"ok": true} unless `expectError`. */
export async function publish(client, channel, topic, event, payload, { exceptSelf = false, ms = 5000 } = {}) {
  const res = await client.request(channel, 'publish', { topic, event, payload, exceptSelf }, { ms });
  assert.deepEqual(res.payload, { ok: true }, `publish to ${topic}: ${JSON.stringify(res)}`);
  return res;
}

/** Asserts a join/leave/publish response is {"ok": true}. */
export function assertOk(res, what = 'request') {
  assert.equal(res.error, undefined, `${what} failed: ${JSON.stringify(res)}`);
  assert.deepEqual(res.payload, { ok: true }, `${what}: ${JSON.stringify(res)}`);
}

/**
 * One client with one /echo channel joined to some topics, recording the channel events it
 * receives (publishes arrive as ordinary events on the channel).
 */
export class Subscriber {
  static async open(url, topics = [], extra = {}) {
    const client = await ChannelTestClient.connect(url, extra);
    const { channel, attachId } = await client.attachEcho();
    const s = new Subscriber(client, channel, attachId);
    for (const t of [].concat(topics)) assertOk(await join(client, channel, t), `join ${t}`);
    return s;
  }

  constructor(client, channel, attachId) {
    this.client = client;
    this.channel = channel;
    this.attachId = attachId;
  }

  /** Every event (not response) received on this subscriber's channel named `event`. */
  events(event) {
    return this.client.log.filter(
      (m) => m && m.type === 'channel_message' && m.channel === this.channel && m.event === event && m.responseTo === undefined,
    );
  }

  payloads(event) {
    return this.events(event).map((m) => m.payload);
  }

  /** Resolves once `n` events named `event` have arrived. */
  waitCount(event, n, ms = 10000) {
    return withTimeout(
      new Promise((resolve) => {
        const check = () => {
          if (this.events(event).length >= n) {
            this.client.waiters.delete(check);
            resolve(this.events(event));
          }
        };
        this.client.waiters.add(check);
        check();
      }),
      ms,
      `${n} "${event}" events on ${this.channel} (have ${this.events(event).length})`,
    );
  }

  join(topic) {
    return join(this.client, this.channel, topic);
  }

  leave(topic) {
    return leave(this.client, this.channel, topic);
  }

  publish(topic, event, payload, opts) {
    return publish(this.client, this.channel, topic, event, payload, opts);
  }

  stats() {
    return this.client.stats(this.channel);
  }

  close() {
    this.client.disconnect();
  }
}

/** Polls `fn` (sync or async) until it returns truthy; fails with `what` after `ms`. */
export async function until(fn, what, { ms = 10000, every = 25 } = {}) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}
