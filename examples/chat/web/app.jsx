// The chat demo: the Channels page's full example, made real and multi-user.
//
// The C server (examples/chat/chat.c) keeps one room. This page attaches its view "/chat" with
// {name}; the view's props carry the server-rendered state (messages, members, your channel id)
// and are pushed again whenever the room changes. The chat widget talks over the channel:
// it emits client:send and client:clear, listens to server:message / join / leave / notice, and
// answers the server's request server:confirm from an in-page dialog.

import { useEffect, useLayoutEffect, useRef, useState } from "react";
import { createRoot } from "react-dom/client";
import { createClient } from "pulsec-client";
import { PulseProvider, usePulseChannel, usePulseStatus, usePulseView } from "pulsec-client/react";
import "./style.css";

const client = createClient(); // the page's origin: the C server serves this page too

function App() {
  const [name, setName] = useState("");
  return (
    <PulseProvider client={client}>
      {name ? <Room name={name} onLeave={() => setName("")} /> : <Welcome onJoin={setName} />}
    </PulseProvider>
  );
}

function Welcome({ onJoin }) {
  const [draft, setDraft] = useState(() => localStorage.getItem("pulsec-chat-name") ?? "");
  const submit = (e) => {
    e.preventDefault();
    const name = draft.trim();
    if (!name) return;
    localStorage.setItem("pulsec-chat-name", name);
    onJoin(name);
  };
  return (
    <main className="welcome">
      <form className="card join" onSubmit={submit}>
        <h1>
          pulsec <span>chat</span>
        </h1>
        <p>
          A chat room served by a C server. Open this page in a second window to talk to
          yourself.
        </p>
        <label htmlFor="name">Your name</label>
        <input
          id="name"
          autoFocus
          maxLength={40}
          value={draft}
          onChange={(e) => setDraft(e.target.value)}
          placeholder="e.g. Ada"
        />
        <button type="submit" className="primary" disabled={!draft.trim()}>
          Join the room
        </button>
      </form>
    </main>
  );
}

function Room({ name, onLeave }) {
  const status = usePulseStatus();
  const view = usePulseView("/chat", { name }); // attached while this component is mounted

  if (view.status === "error") {
    return (
      <main className="welcome">
        <div className="card join">
          <h1>Cannot join</h1>
          <p className="error">{view.error.message}</p>
          <button onClick={onLeave}>Back</button>
        </div>
      </main>
    );
  }
  if (view.status === "loading") {
    return <main className="welcome muted">Joining as {name}… ({status})</main>;
  }
  const { channelId, me, members, messages } = view.props;
  return (
    <div className="app">
      <header>
        <h1>
          pulsec <span>chat</span>
        </h1>
        <span className={`status ${status}`}>{status}</span>
        <span className="me">
          you are <strong>{me}</strong>
        </span>
        <button onClick={onLeave}>Leave</button>
      </header>
      {/* key: a reconnect brings a new channel id, and a fresh widget for it */}
      <ChatWidget key={channelId} channelId={channelId} me={me} members={members} messages={messages} />
    </div>
  );
}

const time = (ms) => new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

