"""Type-checked (mypy --strict, by test_typing.py), never run: the public API as an app uses
it, so that the stubs (pulsec/_core.pyi) and the annotations of pulsec/__init__.py cover it."""

from __future__ import annotations

import asyncio
from typing import Any

import pulsec as ps


class Room(ps.State):
    def __init__(self) -> None:
        self.channel: ps.Channel = ps.channel()
        self.view: ps.View = ps.current_view()
        self.cleanups: list[ps.Cleanup] = [
            self.channel.on("client:send", self.on_send),
            self.channel.on("client:ask", self.on_ask),
        ]
        self.channel.join("lobby")

    def on_send(self, payload: dict[str, Any]) -> None:
        self.channel.emit("server:message", {"text": payload["text"]})

    async def on_ask(self, payload: Any) -> dict[str, Any]:
        try:
            answer: Any = await self.channel.request("server:confirm", payload, timeout=5.0)
        except ps.ChannelTimeout:
            return {"answer": None}
        except (ps.ChannelClosed, ps.ChannelError) as err:
            return {"error": str(err)}
        return {"answer": answer, "request": ps.is_request()}

    def on_dispose(self) -> None:
        for cleanup in self.cleanups:
            cleanup()
        left: bool = self.channel.leave("lobby")
        assert left or self.channel.closed
        self.view.set_props({"closed": self.channel.id})


app = ps.App(static_dir="public", max_connections=100, allowed_origins=["http://x"])


@app.view("/room")
def room(props: Any) -> dict[str, Any]:
    return {"channelId": Room().channel.id}


@app.view("/async")
async def later(props: Any) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {}


@app.on_connect
def auth(handshake: ps.Handshake) -> None:
    if handshake.auth.get("token") != "x" or "bad" in handshake.cookies:
        raise ps.Denied("no", {"code": 1})
    handshake.session.data["user"] = handshake.query.get("user", handshake.address)
    print(handshake.headers.get("user-agent"))


@app.on_channel_message
def check(session: ps.Session, message: ps.Message) -> None:
    if message.is_request and message.event == "x" and session.data.get("user") is None:
        raise ps.Denied("no")
    if message.channel is not None and message.channel.closed:
        print(message.payload)


async def main() -> None:
    port: int = await app.start("127.0.0.1", 0)
    print(port, app.port, app.serving, app.stats()["sessions"])
    app.publish("lobby", "news", {"n": 1})
    app.reload_tls()
    app.stop()
    await app.wait_closed()
    await app.serve(port=0)


def run() -> None:
    app.run(host="127.0.0.1", port=8000)
