// Shared by the integration suites: a pulsec-client (over the real socket.io-client) talking
// to the real echo server, plus small helpers around its /echo view.

import { createClient } from "../../src/index.js";
import { withTimeout } from "./echo-server.js";

export const HEX32 = /^[0-9a-f]{32}$/;

const clients = new Set();

/** A client for `url` with fast reconnects; closed by closeClients(). */
export function newClient(url, options = {}) {
  const client = createClient({
    url,
    reconnectionDelay: 100,
    reconnectionDelayMax: 300,
    randomizationFactor: 0,
    ...options,
  });
  clients.add(client);
  return client;
}

export function closeClients() {
  for (const c of clients) c.close();
  clients.clear();
}

/** Attaches /echo and opens its channel: { view, bridge }. */
export async function openEcho(client, props) {
  const view = await withTimeout(client.attach("/echo", props), 5000, "attach /echo");
  const bridge = client.channel(view.props.channelId);
  return { view, bridge };
}

/** The server's counters, asked over `bridge` (an /echo channel). */
export function stats(bridge) {
  return bridge.request("stats", null, { timeout: 3000 });
}

/**
 * Collects the server's "ask:result" events on `bridge`; `next()` resolves with the next one.
 * Registering the listener first matters: events without a listener are kept for later.
 */
export function askResults(bridge) {
  const queue = [];
  const waiters = [];
  bridge.on("ask:result", (r) => {
    const w = waiters.shift();
    if (w) w(r);
    else queue.push(r);
  });
  return {
    queue,
    next(ms = 5000) {
      if (queue.length) return Promise.resolve(queue.shift());
      return withTimeout(new Promise((resolve) => waiters.push(resolve)), ms, "ask:result");
    },
  };
}

/** Makes the server request `event` with `payload` from the client over `bridge`. */
export function ask(bridge, event, payload, timeoutMs = 2000) {
  bridge.emit("ask", { event, payload, timeout_ms: timeoutMs });
}
