// The client side of the pytest suite (tests/python): a Node process that runs real
// socket.io-client connections (the official client, from the root node_modules) and speaks
// the channel envelope of DESIGN §3 on them, steered by the tests over stdin/stdout with one
// JSON object per line:
//
//   -> {"id": 1, "op": "connect", "client": "a", "url": "http://127.0.0.1:PORT", ...}
//   <- {"id": 1, "ok": true, ...}          or {"id": 1, "ok": false, "error": "..."}
//
// The envelope is written here by hand, not through pulsec-client, so that the tests control
// every byte the server sees: answers that never come, error answers, events for closed
// channels, a __close__ in the middle of a request. Every message the server sends is logged
// per client; "wait" resolves once the log holds what a test waits for.
//
// Operations (fields beyond "id" and "op"):
//   connect  client url [auth] [query] [headers] [insecure] -> sid | error, data (connect_error);
//            insecure: accept any TLS certificate (the test's own, self-signed)
//   attach   client path [props] [attachId]        -> props | error (attach_error)
//   detach   client attachId
//   emit     client channel event [payload]
//   request  client channel event [payload] [timeoutMs]  -> payload | error
//   answer   client channel event mode [value] [delayMs] : how this client answers the server's
//            requests for that event: "echo" (the payload), "value", "error" (value as the
//            text), "never"; answers wait delayMs first
//   close    client channel                        : the client releases the channel (__close__)
//   wait     client [channel] [event] [count] [timeoutMs] -> messages (the first `count`
//            server messages matching, taken off the log)
//   log      client                                -> messages (everything still logged)
//   status   client                                -> connected
//   disconnect client
//   churn    url n [connections] [path] : `connections` times connect, attach, close; then n
//            cycles of attach, one request "echo", detach on one more connection; every server
//            request "server:ping" is answered; -> cycles, ms, errors
//   (a channel of "*" in answer applies the rule to every channel of the client)
//   exit

import { randomBytes } from "node:crypto";
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const clients = new Map();
const id16 = () => randomBytes(16).toString("hex");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function reply(id, body) {
  process.stdout.write(JSON.stringify({ id, ...body }) + "\n");
}

function channelMessage(channel, fields) {
  return { type: "channel_message", channel, ...fields };
}

// JSON has no bytes: {"$bytes": "<base64>"} from a test is sent as a Buffer (a Socket.IO
// binary attachment), and a Buffer from the server is logged as {"$bytes": "<base64>"}.
function revive(x) {
  if (Array.isArray(x)) return x.map(revive);
  if (x && typeof x === "object") {
    if (typeof x.$bytes === "string" && Object.keys(x).length === 1) return Buffer.from(x.$bytes, "base64");
    return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, revive(v)]));
  }
  return x;
}

function plain(x) {
  if (Buffer.isBuffer(x)) return { $bytes: x.toString("base64") };
  if (x instanceof ArrayBuffer) return { $bytes: Buffer.from(x).toString("base64") };
  if (Array.isArray(x)) return x.map(plain);
  if (x && typeof x === "object") return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, plain(v)]));
  return x;
}

class Client {
  constructor(name, socket) {
    this.name = name;
    this.socket = socket;
    this.log = [];
    this.waiters = [];
    this.attaches = new Map(); // attachId -> resolve
    this.requests = new Map(); // requestId -> resolve
    this.answers = new Map(); // `${channel}\0${event}` -> {mode, value, delayMs}
    socket.on("message", (msg) => this.onMessage(plain(msg)));
  }

  send(msg) {
    this.socket.emit("message", msg);
  }

  onMessage(msg) {
    if (msg === null || typeof msg !== "object") return;
    if (msg.type === "attach_ack" || msg.type === "attach_error") {
      const done = this.attaches.get(msg.attachId);
      if (done) {
        this.attaches.delete(msg.attachId);
        done(msg.type === "attach_ack" ? { ok: true, props: msg.props } : { ok: false, error: msg.error });
        return;
      }
    }
    if (msg.type === "channel_message" && typeof msg.responseTo === "string") {
      const done = this.requests.get(msg.responseTo);
      if (done) {
        this.requests.delete(msg.responseTo);
        done("error" in msg && msg.error !== undefined && msg.error !== null
          ? { ok: false, error: msg.error }
          : { ok: true, payload: msg.payload ?? null });
        return;
      }
    }
    if (msg.type === "channel_message" && typeof msg.requestId === "string") {
      const rule = this.answers.get(`${msg.channel}\0${msg.event}`) ?? this.answers.get(`*\0${msg.event}`);
      if (rule) void this.answer(msg, rule);
    }
    this.log.push(msg);
    this.wake();
  }

  async answer(msg, rule) {
    if (rule.mode === "never") return;
    if (rule.delayMs) await sleep(rule.delayMs);
    const fields =
      rule.mode === "error" ? { responseTo: msg.requestId, error: String(rule.value) }
      : rule.mode === "echo" ? { responseTo: msg.requestId, payload: msg.payload }
      : { responseTo: msg.requestId, payload: revive(rule.value ?? null) };
    this.send(channelMessage(msg.channel, fields));
  }

  wake() {
    for (const w of [...this.waiters]) w.check();
  }

