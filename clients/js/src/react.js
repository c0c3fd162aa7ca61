"use client";
// React bindings of pulsec-client ("pulsec-client/react"): a provider for the client, and hooks
// that tie a view's attach, a channel's use and an event listener to a component's lifetime.
//
// Conventions: rendering has no side effects (views are attached and channels acquired in
// effects, so a render that is thrown away, a server render or a hydration touches nothing),
// and every external store has a constant server snapshot, so server HTML hydrates without a
// mismatch. The hooks survive StrictMode's mount/unmount/mount of effects without extra
// traffic: an attach starts on a microtask (so a mount that is immediately undone sends
// nothing), and a channel is released through the client's reference count, which closes it
// only a macrotask after the last release. Across a recovered reconnect nothing changes for
// them: the view, its props and the bridge carry on.

import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useInsertionEffect,
  useRef,
  useState,
  useSyncExternalStore,
} from "react";

const PulseContext = createContext(null);

/**
 * Makes `client` available to the hooks below it.
 * @param {{ client: import("./client.js").PulseClient, children?: any }} props
 */
export function PulseProvider({ client, children }) {
  if (!client) throw new TypeError("PulseProvider needs a client (createClient())");
  return createElement(PulseContext.Provider, { value: client }, children);
}

/** The client of the nearest PulseProvider. */
export function usePulseClient() {
  const client = useContext(PulseContext);
  if (!client) {
    throw new Error("usePulseClient: no <PulseProvider client={...}> above this component");
  }
  return client;
}

/** What the server renders, and so what hydration starts from: no connection exists there. */
const SERVER_STATUS = "connecting";
const serverStatus = () => SERVER_STATUS;

/**
 * The client's connection status ("connecting", "connected", "reconnecting", "disconnected");
 * re-renders when it changes. Renders "connecting" on the server and while hydrating.
 */
export function usePulseStatus() {
  const client = usePulseClient();
  const subscribe = useCallback((cb) => client.on("status", cb), [client]);
  const get = useCallback(() => client.status, [client]);
  return useSyncExternalStore(subscribe, get, serverStatus);
}

const LOADING = Object.freeze({
  status: "loading",
  props: undefined,
  error: undefined,
  view: undefined,
});

/**
 * Attaches the view at `path` with `props` while the component is mounted, and again when
 * `path` or `props` change (compared by their JSON text). Detaches on unmount.
 * @param {string} path
 * @param {unknown} [props] any JSON value
 * @returns {{ status: "loading" | "ready" | "error", props: any, error: Error | undefined,
 *             view: import("./view.js").View | undefined }}
 */
export function usePulseView(path, props) {
  const client = usePulseClient();
  const key = JSON.stringify(props === undefined ? null : props);
  const [state, setState] = useState(null);

  useEffect(() => {
    const tag = { client, path, key };
    let cancelled = false;
    let view = null;
    const offs = [];
    const set = (result) => setState({ ...tag, result });
    queueMicrotask(() => {
      if (cancelled) return;
      client.attach(path, JSON.parse(key)).then(
        (v) => {
          if (cancelled) {
            v.detach();
            return;
          }
          view = v;
          set({ status: "ready", props: v.props, error: undefined, view: v });
          offs.push(v.onProps((p) => set({ status: "ready", props: p, error: undefined, view: v })));
          offs.push(v.onError((err) => set({ status: "error", props: v.props, error: err, view: v })));
        },
        (err) => {
          if (!cancelled) set({ status: "error", props: undefined, error: err, view: undefined });
        },
      );
    });
    return () => {
      cancelled = true;
      for (const off of offs) off();
      if (view) view.detach();
    };
  }, [client, path, key]);

  // A state left from other arguments (or another client) reads as loading.
  if (!state || state.client !== client || state.path !== path || state.key !== key) return LOADING;
  return state.result;
}

const noop = () => {};
const serverClosed = () => true;

/**
 * The bridge of channel `channelId`, the same object across renders. The channel is acquired
 * in an effect (so the first render, and a server render, give null) and released after the
 * component unmounts or the id changes: it closes (`__close__` sent) unless another holder
 * still uses it. Re-renders when the bridge closes, so `bridge.closed` is current. Returns null
 * when `channelId` is null, undefined or "", and until the effect has run.
 * @param {string | null | undefined} channelId
 * @returns {import("./channel.js").Channel | null}
 */
export function usePulseChannel(channelId) {
  const client = usePulseClient();
  const id = channelId == null || channelId === "" ? null : channelId;
  const [held, setHeld] = useState(null);

  useEffect(() => {
    if (id === null) return undefined;
    const bridge = client.acquireChannel(id);
    setHeld((prev) =>
      prev && prev.client === client && prev.id === id && prev.bridge === bridge ? prev : { client, id, bridge },
    );
    return () => client.releaseChannel(id);
  }, [client, id]);

  // A bridge held for other arguments (or another client) is not this one.
  const bridge = held && held.client === client && held.id === id ? held.bridge : null;
  const subscribe = useCallback((cb) => (bridge ? bridge.onClose(cb) : noop), [bridge]);
  const closed = useCallback(() => (bridge ? bridge.closed : true), [bridge]);
  useSyncExternalStore(subscribe, closed, serverClosed);
  return bridge;
}

/**
 * Listens for `event` on `bridge` while the component is mounted (and the bridge is open),
 * calling the latest `handler` of each render: a new function each render does not re-register
 * the listener, so buffered events are not replayed and nothing is missed in between. As with
 * `bridge.on`, the handler's return value (or awaited Promise) answers the server's requests.
 * `bridge` may be null (nothing is registered until it is not).
 * @param {import("./channel.js").Channel | null | undefined} bridge
 * @param {string} event
 * @param {(payload: any) => unknown} handler
 */
export function usePulseEvent(bridge, event, handler) {
  if (typeof handler !== "function") throw new TypeError("usePulseEvent: handler must be a function");
  const latest = useRef(handler);
  // An insertion effect runs before every other effect of the commit (so no listener sees a
  // stale handler) and never on the server.
  useInsertionEffect(() => {
    latest.current = handler;
  });
  useEffect(() => {
    if (!bridge || bridge.closed) return undefined;
    return bridge.on(event, (payload) => latest.current(payload));
  }, [bridge, event]);
}
