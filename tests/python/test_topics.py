"""Topics: channel.join(topic) / channel.leave(topic) and app.publish(topic, event, payload):
every channel joined to a topic gets an ordinary channel event; a closed channel leaves its
topics; `skip` leaves the sender out."""

import pytest

import pulsec as ps
from conftest import DriverError, serving, until


class Member(ps.State):
    def __init__(self, room):
        self.channel = ps.channel()
        self.channel.join(room)
        self.channel.on("say", self.say)
        self.channel.on("leave", lambda p: self.channel.leave(room))

    def say(self, payload):
        ps_app.publish(payload["room"], "said", payload, skip=self.channel)
        return "sent"


ps_app = None


async def test_publish_reaches_every_member_but_skip(driver):
    global ps_app
    app = ps_app = ps.App(max_topics_per_channel=2)

    @app.view("/room")
    def room(props):
        return {"channelId": Member(props["room"]).channel.id}

    async with serving(app) as url:
        a, b, c = [await driver.client(url) for _ in range(3)]
        cha = (await a.attach("/room", {"room": "lobby"}))["props"]["channelId"]
        chb = (await b.attach("/room", {"room": "lobby"}))["props"]["channelId"]
        chc = (await c.attach("/room", {"room": "other"}))["props"]["channelId"]
        assert app.stats()["topics"] == 2 and app.stats()["topic_members"] == 3

        app.publish("lobby", "news", {"n": 1})
        for client, ch in ((a, cha), (b, chb)):
            [m] = await client.wait(ch, "news")
            assert m["payload"] == {"n": 1}
        assert await a.request(cha, "say", {"room": "lobby", "text": "hi"}) == {
            "ok": True, "payload": "sent"}
        [m] = await b.wait(chb, "said")
        assert m["payload"]["text"] == "hi"

        await b.emit(chb, "leave")
        await until(lambda: app.stats()["topic_members"] == 2, "b left the lobby")
        app.publish("lobby", "news", {"n": 2})
        [m] = await a.wait(cha, "news")
        assert m["payload"] == {"n": 2}
        await c.close_channel(chc)  # a closed channel leaves its topics
        await until(lambda: app.stats()["topics"] == 1, "other has no member left")
        assert [m for m in await b.log() if m.get("event") in ("news", "said")] == []
        assert [m for m in await a.log() if m.get("event") == "said"] == []  # skipped
        for client in (a, b, c):
            await client.disconnect()
    with pytest.raises(RuntimeError, match="not serving"):
        app.publish("lobby", "news")


async def test_topic_errors(driver):
    app = ps.App(max_topics_per_channel=1)
    channels = []

    @app.view("/v")
    def view(props):
        channels.append(ps.channel())
        return {}

    async with serving(app) as url:
        c = await driver.client(url)
        await c.attach("/v")
        ch = channels[0]
        ch.join("one")
        ch.join("one")  # already a member: nothing to do
        with pytest.raises(ps.ChannelError, match="too many topics"):
            ch.join("two")
        with pytest.raises(ValueError):
            ch.join("")
        with pytest.raises(ValueError):
            ch.join("x" * 201)
        with pytest.raises(ValueError):
            app.publish("one", "__close__")
        assert ch.leave("one") is True
        assert ch.leave("one") is False
        ch.close()
        with pytest.raises(ps.ChannelClosed):
            ch.join("one")
        assert ch.leave("one") is False
        await c.disconnect()


async def test_publish_across_nodes_through_redis(driver, tmp_path):
    """Two Apps (two nodes: in one process, on one asyncio loop) with one redis-server (Debian's,
    started here on a free port): a publish in one reaches a channel joined in the other."""
    import asyncio
    import shutil
    import socket

    redis = shutil.which("redis-server")
    assert redis, "make deps-apt installs redis-server"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(tmp_path), stdout=asyncio.subprocess.DEVNULL)
    apps = []
    try:
        for _ in range(2):
            app = ps.App(redis_url=f"redis://127.0.0.1:{port}", redis_prefix="pytest")

            @app.view("/room")
            def room(props):
                ch = ps.channel()
                ch.join("lobby")
                return {"channelId": ch.id}

            apps.append(app)
        async with serving(apps[0]) as url_a, serving(apps[1]) as url_b:
            await until(lambda: all(a.stats()["redis_up"] for a in apps), "both nodes on Redis")
            a = await driver.client(url_a)
            b = await driver.client(url_b)
            await a.attach("/room")
            ch_b = (await b.attach("/room"))["props"]["channelId"]
            # b's node subscribes when its channel joins: until Redis has that SUBSCRIBE, a
            # publish is not for it (at most once). Publish until one arrives.
            for attempt in range(100):
                apps[0].publish("lobby", "news", {"from": "node a", "attempt": attempt})
                try:
                    [m] = await b.wait(ch_b, "news", timeout_ms=200)
                    break
                except DriverError:
                    continue
            else:
                raise AssertionError("no publish reached the other node")
            assert m["payload"]["from"] == "node a"
            assert apps[0].stats()["remote_out"] >= 1 and apps[1].stats()["remote_in"] >= 1
            await a.disconnect()
            await b.disconnect()
    finally:
        proc.terminate()
        await proc.wait()
