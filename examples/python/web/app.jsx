// The progress demo: the Channels page's "progress tracking" use case. The Python server
// (examples/python/progress.py) runs a long job as an asyncio task per page: this page starts
// it with a request (client:start), draws the progress it reports (server:progress), can
// cancel it with a request (client:cancel), and answers the server's own request
// (server:confirm, with a timeout) before the job's destructive step.

import { useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { createClient } from "pulsec-client";
import { PulseProvider, usePulseChannel, usePulseStatus, usePulseView } from "pulsec-client/react";
import "./style.css";

const client = createClient(); // the page's origin: the Python server serves this page too

function App() {
  return (
    <PulseProvider client={client}>
      <Page />
    </PulseProvider>
  );
}

function Page() {
  const status = usePulseStatus();
  const view = usePulseView("/progress", {});
  return (
    <main className="page">
      <header>
        <h1>
          pulsec <span>progress</span>
        </h1>
        <span className={`status ${status}`}>{status}</span>
      </header>
      {view.status === "error" && <p className="error">{view.error.message}</p>}
      {view.status === "loading" && <p className="muted">Attaching…</p>}
      {view.status === "ready" && <Job key={view.props.channelId} channelId={view.props.channelId} />}
    </main>
  );
}

function Job({ channelId }) {
  const bridge = usePulseChannel(channelId);
  const [steps, setSteps] = useState(20);
  const [delayMs, setDelayMs] = useState(200);
  const [progress, setProgress] = useState({ done: 0, total: 0 });
  const [running, setRunning] = useState(false);
  const [result, setResult] = useState(null); // server:done {status, text, runs}
  const [confirm, setConfirm] = useState(null);
  const [message, setMessage] = useState("");

  useEffect(() => {
    if (!bridge || bridge.closed) return undefined;
    const offs = [
      bridge.on("server:progress", (p) => setProgress(p)),
      bridge.on("server:done", (d) => {
        setRunning(false);
        setConfirm(null); // a cancel while the server asked: its question is moot
        setResult(d);
      }),
      // The server's request: the handler's promise is the answer, settled by the dialog.
      bridge.on("server:confirm", ({ question, timeoutMs = 10000 }) =>
        new Promise((resolve) => {
          setConfirm({
            question,
            timeoutMs,
            deadline: Date.now() + timeoutMs,
            answer: (value) => {
              setConfirm(null);
              resolve(value);
            },
            // Past the deadline the server stopped waiting: never settled, nothing is sent.
            expire: () => setConfirm(null),
          });
        })),
    ];
    return () => offs.forEach((off) => off());
  }, [bridge]);

  const open = bridge && !bridge.closed;
  const start = async (e) => {
    e.preventDefault();
    setMessage("");
    const r = await bridge.request("client:start", { steps: Number(steps), delayMs: Number(delayMs) });
    if (!r.started) return setMessage(r.reason);
    setResult(null);
    setProgress({ done: 0, total: r.steps });
    setRunning(true);
  };
  const cancel = async () => {
    const r = await bridge.request("client:cancel", {}, { timeout: 5000 });
    setMessage(r.cancelled ? `Cancel acknowledged at step ${r.done}` : r.reason);
  };
  const pct = progress.total ? Math.round((progress.done / progress.total) * 100) : 0;

  return (
    <section className="card job">
      <form onSubmit={start} className="controls">
        <label>
          Steps
          <input type="number" min="1" max="1000" value={steps} onChange={(e) => setSteps(e.target.value)} disabled={running} />
        </label>
        <label>
          Step time (ms)
          <input type="number" min="0" max="10000" value={delayMs} onChange={(e) => setDelayMs(e.target.value)} disabled={running} />
        </label>
        <button type="submit" className="primary" disabled={!open || running}>
          Start job
        </button>
        <button type="button" className="danger" onClick={cancel} disabled={!open || !running}>
          Cancel
        </button>
      </form>

      <div className="bar" role="progressbar" aria-label="Job progress" aria-valuemin={0} aria-valuemax={progress.total} aria-valuenow={progress.done}>
        <div style={{ width: `${pct}%` }} />
      </div>
      <p className="counts" data-testid="counts">
        {progress.total ? `${progress.done} / ${progress.total} steps (${pct}%)` : "No job yet"}
      </p>
      {result && (
        <p className={`result ${result.status}`} data-testid="result" role="status">
          {result.text} <small>(results replaced {result.runs} times so far)</small>
        </p>
      )}
      {message && <p className="muted" data-testid="message">{message}</p>}
      {confirm && <ConfirmDialog {...confirm} onCancel={cancel} />}
    </section>
  );
}

function ConfirmDialog({ question, timeoutMs, deadline, answer, expire, onCancel }) {
  const [left, setLeft] = useState(() => Math.max(0, deadline - Date.now()));
  useEffect(() => {
    const t = setInterval(() => setLeft(Math.max(0, deadline - Date.now())), 100);
    return () => clearInterval(t);
  }, [deadline]);
  useEffect(() => {
    if (left === 0) expire();
  }, [left]);
  return (
    <div className="backdrop">
      <div className="card dialog" role="dialog" aria-modal="true" aria-labelledby="confirm-q">
        <p className="eyebrow">The server asks you (request server:confirm)</p>
        <h2 id="confirm-q">{question}</h2>
        <div className="countdown" aria-hidden="true">
          <div style={{ width: `${(left / timeoutMs) * 100}%` }} />
        </div>
        <p className="muted">{Math.ceil(left / 1000)} s left to answer</p>
        <div className="buttons">
          <button onClick={onCancel}>Cancel the job</button>
          <button onClick={() => answer({ confirm: false })}>Keep the old ones</button>
          <button className="danger" autoFocus onClick={() => answer({ confirm: true })}>
            Yes, replace
          </button>
        </div>
      </div>
    </div>
  );
}

createRoot(document.getElementById("root")).render(<App />);
