"""Views and States: the view function (sync or async) builds the state and returns the props;
every ps.State created meanwhile belongs to the view and hears on_dispose() once when the view
goes away; ps.channel() works there and nowhere else."""

import asyncio
import logging

import pytest

import pulsec as ps
from conftest import serving, until


class Tracked(ps.State):
    def __init__(self, log, name, channel=False):
        self.log = log
        self.name = name
        self.channel = ps.channel() if channel else None

    def on_dispose(self):
        self.log.append(("dispose", self.name))
        if self.channel is not None:
            assert not self.channel.closed  # channels close after dispose
            self.channel.emit("server:bye", self.name)


async def test_on_dispose_once_newest_first_on_detach(driver):
    log = []
    app = ps.App()

    @app.view("/v")
    def view(props):
        a = Tracked(log, "a", channel=True)
        Tracked(log, "b")
        return {"channelId": a.channel.id}

    async with serving(app) as url:
        c = await driver.client(url)
        v = await c.attach("/v")
        ch = v["props"]["channelId"]
        await c.detach(v["attachId"])
        [bye] = await c.wait(ch, "server:bye")
        assert bye["payload"] == "a"
        await c.wait(ch, "__close__")
        assert log == [("dispose", "b"), ("dispose", "a")]
        await c.disconnect()
    assert log == [("dispose", "b"), ("dispose", "a")]  # once, also after the stop


async def test_on_dispose_on_disconnect_and_on_server_stop(driver):
    log = []
    app = ps.App()

    @app.view("/v")
    def view(props):
        Tracked(log, props["name"])
        return {}

    async with serving(app) as url:
        c = await driver.client(url)
        await c.attach("/v", {"name": "gone-with-the-connection"})
        d = await driver.client(url)
        await d.attach("/v", {"name": "stopped-with-the-server"})
        await c.disconnect()
        await until(lambda: len(log) == 1, "dispose on disconnect")
        assert log == [("dispose", "gone-with-the-connection")]
    assert log == [("dispose", "gone-with-the-connection"), ("dispose", "stopped-with-the-server")]
    await d.disconnect()


async def test_channel_outside_a_view_is_a_clear_error(driver):
    with pytest.raises(RuntimeError, match="inside a view function"):
        ps.channel()
    with pytest.raises(RuntimeError, match="inside a view function"):
        ps.current_view()
    plain = Tracked([], "not owned")  # a State outside a view is a plain object
    assert plain.channel is None
    holder = {}
    app = ps.App()

    @app.view("/v")
    def view(props):
        ch = ps.channel()
        holder["view"] = ps.current_view()

        def later(payload):
            with pytest.raises(RuntimeError, match="inside a view function"):
                ps.channel()  # the view function has returned
            holder["handler ran"] = True
            return "ok"

        ch.on("later", later)
        return {"channelId": ch.id}

    async with serving(app) as url:
        c = await driver.client(url)
        v = await c.attach("/v")
        assert await c.request(v["props"]["channelId"], "later") == {"ok": True, "payload": "ok"}
        assert holder["handler ran"]
        assert holder["view"].path == "/v"
        assert holder["view"].session.id
        await c.disconnect()
    assert holder["view"].closed


async def test_view_function_errors_become_attach_errors(driver, caplog):
    log = []
    app = ps.App()

    @app.view("/raises")
    def raises(props):
        Tracked(log, "made before the raise")
        raise PermissionError("members only")

    @app.view("/bad-props")
    def bad_props(props):
        return {"when": object()}

    @app.view("/async-raises")
    async def async_raises(props):
        Tracked(log, "async, made before the raise")
        await asyncio.sleep(0)
        raise LookupError("no such room")

    caplog.set_level(logging.ERROR, logger="pulsec")
    async with serving(app) as url:
        c = await driver.client(url)
        assert await c.attach_error("/raises") == "members only"
        assert "not JSON serializable" in await c.attach_error("/bad-props")
        assert await c.attach_error("/async-raises") == "no such room"
        assert await c.attach_error("/nowhere") == "Unknown path: /nowhere"
        # The States of a refused view still end.
        assert sorted(log) == [("dispose", "async, made before the raise"),
                               ("dispose", "made before the raise")]
        await c.disconnect()
    assert len([r for r in caplog.records if r.name == "pulsec"]) == 3
    caplog.clear()