  wait({ channel, event, count = 1, timeoutMs = 10000 }) {
    return new Promise((resolve) => {
      const matches = (m) =>
        (channel === undefined || m.channel === channel) &&
        (event === undefined || m.event === event || m.type === event);
      const w = {
        check: () => {
          const found = this.log.filter(matches);
          if (found.length < count) return;
          const taken = found.slice(0, count);
          this.log = this.log.filter((m) => !taken.includes(m));
          this.waiters = this.waiters.filter((x) => x !== w);
          clearTimeout(w.timer);
          resolve({ ok: true, messages: taken });
        },
        timer: setTimeout(() => {
          this.waiters = this.waiters.filter((x) => x !== w);
          resolve({ ok: false, error: `timed out waiting for ${count} x ${event ?? "*"}`, messages: this.log.filter(matches) });
        }, timeoutMs),
      };
      this.waiters.push(w);
      w.check();
    });
  }
}

function connect(url, { auth, query, headers, insecure } = {}) {
  return new Promise((resolve) => {
    const socket = io(url, {
      transports: ["websocket"],
      reconnection: false,
      forceNew: true,
      auth: auth ?? {},
      query: query ?? {},
      extraHeaders: headers ?? {},
      rejectUnauthorized: !insecure, // a test's own self-signed certificate
    });
    socket.once("connect", () => resolve({ ok: true, socket }));
    socket.once("connect_error", (err) => {
      socket.close();
      resolve({ ok: false, error: err.message, data: err.data ?? null });
    });
  });
}

function attach(c, path, props, attachId = id16()) {
  return new Promise((resolve) => {
    c.attaches.set(attachId, (r) => resolve({ ...r, attachId }));
    c.send({ type: "attach", path, attachId, props: props ?? null });
  });
}

function request(c, channel, event, payload, timeoutMs = 10000) {
  return new Promise((resolve) => {
    const requestId = id16();
    const timer = setTimeout(() => {
      c.requests.delete(requestId);
      resolve({ ok: false, error: "driver: no answer", timedOut: true });
    }, timeoutMs);
    c.requests.set(requestId, (r) => {
      clearTimeout(timer);
      resolve(r);
    });
    c.send(channelMessage(channel, { event, payload: payload ?? null, requestId }));
  });
}

async function churn({ url, n, connections = 0, path = "/echo" }) {
  const t0 = Date.now();
  let errors = 0;
  for (let i = 0; i < connections; i++) {
    const r = await connect(url);
    if (!r.ok) {
      errors++;
      continue;
    }
    const c = new Client("churn", r.socket);
    c.answers.set("*\0server:ping", { mode: "echo" });
    if (!(await attach(c, path, { i })).ok) errors++;
    r.socket.close();
  }
  const r = await connect(url);
  if (!r.ok) return { ok: false, error: r.error };
  const c = new Client("churn", r.socket);
  c.answers.set("*\0server:ping", { mode: "echo" }); // the view's own request, answered
  for (let i = 0; i < n; i++) {
    const a = await attach(c, path, { i });
    if (!a.ok) {
      errors++;
      continue;
    }
    const q = await request(c, a.props.channelId, "echo", { i });
    if (!q.ok || q.payload?.i !== i) errors++;
    c.send({ type: "detach", attachId: a.attachId });
    c.log = []; // the __close__ of each detach
  }
  // A last round trip: every detach above has been handled once its answer is here.
  const a = await attach(c, path, {});
  if (a.ok) c.send({ type: "detach", attachId: a.attachId });
  r.socket.close();
  return { ok: true, cycles: n, connections, errors, ms: Date.now() - t0 };
}

const ops = {
  async connect(m) {
    const r = await connect(m.url, m);
    if (!r.ok) return r;
    clients.set(m.client, new Client(m.client, r.socket));
    return { ok: true, sid: r.socket.id };
  },
  attach: (m, c) => attach(c, m.path, m.props, m.attachId),
  detach(m, c) {
    c.send({ type: "detach", attachId: m.attachId });
    return { ok: true };
  },
  emit(m, c) {
    c.send(channelMessage(m.channel, { event: m.event, payload: revive(m.payload ?? null) }));
    return { ok: true };
  },
  request: (m, c) => request(c, m.channel, m.event, revive(m.payload), m.timeoutMs),
  answer(m, c) {
    c.answers.set(`${m.channel}\0${m.event}`, { mode: m.mode, value: m.value, delayMs: m.delayMs ?? 0 });
    return { ok: true };
  },
  close(m, c) {
    c.send(channelMessage(m.channel, { event: "__close__", payload: null }));
    return { ok: true };
  },
  raw(m, c) {
    c.send(m.message);
    return { ok: true };
  },
  wait: (m, c) => c.wait(m),
  log(m, c) {
    const messages = c.log;
    c.log = [];
    return { ok: true, messages };
  },
  status(m, c) {
    return { ok: true, connected: c.socket.connected };
  },
  disconnect(m, c) {
    c.socket.close();
    clients.delete(m.client);
    return { ok: true };
  },
  churn: (m) => churn(m),
  exit() {
    for (const c of clients.values()) c.socket.close();
    setTimeout(() => process.exit(0), 10);
    return { ok: true };
  },
};

const rl = createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  let m;
  try {
    m = JSON.parse(line);
  } catch {
    return;
  }
  const op = ops[m.op];
  if (!op) return reply(m.id, { ok: false, error: `unknown op ${m.op}` });
  const c = m.client === undefined ? undefined : clients.get(m.client);
  if (m.op !== "connect" && m.op !== "churn" && m.op !== "exit" && !c) {
    return reply(m.id, { ok: false, error: `no client ${m.client}` });
  }
  try {
    reply(m.id, await op(m, c));
  } catch (err) {
    reply(m.id, { ok: false, error: String(err?.stack ?? err) });
  }
});
rl.on("close", () => process.exit(0));
process.stdout.write(JSON.stringify({ ready: true }) + "\n");
