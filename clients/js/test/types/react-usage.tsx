import { useEffect, useState } from "react";
import { createClient } from "pulsec-client";
import {
  PulseProvider,
  usePulseChannel,
  usePulseClient,
  usePulseEvent,
  usePulseStatus,
  usePulseView,
  type PulseViewResult,
} from "pulsec-client/react";

interface Props {
  channelId: string;
}

function Widget({ channelId }: Props) {
  const bridge = usePulseChannel(channelId); // null until the effect acquired it
  const [log, setLog] = useState<string[]>([]);
  useEffect(() => {
    if (!bridge || bridge.closed) return;
    return bridge.on<{ text: string }>("server:message", (m) => setLog((l) => [...l, m.text]));
  }, [bridge]);
  usePulseEvent<{ question: string }>(bridge, "server:confirm", (q) => ({ ok: q.question.length > 0 }));
  // @ts-expect-error the handler takes the payload
  usePulseEvent(bridge, "x", (a: string, b: string) => a + b);
  return <ul>{log.map((t, i) => <li key={i}>{t}</li>)}</ul>;
}

function Page() {
  const view: PulseViewResult<Props> = usePulseView<Props>("/chat", { room: "lobby" });
  const status = usePulseStatus();
  const client = usePulseClient();
  const maybe = usePulseChannel(view.props?.channelId); // Channel | null
  void [client.status, maybe?.id];
  if (view.status === "loading") return <p>loading ({status})</p>;
  if (view.status === "error") return <p>{view.error.message}</p>;
  const id: string = view.props.channelId; // narrowed: ready has props
  return <Widget channelId={id} />;
}

export function App() {
  const client = createClient({ url: "http://localhost:8000" });
  return (
    <PulseProvider client={client}>
      <Page />
    </PulseProvider>
  );
}
