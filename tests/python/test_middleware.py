"""Middleware: @app.on_connect sees the handshake and may refuse with ps.Denied; and
@app.on_channel_message sees every client event and request on a channel and may deny it (a
denied request gets the reason as its error reply)."""

import asyncio
import logging

import pytest

import pulsec as ps
from conftest import serving, until


async def test_on_connect_sees_the_handshake_and_denies(driver):
    seen = []
    app = ps.App()

    @app.on_connect
    def check(handshake):
        seen.append(handshake)
        if handshake.auth.get("token") != "s3cret":
            raise ps.Denied("not authorized", {"code": 401})
        handshake.session.data["user"] = handshake.query.get("user")

    @app.view("/v")
    def view(props):
        return {"user": ps.current_view().session.data["user"]}

    async with serving(app) as url:
        name = driver.name()
        r = await driver.call("connect", client=name, url=url, auth={"token": "wrong"})
        assert r == {"ok": False, "error": "not authorized", "data": {"code": 401}}

        c = await driver.client(url, auth={"token": "s3cret"}, query={"user": "ada", "n": "a b"},
                                headers={"X-Custom": "yes", "Cookie": "theme=dark; sid=\"xyz\""})
        hs = seen[-1]
        assert hs.auth == {"token": "s3cret"}
        assert hs.query["user"] == "ada" and hs.query["n"] == "a b"
        assert hs.query["EIO"] == "4"
        assert hs.headers["x-custom"] == "yes"
        assert hs.headers["host"].startswith("127.0.0.1:")
        assert hs.cookies == {"theme": "dark", "sid": "xyz"}
        assert hs.address == "127.0.0.1"
        assert hs.session.id and hs.session.handshake is hs
        v = await c.attach("/v")
        assert v["props"] == {"user": "ada"}  # session.data carried from on_connect
        await c.disconnect()
        await until(lambda: hs.session.closed, "the session closed")


async def test_on_connect_errors_refuse_without_internals(driver, caplog):
    app = ps.App()

    @app.on_connect
    def broken(handshake):
        return handshake.headers["authorization"]  # KeyError: a bug, not a decision

    caplog.set_level(logging.ERROR, logger="pulsec")
    async with serving(app) as url:
        r = await driver.call("connect", client=driver.name(), url=url)
        assert r["ok"] is False and r["error"] == "internal error"
    assert any(r.exc_info and isinstance(r.exc_info[1], KeyError) for r in caplog.records)
    caplog.clear()


async def test_middleware_runs_in_order_and_must_be_sync():
    app = ps.App()
    with pytest.raises(TypeError, match="plain"):
        @app.on_connect
        async def not_allowed(handshake):
            pass
    with pytest.raises(TypeError, match="plain"):
        @app.on_channel_message
        async def not_allowed_either(session, message):
            pass


async def test_on_channel_message_denies(driver):
    seen = []
    handled = []
    order = []
    app = ps.App()

    @app.on_channel_message
    def first(session, message):
        order.append("first")
        seen.append(message)
        if message.event.startswith("admin:") and not session.data.get("admin"):
            raise ps.Denied("admins only")

    @app.on_channel_message
    def second(session, message):
        order.append("second")
        if message.event == "broken":
            raise RuntimeError("bug in middleware")

    @app.view("/v")
    def view(props):
        ch = ps.channel()
        ch.on("admin:wipe", lambda p: handled.append(p) or "wiped")
        ch.on("hello", lambda p: handled.append(p) or "hi")
        ch.on("broken", lambda p: handled.append(p))
        return {"channelId": ch.id}

    async with serving(app) as url:
        c = await driver.client(url)
        v = await c.attach("/v")
        ch = v["props"]["channelId"]
        assert await c.request(ch, "hello", {"x": 1}) == {"ok": True, "payload": "hi"}
        m = seen[-1]
        assert (m.event, m.payload, m.is_request) == ("hello", {"x": 1}, True)
        assert m.channel is not None and m.channel.id == ch
        assert order == ["first", "second"]

        assert await c.request(ch, "admin:wipe") == {"ok": False, "error": "admins only"}
        await c.emit(ch, "admin:wipe", "event")  # a denied event is dropped
        assert not seen[-1].is_request
        r = await c.request(ch, "broken")
        assert r == {"ok": False, "error": "internal error"}
        assert await c.request(ch, "hello", 2) == {"ok": True, "payload": "hi"}
        assert handled == [{"x": 1}, 2]
        await c.disconnect()


async def test_connect_denied_from_the_view_session(driver):
    """A session can be ended from middleware state: session.disconnect()."""
    sessions = []
    app = ps.App()

    @app.on_connect
    def remember(handshake):
        sessions.append(handshake.session)

    @app.view("/v")
    def view(props):
        return {}

    async with serving(app) as url:
        c = await driver.client(url)
        await c.attach("/v")
        sessions[-1].disconnect()
        await until(lambda: sessions[-1].closed, "disconnected by the server")
        for _ in range(500):
            if not (await driver.ok("status", client=c.name))["connected"]:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the client still thinks it is connected")
        assert app.stats()["sessions"] == 0
        await c.disconnect()
