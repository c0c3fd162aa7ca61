// Compiled by `tsc -p test/types` (see test/unit/types.test.js): the declarations must accept
// the documented usage and reject misuse (the @ts-expect-error lines).

import {
  createClient,
  Channel,
  ChannelClosed,
  ChannelError,
  ChannelTimeout,
  AttachError,
  PulseError,
  type ChannelBridge,
  type ClientStatus,
  type View,
} from "pulsec-client";

interface ChatProps {
  channelId: string;
}

export async function main(): Promise<void> {
  const client = createClient({ url: "http://localhost:8000", auth: { token: "t" }, path: "/socket.io/", transports: ["websocket"], reconnectionDelay: 100, maxQueued: 10 });
  const status: ClientStatus = client.status;
  const offStatus: () => void = client.on("status", (s: ClientStatus) => void s);
  client.on("connect_error", (e: Error) => void e.message);
  client.on("connect", ({ recovered }) => void (recovered satisfies boolean));
  const recovered: boolean = client.recovered;
  const reconnecting: ClientStatus = "reconnecting";
  client.on("error", (e: unknown) => void e);
  // @ts-expect-error unknown client event
  client.on("nope", () => {});

  const view: View<ChatProps> = await client.attach<ChatProps>("/chat", { room: 1 });
  const id: string = view.props.channelId;
  const attachId: string = view.attachId;
  const offProps = view.onProps((p, v) => void [p.channelId, v.path]);
  view.onError((e: AttachError) => void e.path);
  const state: "attaching" | "attached" | "failed" | "detached" = view.state;

  const bridge: ChannelBridge = client.channel(id);
  const same: Channel = client.acquireChannel(id);
  client.releaseChannel(id);
  bridge.emit("client:message", { text: "hi" });
  bridge.emit("client:ping");
  const n: number = await bridge.request<number>("client:count", null, { timeout: 5000 });
  const anything = await bridge.request("client:any");
  const off: () => void = bridge.on<{ text: string }>("server:message", (m) => m.text.length);
  bridge.on("server:ask", async (q) => ({ ok: true, q }));
  bridge.onClose((e: ChannelClosed) => void e.reason);
  const closed: boolean = bridge.closed;
  // @ts-expect-error timeout is a number
  bridge.request("x", null, { timeout: "5s" });
  const ac = new AbortController();
  await bridge.request("x", null, { timeout: 1000, signal: ac.signal });
  // @ts-expect-error signal is an AbortSignal
  bridge.request("x", null, { signal: "stop" });
  // @ts-expect-error id is read-only
  bridge.id = "other";
  bridge.close();

  try {
    await bridge.request("x");
  } catch (err) {
    if (err instanceof ChannelTimeout) void [err.timeout, err.event];
    else if (err instanceof ChannelClosed) void (err.reason satisfies "local" | "remote" | "disconnect" | "client");
    else if (err instanceof ChannelError) void err.message;
    if (err instanceof PulseError) void err.code;
  }
  view.detach();
  offProps();
  off();
  offStatus();
  client.close();
  void [status, attachId, state, same, n, anything, closed, recovered, reconnecting];
}
