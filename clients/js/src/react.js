// React bindings of pulsec-client ("pulsec-client/react"): a provider for the client, and hooks
// that tie a view's attach and a channel's use to a component's lifetime. Both hooks survive
// StrictMode's mount/unmount/mount of effects without extra traffic: an attach starts on a
// microtask (so a mount that is immediately undone sends nothing), and a channel is released
// through the client's reference count, which closes it only a macrotask after the last
// release.

import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useMemo,
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

/** The client's connection status; re-renders when it changes. */
export function usePulseStatus() {
  const client = usePulseClient();
  const subscribe = useCallback((cb) => client.on("status", cb), [client]);
  const get = () => client.status;
  return useSyncExternalStore(subscribe, get, get);
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

/**
 * The bridge of channel `channelId`, the same object across renders. The channel is held while
 * the component is mounted and released (closed, `__close__` sent) after it unmounts, unless
 * another holder still uses it. Re-renders when the bridge closes, so `bridge.closed` is
 * current. Returns null when `channelId` is null, undefined or "".
 * @param {string | null | undefined} channelId
 * @returns {import("./channel.js").Channel | null}
 */
export function usePulseChannel(channelId) {
  const client = usePulseClient();
  const bridge = useMemo(
    () => (channelId == null || channelId === "" ? null : client.channel(channelId)),
    [client, channelId],
  );

  useEffect(() => {
    if (!bridge) return undefined;
    client.acquireChannel(bridge.id);
    return () => client.releaseChannel(bridge.id);
  }, [client, bridge]);

  const subscribe = useCallback((cb) => (bridge ? bridge.onClose(cb) : noop), [bridge]);
  const closed = () => (bridge ? bridge.closed : true);
  useSyncExternalStore(subscribe, closed, closed);
  return bridge;
}