async def test_async_view_function(driver):
    log = []
    started = asyncio.Event()
    release = asyncio.Event()
    app = ps.App()

    @app.view("/slow")
    async def slow(props):
        first = Tracked(log, "before the await", channel=True)
        started.set()
        await release.wait()
        second = Tracked(log, "after the await", channel=True)  # still this view's
        return {"channels": [first.channel.id, second.channel.id]}

    async with serving(app) as url:
        c = await driver.client(url)
        attach = asyncio.ensure_future(c.attach("/slow"))
        await started.wait()
        await asyncio.sleep(0.05)
        assert not attach.done()  # no attach_ack until the function returned
        release.set()
        v = await attach
        assert len(v["props"]["channels"]) == 2
        await c.detach(v["attachId"])
        await until(lambda: len(log) == 2, "both disposed")
        assert log == [("dispose", "after the await"), ("dispose", "before the await")]
        await c.disconnect()


async def test_async_view_detached_before_it_finished(driver):
    log = []
    cancelled = []
    started = asyncio.Event()
    app = ps.App()

    @app.view("/never")
    async def never(props):
        Tracked(log, "half built")
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return {}

    async with serving(app) as url:
        c = await driver.client(url)
        await c.raw({"type": "attach", "path": "/never", "attachId": "a1", "props": None})
        await started.wait()
        await c.raw({"type": "detach", "attachId": "a1"})
        await until(lambda: cancelled and log, "the view function cancelled, its State disposed")
        assert log == [("dispose", "half built")]
        assert app.stats()["views"] == 0
        # A disconnect in the middle of one does the same.
        started.clear()
        await c.raw({"type": "attach", "path": "/never", "attachId": "a2", "props": None})
        await started.wait()
        await c.disconnect()
        await until(lambda: len(cancelled) == 2 and len(log) == 2, "cancelled on disconnect")


async def test_set_props_pushes_view_props(driver):
    holder = {}
    app = ps.App()

    @app.view("/counter")
    def counter(props):
        view = ps.current_view()
        ch = ps.channel()
        holder["n"] = 0

        def bump(payload):
            holder["n"] += payload
            view.set_props({"channelId": ch.id, "n": holder["n"]})

        ch.on("bump", bump)
        return {"channelId": ch.id, "n": 0}

    async with serving(app) as url:
        c = await driver.client(url)
        v = await c.attach("/counter")
        assert v["props"]["n"] == 0
        await c.emit(v["props"]["channelId"], "bump", 5)
        [m] = await c.wait(event="view_props")
        assert m["attachId"] == v["attachId"] and m["props"]["n"] == 5
        await c.disconnect()


async def test_on_dispose_errors_are_logged_and_async_ones_run(driver, caplog):
    ran = []

    class Bad(ps.State):
        def on_dispose(self):
            raise RuntimeError("dispose failed")

    class Async(ps.State):
        async def on_dispose(self):
            await asyncio.sleep(0)
            ran.append("async dispose")

    app = ps.App()

    @app.view("/v")
    def view(props):
        Async()
        Bad()
        return {}

    caplog.set_level(logging.ERROR, logger="pulsec")
    async with serving(app) as url:
        c = await driver.client(url)
        v = await c.attach("/v")
        await c.detach(v["attachId"])
        await until(lambda: ran, "the async on_dispose")
        await c.disconnect()
    assert any("on_dispose" in r.getMessage() for r in caplog.records)
    caplog.clear()


async def test_too_many_channels(driver):
    app = ps.App(max_channels_per_session=2)

    @app.view("/greedy")
    def greedy(props):
        ps.channel()
        ps.channel()
        ps.channel()
        return {}

    async with serving(app) as url:
        c = await driver.client(url)
        assert "max_channels_per_session" in await c.attach_error("/greedy")
        await c.disconnect()


async def test_denied_refuses_without_logging(driver, caplog):
    app = ps.App()

    @app.view("/members")
    def members(props):
        if not props or props.get("name") != "ada":
            raise ps.Denied("members only")
        ch = ps.channel()
        ch.on("admin", lambda p: (_ for _ in ()).throw(ps.Denied("admins only")))

        async def later(p):
            await asyncio.sleep(0)
            raise ps.Denied("not now")

        ch.on("later", later)
        return {"channelId": ch.id}

    @app.view("/async-members")
    async def async_members(props):
        await asyncio.sleep(0)
        raise ps.Denied("closed for today")

    caplog.set_level(logging.DEBUG, logger="pulsec")
    async with serving(app) as url:
        c = await driver.client(url)
        assert await c.attach_error("/members", {"name": "bob"}) == "members only"
        assert await c.attach_error("/async-members") == "closed for today"
        v = await c.attach("/members", {"name": "ada"})
        ch = v["props"]["channelId"]
        assert await c.request(ch, "admin") == {"ok": False, "error": "admins only"}
        assert await c.request(ch, "later") == {"ok": False, "error": "not now"}
        await c.disconnect()
    assert [r for r in caplog.records if r.name == "pulsec"] == []
