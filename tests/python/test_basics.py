import asyncio

import pytest

import pulsec as ps
from conftest import serving, until


class Room(ps.State):
    def __init__(self, log):
        self.log = log
        self.channel = ps.channel()
        self.cleanup = self.channel.on("client:send", self.on_send)

    def on_send(self, payload):
        self.log.append(payload)
        self.channel.emit("server:message", {"text": payload["text"]})
        return {"echoed": payload["text"]}

    def on_dispose(self):
        self.log.append("disposed")


async def test_attach_emit_request(driver):
    log = []
    app = ps.App()

    @app.view("/room")
    def room(props):
        r = Room(log)
        return {"channelId": r.channel.id, "got": props}

    async with serving(app) as url:
        c = await driver.client(url)
        v = await c.attach("/room", {"x": 1})
        ch = v["props"]["channelId"]
        assert v["props"]["got"] == {"x": 1}
        assert len(ch) == 32 and int(ch, 16) >= 0
        await c.emit(ch, "client:send", {"text": "hi"})
        [m] = await c.wait(ch, "server:message")
        assert m["payload"] == {"text": "hi"}
        r = await c.request(ch, "client:send", {"text": "yo"})
        assert r == {"ok": True, "payload": {"echoed": "yo"}}
        await c.detach(v["attachId"])
        await until(lambda: "disposed" in log, "on_dispose")
        assert log == [{"text": "hi"}, {"text": "yo"}, "disposed"]
        await c.disconnect()
