// The channel playground: a tester page like Pulse's own.
//
// Every tester card attaches the view "/tester" of the C server (examples/playground/
// playground.c) and so owns one channel. Its buttons exercise the four directions of a channel
// (server emit, server request, client emit, client request) and its log shows both directions.
// Removing a tester, or leaving the page for "#/about", unmounts it: the view detaches and the
// server closes the channel, which the page log and the live /stats panel show.

import { useCallback, useEffect, useLayoutEffect, useRef, useState } from "react";
import { createRoot } from "react-dom/client";
import { ChannelTimeout, createClient } from "pulsec-client";
import {
  PulseProvider,
  usePulseChannel,
  usePulseClient,
  usePulseStatus,
  usePulseView,
} from "pulsec-client/react";
import "./style.css";

const client = createClient(); // the page's origin: the C server serves this page too

const short = (id) => id.slice(0, 8) + "…";
const clock = () => new Date().toLocaleTimeString([], { hour12: false });
const json = (v) => (v === undefined ? "" : JSON.stringify(v));

function useRoute() {
  const read = () => (location.hash === "#/about" ? "about" : "testers");
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const on = () => setRoute(read());
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return route;
}

function App() {
  const route = useRoute();
  const status = usePulseStatus();
  const [testers, setTesters] = useState([1]);
  const next = useRef(2);
  const [events, setEvents] = useState([]); // the page log: channel lifecycle
  const note = useCallback(
    (text, kind = "") => setEvents((prev) => [...prev.slice(-199), { at: clock(), text, kind }]),
    [],
  );

  // Watches every tester channel until the server closes it, so the close is seen even after
  // the tester that used it is gone. (Holding a reference keeps the client from closing the
  // channel itself when the tester's own hook lets go: the server's __close__ is what ends it.)
  const pulse = usePulseClient();
  const watched = useRef(new Set());
  const watch = useCallback(
    (n, id) => {
      if (watched.current.has(id)) return;
      watched.current.add(id);
      note(`tester #${n} attached /tester: channel ${short(id)} open`);
      const bridge = pulse.acquireChannel(id);
      bridge.onClose((err) => {
        watched.current.delete(id);
        const by = { remote: "the server", local: "this page", disconnect: "a lost connection" };
        note(`channel ${short(id)} of tester #${n} closed by ${by[err.reason] ?? err.reason}`, "closed");
        pulse.releaseChannel(id);
      });
    },
    [pulse, note],
  );

  const add = () => {
    const n = next.current++;
    setTesters((t) => [...t, n]);
  };
  const remove = (n) => {
    setTesters((t) => t.filter((x) => x !== n));
    note(`tester #${n} removed: view detached`);
  };

  const first = useRef(true);
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    if (route === "about") note(`navigated to #/about: ${testers.length} tester(s) unmounted`);
    else note(`back on #/: ${testers.length} tester(s) mounted again, with new channels`);
  }, [route]);

  return (
    <div className="app">
      <header>
        <h1>
          pulsec <span>playground</span>
        </h1>
        <nav>
          <a href="#/" className={route === "testers" ? "active" : ""}>
            Testers
          </a>
          <a href="#/about" className={route === "about" ? "active" : ""}>
            About
          </a>
        </nav>
        <span className={`status ${status}`}>{status}</span>
      </header>
      <div className="layout">
        <main>
          {route === "testers" ? (
            <>
              <div className="toolbar">
                <button className="primary" onClick={add}>
                  + Add tester
                </button>
                <span className="muted">
                  Each tester attaches the view <code>/tester</code> and gets its own channel.
                </span>
              </div>
              {testers.length === 0 && <p className="muted empty">No testers. Add one.</p>}
              <div className="testers">
                {testers.map((n) => (
                  <Tester key={n} n={n} onRemove={() => remove(n)} watch={watch} />
                ))}
              </div>
            </>
          ) : (
            <About />
          )}
        </main>
        <aside>
          <Stats />
          <section className="card grow">
            <h2>Page log</h2>
            <Log entries={events} testid="page-log" />
          </section>
        </aside>
      </div>
    </div>
  );
}