function ChatWidget({ channelId, me, members, messages }) {
  const bridge = usePulseChannel(channelId);
  const [draft, setDraft] = useState("");
  const [activity, setActivity] = useState(() => [{ dir: "info", text: `joined as ${me}` }]);
  const [notice, setNotice] = useState(null);
  const [confirm, setConfirm] = useState(null); // {question, deadline, answer(value)}

  const log = (dir, event, text) =>
    setActivity((prev) => [...prev.slice(-99), { dir, event, text, at: Date.now() }]);

  useEffect(() => {
    if (!bridge || bridge.closed) return undefined;
    const offs = [
      bridge.on("server:message", (m) => log("in", "server:message", `${m.user}: ${m.text}`)),
      bridge.on("server:join", ({ user }) => log("in", "server:join", `${user} joined`)),
      bridge.on("server:leave", ({ user }) => log("in", "server:leave", `${user} left`)),
      bridge.on("server:notice", ({ text }) => {
        log("in", "server:notice", text);
        setNotice({ text, at: Date.now() });
      }),
      // A server request: the handler's promise is the answer. The dialog settles it.
      bridge.on("server:confirm", ({ question, timeoutMs = 5000 }) => {
        log("in", "server:confirm", `request: "${question}"`);
        return new Promise((resolve) => {
          const answer = (value) => {
            setConfirm(null);
            log("out", "reply", JSON.stringify(value));
            resolve(value);
          };
          // Past the deadline the server has stopped waiting (its notice says so): the
          // dialog goes away and the promise is never settled, so nothing is sent.
          const expire = () => {
            setConfirm(null);
            log("info", null, "no answer given");
          };
          setConfirm({ question, timeoutMs, deadline: Date.now() + timeoutMs, answer, expire });
        });
      }),
    ];
    const offClose = bridge.onClose(() => log("info", null, "channel closed"));
    return () => {
      offs.forEach((off) => off());
      offClose();
    };
  }, [bridge]);

  useEffect(() => {
    if (!notice) return undefined;
    const t = setTimeout(() => setNotice(null), 6000);
    return () => clearTimeout(t);
  }, [notice]);

  const open = bridge && !bridge.closed;
  const send = (e) => {
    e.preventDefault();
    const text = draft.trim();
    if (!text || !open) return;
    bridge.emit("client:send", { text });
    log("out", "client:send", text);
    setDraft("");
  };
  const clear = () => {
    bridge.emit("client:clear", {});
    log("out", "client:clear", "asks to clear the history");
  };

  return (
    <main className="room">
      <section className="card messages">
        <h2>
          Messages <small>server-rendered: the view's props</small>
        </h2>
        <MessageList messages={messages} me={me} />
        <form className="composer" onSubmit={send}>
          <input
            value={draft}
            onChange={(e) => setDraft(e.target.value)}
            placeholder="Type message..."
            aria-label="Message"
            maxLength={2000}
            disabled={!open}
          />
          <button type="submit" className="primary" disabled={!open || !draft.trim()}>
            Send
          </button>
          <button type="button" className="danger" onClick={clear} disabled={!open || confirm !== null}>
            Clear history
          </button>
        </form>
      </section>

      <aside>
        <section className="card">
          <h2>
            Members <small>{members.length} online</small>
          </h2>
          <ul className="members" data-testid="members">
            {members.map((m, i) => (
              <li key={i}>
                <span className="avatar">{m.slice(0, 1).toUpperCase()}</span>
                {m}
                {m === me && <em> (you)</em>}
              </li>
            ))}
          </ul>
        </section>
        <section className="card">
          <h2>
            Your channel <small>live events</small>
          </h2>
          <ActivityLog entries={activity} />
        </section>
      </aside>

      {notice && (
        <div className="toast" role="status" key={notice.at}>
          {notice.text}
        </div>
      )}
      {confirm && <ConfirmDialog {...confirm} />}
    </main>
  );
}

function MessageList({ messages, me }) {
  const ref = useRef(null);
  useLayoutEffect(() => {
    if (ref.current) ref.current.scrollTop = ref.current.scrollHeight;
  }, [messages]);
  if (messages.length === 0) {
    return (
      <div className="list empty" data-testid="messages">
        No messages yet. Say hello!
      </div>
    );
  }
  return (
    <ul className="list" data-testid="messages" ref={ref}>
      {messages.map((m, i) => (
        <li key={i} className={m.user === me ? "mine" : ""}>
          <div className="meta">
            <strong>{m.user}</strong> <time>{time(m.at)}</time>
          </div>
          <div className="text">{m.text}</div>
        </li>
      ))}
    </ul>
  );
}

function ActivityLog({ entries }) {
  const ref = useRef(null);
  useLayoutEffect(() => {
    if (ref.current) ref.current.scrollTop = ref.current.scrollHeight;
  }, [entries]);
  return (
    <ol className="activity" data-testid="activity" ref={ref}>
      {entries.map((e, i) => (
        <li key={i} className={e.dir}>
          <span className="arrow" title={e.dir === "in" ? "server → you" : "you → server"}>
            {e.dir === "in" ? "↓" : e.dir === "out" ? "↑" : "•"}
          </span>
          {e.event && <code>{e.event}</code>} {e.text}
        </li>
      ))}
    </ol>
  );
}

function ConfirmDialog({ question, timeoutMs, deadline, answer, expire }) {
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
          <button onClick={() => answer({ confirm: false })}>No</button>
          <button className="danger" autoFocus onClick={() => answer({ confirm: true })}>
            Yes, clear it
          </button>
        </div>
      </div>
    </div>
  );
}

createRoot(document.getElementById("root")).render(<App />);
