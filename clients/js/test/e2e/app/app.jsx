// The page of the end-to-end tests: a React app on pulsec-client/react, rendered inside
// <React.StrictMode> (bundled as a development build, so effects really run twice), talking
// to the echo server that also serves this page (same origin).
//
// EchoPanel attaches the /echo view (usePulseView) and shows its props; ChannelWidget opens the
// view's channel (usePulseChannel), shows the server's events, sends with emit, requests with
// request, answers the server's "confirm" requests, and can be unmounted on its own (the channel
// is released) or with its panel (the view is detached).

import { StrictMode, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { createClient } from "pulsec-client";
import { PulseProvider, usePulseChannel, usePulseStatus, usePulseView } from "pulsec-client/react";

const client = createClient({ reconnectionDelay: 100, reconnectionDelayMax: 300 });
const clientErrors = [];
client.on("error", (err) => clientErrors.push(String(err?.stack ?? err)));

// Read by the tests.
window.__pulsec = { client, clientErrors, widgetEffects: 0, panelRenders: 0 };

function ChannelWidget({ channelId }) {
  const bridge = usePulseChannel(channelId);
  const [events, setEvents] = useState([]);
  const [reply, setReply] = useState("");
  const [draft, setDraft] = useState("hello");

  useEffect(() => {
    window.__pulsec.widgetEffects += 1;
    if (!bridge || bridge.closed) return undefined;
    const add = (line) => setEvents((prev) => [...prev, line]);
    const offs = [
      bridge.on("echo", (p) => add(`echo: ${p?.text}`)),
      bridge.on("ask:result", (r) =>
        add(`ask:result: ${r.status} ${r.status === "error" ? r.error : JSON.stringify(r.payload)}`),
      ),
      // Answers the server's request "confirm": the return value is the answer.
      bridge.on("confirm", (p) => `confirmed ${p.text}`),
    ];
    return () => offs.forEach((off) => off());
  }, [bridge]);

  // Shows "<action>: <answer>" ("sent" for an emit) or "<action>: <ErrorClass>: <message>".
  const run = (action, fn) => () => {
    let promise;
    try {
      promise = Promise.resolve(fn());
    } catch (err) {
      promise = Promise.reject(err);
    }
    promise.then(
      (r) => setReply(`${action}: ${r === undefined ? "sent" : JSON.stringify(r)}`),
      (err) => setReply(`${action}: ${err.name}: ${err.message}`),
    );
  };

  const closed = !bridge || bridge.closed;
  return (
    <section id="widget">
      <h2>Channel</h2>
      <p>
        channel <code id="widget-channel">{channelId}</code> is{" "}
        <strong id="channel-state" className={closed ? "closed" : "open"}>
          {closed ? "closed" : "open"}
        </strong>
      </p>
      <input id="draft" value={draft} onChange={(e) => setDraft(e.target.value)} />
      <button id="send" onClick={run("send", () => bridge.emit("echo", { text: draft }))}>Send (emit)</button>
      <button id="request" onClick={run("request", () => bridge.request("echo", { text: draft }, { timeout: 2000 }))}>
        Request echo
      </button>
      <button id="fail" onClick={run("fail", () => bridge.request("fail", { text: draft }, { timeout: 2000 }))}>
        Request fail
      </button>
      <button
        id="slow"
        onClick={run("slow", () => bridge.request("defer", { ms: 3000 }, { timeout: 150 }))}
      >
        Request with timeout
      </button>
      <button
        id="ask"
        onClick={run("ask", () => bridge.emit("ask", { event: "confirm", payload: { text: draft }, timeout_ms: 2000 }))}
      >
        Ask me (server request)
      </button>
      <button id="server-close" onClick={run("server-close", () => bridge.emit("close"))}>
        Close from server
      </button>
      <p id="reply">{reply}</p>
      <ul id="events">
        {events.map((line, i) => (
          <li key={i}>{line}</li>
        ))}
      </ul>
    </section>
  );
}

function EchoPanel() {
  const view = usePulseView("/echo", { from: "browser" });
  const [widget, setWidget] = useState(true);
  window.__pulsec.panelRenders += 1;
  if (view.status === "loading") return <p id="view-status">loading</p>;
  if (view.status === "error") return <p id="view-status">error: {view.error.message}</p>;
  const channelId = view.props.channelId;
  return (
    <section id="panel">
      <h2>View /echo</h2>
      <p id="view-status">ready</p>
      <p>
        props.channelId: <code id="channel-id">{channelId}</code>
      </p>
      <button id="toggle-widget" onClick={() => setWidget((w) => !w)}>
        {widget ? "Unmount widget" : "Mount widget"}
      </button>
      {widget && <ChannelWidget key={channelId} channelId={channelId} />}
    </section>
  );
}

function Missing() {
  const view = usePulseView("/missing");
  return (
    <p id="missing">
      /missing: {view.status}
      {view.error ? ` (${view.error.message})` : ""}
    </p>
  );
}

function App() {
  const status = usePulseStatus();
  const [panel, setPanel] = useState(true);
  return (
    <main>
      <h1>pulsec-client end to end</h1>
      <p>
        connection: <strong id="status">{status}</strong>
      </p>
      <Missing />
      <button id="toggle-panel" onClick={() => setPanel((p) => !p)}>
        {panel ? "Unmount panel" : "Mount panel"}
      </button>
      {panel && <EchoPanel />}
    </main>
  );
}

createRoot(document.getElementById("root")).render(
  <StrictMode>
    <PulseProvider client={client}>
      <App />
    </PulseProvider>
  </StrictMode>,
);
