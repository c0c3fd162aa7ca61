"""Server -> client: `await channel.request(...)` and every way it can end: the client's answer,
its error (ChannelError), no answer in time (ChannelTimeout), the channel closing first from
either side or with the view or the connection (ChannelClosed), and the caller giving up
(cancellation)."""

import asyncio
import os
import signal

import pytest

import pulsec as ps
from conftest import Driver, serving, until


class Asker(ps.State):
    def __init__(self, registry):
        self.channel = ps.channel()
        registry.append(self)


def make_app(**options):
    app = ps.App(**options)
    states = []

    @app.view("/ask")
    def view(props):
        return {"channelId": Asker(states).channel.id}

    return app, states


async def asker(driver, url, states):
    c = await driver.client(url)
    v = await c.attach("/ask")
    ch = v["props"]["channelId"]
    return c, ch, v["attachId"], states[-1].channel


async def test_answer_error_and_timeout(driver):
    app, states = make_app()
    async with serving(app) as url:
        c, ch, _, channel = await asker(driver, url, states)
        await c.answer(ch, "server:ask", "echo")
        await c.answer(ch, "server:fail", "error", "client says no")
        await c.answer(ch, "server:slow", "never")

        assert await channel.request("server:ask", {"q": 1}, timeout=10) == {"q": 1}
        assert await channel.request("server:ask") is None

        with pytest.raises(ps.ChannelError) as err:
            await channel.request("server:fail", timeout=10)
        assert str(err.value) == "client says no"
        assert isinstance(err.value, RuntimeError)

        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(ps.ChannelTimeout) as err:
            await channel.request("server:slow", timeout=0.2)
        assert loop.time() - t0 >= 0.19
        assert isinstance(err.value, asyncio.TimeoutError)
        assert "server:slow" in str(err.value)

        # Several in flight at once, answered out of order.
        await c.answer(ch, "server:later", "echo", delay_ms=50)
        later = channel.request("server:later", "late", timeout=10)
        now = channel.request("server:ask", "now", timeout=10)
        assert await now == "now"
        assert await later == "late"
        await c.disconnect()


async def test_without_timeout_waits_until_the_channel_closes(driver):
    app, states = make_app()
    async with serving(app) as url:
        c, ch, _, channel = await asker(driver, url, states)
        waiting = asyncio.ensure_future(channel.request("server:q"))  # timeout=None
        await c.wait(ch, "server:q")
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await c.close_channel(ch)  # the client releases the channel
        with pytest.raises(ps.ChannelClosed) as err:
            await waiting
        assert isinstance(err.value, RuntimeError)
        await c.disconnect()


async def test_closed_by_the_server_while_pending(driver):
    app, states = make_app()
    async with serving(app) as url:
        c, ch, _, channel = await asker(driver, url, states)
        pending = [asyncio.ensure_future(channel.request("server:q", i, timeout=30)) for i in range(3)]
        await c.wait(ch, "server:q", count=3)
        channel.close()
        for p in pending:
            with pytest.raises(ps.ChannelClosed):
                await p
        with pytest.raises(ps.ChannelClosed):
            await channel.request("server:q")
        await c.wait(ch, "__close__")
        await c.disconnect()


async def test_view_detached_while_pending(driver):
    app, states = make_app()
    async with serving(app) as url:
        c, ch, attach_id, channel = await asker(driver, url, states)
        pending = asyncio.ensure_future(channel.request("server:q", timeout=30))
        await c.wait(ch, "server:q")
        await c.detach(attach_id)
        with pytest.raises(ps.ChannelClosed):
            await pending
        await c.disconnect()


async def test_client_vanishes_mid_request(driver):
    # Its session waits for it (connection state recovery) until the window passes: then the
    # request completes with ChannelClosed, as its channel closes.
    app, states = make_app(resume_window_ms=500)
    async with serving(app) as url:
        other = await Driver.start()  # its own process, so that it can die
        try:
            c, ch, _, channel = await asker(other, url, states)
            pending = asyncio.ensure_future(channel.request("server:q"))
            await c.wait(ch, "server:q")
            os.kill(other.proc.pid, signal.SIGKILL)  # no close frame, no DISCONNECT
            with pytest.raises(ps.ChannelClosed):
                await asyncio.wait_for(pending, 15)
            assert channel.closed
        finally:
            await other.close()
        await until(lambda: app.stats()["sessions"] == 0, "the session gone")


async def test_no_recovery_disposes_at_once(driver):
    # resume_window_ms=0 turns recovery off: a client that vanishes takes its views with it
    # (no 60 s wait), and the pending request completes with ChannelClosed.
    app, states = make_app(resume_window_ms=0)
    async with serving(app) as url:
        other = await Driver.start()
        try:
            c, ch, _, channel = await asker(other, url, states)
            pending = asyncio.ensure_future(channel.request("server:q"))
            await c.wait(ch, "server:q")
            os.kill(other.proc.pid, signal.SIGKILL)
            with pytest.raises(ps.ChannelClosed):
                await asyncio.wait_for(pending, 10)
        finally:
            await other.close()
        await until(lambda: app.stats()["sessions"] == 0, "the session gone")
        assert app.stats()["sessions_detached"] == 0
    with pytest.raises(ValueError):
        ps.App(resume_window_ms=-1)


async def test_cancelled_await_cancels_the_request(driver):
    app, states = make_app()
    async with serving(app) as url:
        c, ch, _, channel = await asker(driver, url, states)

        async def ask():
            return await channel.request("server:q", timeout=None)

        task = asyncio.ensure_future(ask())
        [m] = await c.wait(ch, "server:q")
        assert ps._core.live_objects()["requests"] == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await until(lambda: ps._core.live_objects()["requests"] == 0, "the request released")

        # The client's late answer is dropped (counted), nothing completes twice.
        dropped = app.stats()["messages_dropped"]
        await c.raw({"type": "channel_message", "channel": ch, "responseTo": m["requestId"],
                     "payload": "too late"})
        await until(lambda: app.stats()["messages_dropped"] == dropped + 1, "the late answer dropped")

        # asyncio.wait_for's own timeout cancels the same way; the channel goes on working.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(channel.request("server:q"), 0.05)
        await c.answer(ch, "server:ok", "value", "fine")
        assert await channel.request("server:ok", timeout=10) == "fine"
        await until(lambda: ps._core.live_objects()["requests"] == 0, "no request left")
        await c.disconnect()


async def test_too_many_pending_requests(driver):
    app = ps.App(max_pending_requests=2)
    states = []

    @app.view("/ask")
    def view(props):
        return {"channelId": Asker(states).channel.id}

    async with serving(app) as url:
        c, ch, _, channel = await asker(driver, url, states)
        a = channel.request("q")
        b = channel.request("q")
        with pytest.raises(ps.ChannelError, match="max_pending_requests"):
            channel.request("q")
        channel.close()
        for f in (a, b):
            with pytest.raises(ps.ChannelClosed):
                await f
        await c.disconnect()


async def test_bad_arguments(driver):
    app, states = make_app()
    async with serving(app) as url:
        c, ch, _, channel = await asker(driver, url, states)
        with pytest.raises(ValueError):
            channel.request("q", timeout=-1)
        with pytest.raises(TypeError):
            channel.request("q", {1, 2})
        with pytest.raises(ValueError):
            channel.emit("")
        await c.disconnect()