function Tester({ n, onRemove, watch }) {
  const view = usePulseView("/tester", { n }); // attached while mounted, detached on unmount
  const channelId = view.status === "ready" ? view.props.channelId : null;
  const bridge = usePulseChannel(channelId);
  const [log, setLog] = useState([]);
  const [ask, setAsk] = useState(null); // a pending server:ask: {payload, answer}
  const seq = useRef(0);
  const add = (dir, text) => setLog((prev) => [...prev.slice(-99), { at: clock(), dir, text }]);

  useEffect(() => {
    if (channelId) watch(n, channelId);
  }, [channelId]);

  useEffect(() => {
    if (!bridge || bridge.closed) return undefined;
    const offs = [
      bridge.on("server:notify", (p) => add("in", `server:notify ${json(p)}`)),
      bridge.on("server:pong", (p) => add("in", `server:pong ${json(p)}`)),
      bridge.on("server:ask-result", (p) => {
        add("in", `server:ask-result ${json(p)}`);
        setAsk(null);
      }),
      // A server request: the promise settles when the user clicks Answer. Ignore drops it,
      // so nothing is sent and the server's 5 s timeout fires.
      bridge.on("server:ask", (p) => {
        add("in", `server:ask (request) ${json(p)}`);
        return new Promise((resolve) => setAsk({ payload: p, answer: resolve }));
      }),
    ];
    return () => offs.forEach((off) => off());
  }, [bridge]);

  const open = bridge && !bridge.closed;
  const emit = (event, payload) => {
    bridge.emit(event, payload);
    add("out", `${event} ${json(payload)}`);
  };
  const request = async () => {
    const payload = { seq: ++seq.current };
    add("out", `client:request (request) ${json(payload)}`);
    try {
      const reply = await bridge.request("client:request", payload, { timeout: 5000 });
      add("in", `reply ${json(reply)}`);
    } catch (err) {
      add("err", `${err instanceof ChannelTimeout ? "timeout" : "error"}: ${err.message}`);
    }
  };
  const answer = () => {
    const value = { answer: "Yes, I am here", at: clock() };
    ask.answer(value);
    add("out", `reply to server:ask ${json(value)}`);
    setAsk(null);
  };
  const ignore = () => {
    add("info", "ignored server:ask: the server times out after 5 s");
    setAsk(null);
  };

  return (
    <section className="card tester" data-testid={`tester-${n}`}>
      <div className="tester-head">
        <h3>Tester #{n}</h3>
        <span className={`chip ${open ? "open" : ""}`} title={channelId ?? ""}>
          {channelId ? `channel ${short(channelId)}${open ? "" : " closed"}` : view.status}
        </span>
        <button className="icon" onClick={onRemove} aria-label={`Remove tester #${n}`} title="Remove">
          ×
        </button>
      </div>
      <div className="actions">
        <button disabled={!open} onClick={() => emit("client:notify-me", {})}>
          Server notify
        </button>
        <button disabled={!open || ask !== null} onClick={() => emit("client:ask-me", {})}>
          Server asks client
        </button>
        <button disabled={!open} onClick={() => emit("client:ping", { seq: ++seq.current })}>
          Client ping
        </button>
        <button disabled={!open} onClick={request}>
          Client request
        </button>
      </div>
      {ask && (
        <div className="ask" role="alert">
          <span>
            Server asks: <strong>{ask.payload?.question}</strong>
          </span>
          <button className="primary" onClick={answer}>
            Answer
          </button>
          <button onClick={ignore}>Ignore</button>
        </div>
      )}
      <Log entries={log} testid={`log-${n}`} empty="Click a button: ↑ goes to the server, ↓ comes back." />
    </section>
  );
}

function Stats() {
  const view = usePulseView("/stats");
  const s = view.status === "ready" ? view.props : null;
  const item = (key, label) => (
    <div className="stat">
      <strong data-testid={`stat-${key}`}>{s ? s[key] : "–"}</strong>
      <span>{label}</span>
    </div>
  );
  return (
    <section className="card">
      <h2>
        Server <small>live: the /stats view's props</small>
      </h2>
      <div className="stats">
        {item("sessions", "sessions")}
        {item("views", "views")}
        {item("channels", "channels")}
      </div>
    </section>
  );
}

function Log({ entries, testid, empty = "" }) {
  const ref = useRef(null);
  useLayoutEffect(() => {
    if (ref.current) ref.current.scrollTop = ref.current.scrollHeight;
  }, [entries]);
  const arrow = { in: "↓", out: "↑", err: "!", info: "•", closed: "✕" };
  return (
    <ol className="log" data-testid={testid} ref={ref}>
      {entries.length === 0 && empty && <li className="info">{empty}</li>}
      {entries.map((e, i) => (
        <li key={i} className={e.dir ?? e.kind}>
          <time>{e.at}</time>
          <span className="arrow">{arrow[e.dir ?? e.kind] ?? "•"}</span>
          <span className="text">{e.text}</span>
        </li>
      ))}
    </ol>
  );
}

function About() {
  return (
    <section className="card about">
      <h2>About this page</h2>
      <p>
        You navigated away from the testers, so React unmounted every one of them. Each
        unmount detached its <code>/tester</code> view, and the C server disposed the view and
        closed its channel. The panel on the right shows it: <strong>channels</strong> is back to
        0 (the stats view itself has no channel), and the page log lists every close.
      </p>
      <p>
        Go <a href="#/">back to the testers</a>: they mount again and attach with fresh
        channels.
      </p>
      <h2>What the buttons do</h2>
      <dl>
        <dt>Server notify</dt>
        <dd>
          emits <code>client:notify-me</code>; the server emits <code>server:notify</code> back.
        </dd>
        <dt>Server asks client</dt>
        <dd>
          the server sends the request <code>server:ask</code> with a 5 s timeout; Answer replies,
          Ignore lets it time out; either way <code>server:ask-result</code> reports the outcome.
        </dd>
        <dt>Client ping</dt>
        <dd>
          emits <code>client:ping</code>; the server emits <code>server:pong</code> with the same
          payload.
        </dd>
        <dt>Client request</dt>
        <dd>
          requests <code>client:request</code>; the server replies with an echo.
        </dd>
      </dl>
    </section>
  );
}

createRoot(document.getElementById("root")).render(
  <PulseProvider client={client}>
    <App />
  </PulseProvider>,
);
