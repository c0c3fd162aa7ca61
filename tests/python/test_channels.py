"""Client -> server: channel.on() handlers, sync and async, answering requests by their return
value (the seed's rules), exceptions as error replies, cleanups, emit and close."""

import asyncio
import base64
import logging

import pytest

import pulsec as ps
from conftest import serving, until


def make_app(build):
    """An app with one view "/v" whose channel `build(channel, state)` sets up."""
    app = ps.App()
    state = {"log": [], "channels": []}

    @app.view("/v")
    def view(props):
        ch = ps.channel()
        state["channels"].append(ch)
        build(ch, state)
        return {"channelId": ch.id}

    return app, state


async def attached(driver, url):
    c = await driver.client(url)
    v = await c.attach("/v")
    return c, v["props"]["channelId"], v["attachId"]


async def test_handlers_run_in_order_and_first_answer_wins(driver):
    def build(ch, st):
        ch.on("q", lambda p: st["log"].append("a"))  # None: the next one answers
        ch.on("q", lambda p: st["log"].append("b") or {"from": "b"})
        ch.on("q", lambda p: st["log"].append("c") or {"from": "c"})

    app, st = make_app(build)
    async with serving(app) as url:
        c, ch, _ = await attached(driver, url)
        assert await c.request(ch, "q") == {"ok": True, "payload": {"from": "b"}}
        assert st["log"] == ["a", "b"]  # c never ran: the request was answered
        # An event runs every handler; return values mean nothing there.
        st["log"].clear()
        await c.emit(ch, "q")
        await until(lambda: st["log"] == ["a", "b", "c"], "all three handlers")
        await c.disconnect()


async def test_no_handler_or_no_answer_answers_none(driver):
    def build(ch, st):
        ch.on("silent", lambda p: None)

    app, _ = make_app(build)
    async with serving(app) as url:
        c, ch, _ = await attached(driver, url)
        assert await c.request(ch, "silent") == {"ok": True, "payload": None}
        assert await c.request(ch, "nobody-listens") == {"ok": True, "payload": None}
        await c.disconnect()


async def test_async_handlers(driver):
    async def slow_echo(payload):
        await asyncio.sleep(0.01)
        return {"slow": payload}

    async def nothing(payload):
        await asyncio.sleep(0)

    def build(ch, st):
        ch.on("slow", slow_echo)
        ch.on("mixed", nothing)  # async and None: the sync one after it answers
        ch.on("mixed", lambda p: "sync after async")
        ch.on("mixed", lambda p: st["log"].append("never"))

        async def on_event(p):
            await asyncio.sleep(0.01)
            st["log"].append(("async event", p))

        ch.on("ev", on_event)
        ch.on("ev", lambda p: st["log"].append(("sync event", p)))

    app, st = make_app(build)
    async with serving(app) as url:
        c, ch, _ = await attached(driver, url)
        assert await c.request(ch, "slow", 7) == {"ok": True, "payload": {"slow": 7}}
        assert await c.request(ch, "mixed") == {"ok": True, "payload": "sync after async"}
        assert "never" not in st["log"]
        await c.emit(ch, "ev", 1)
        # Handlers of one message run one after the other, the async one finished first.
        await until(lambda: len(st["log"]) == 2, "both event handlers")
        assert st["log"] == [("async event", 1), ("sync event", 1)]
        await c.disconnect()


async def test_exceptions_become_error_replies_and_are_logged(driver, caplog):
    def boom(payload):
        raise ValueError("bad input: " + str(payload))

    async def aboom(payload):
        await asyncio.sleep(0)
        raise KeyError("missing")

    def build(ch, st):
        ch.on("boom", boom)
        ch.on("boom", lambda p: st["log"].append("not after a raise"))
        ch.on("aboom", aboom)
        ch.on("empty", lambda p: 1 / 0 if p else None)
        ch.on("ev", boom)
        ch.on("ev", lambda p: st["log"].append("event goes on"))
        ch.on("notjson", lambda p: {1, 2})

    app, st = make_app(build)
    caplog.set_level(logging.ERROR, logger="pulsec")
    async with serving(app) as url:
        c, ch, _ = await attached(driver, url)
        assert await c.request(ch, "boom", 3) == {"ok": False, "error": "bad input: 3"}
        assert await c.request(ch, "aboom") == {"ok": False, "error": "'missing'"}
        assert await c.request(ch, "empty", 1) == {"ok": False, "error": "division by zero"}
        r = await c.request(ch, "notjson")
        assert not r["ok"] and "not JSON serializable" in r["error"]
        await c.emit(ch, "ev", 1)
        await until(lambda: "event goes on" in st["log"], "the handler after a raising one")
        assert "not after a raise" not in st["log"]
        # The server is fine afterwards.
        assert await c.request(ch, "nobody") == {"ok": True, "payload": None}
        await c.disconnect()
    messages = [r.getMessage() for r in caplog.records if r.name == "pulsec"]
    assert len(messages) == 5, messages
    kinds = {type(r.exc_info[1]) for r in caplog.records if r.exc_info}
    assert {ValueError, KeyError, ZeroDivisionError, TypeError} <= kinds
    assert "handler of 'boom' on channel" in messages[0], messages
    caplog.clear()  # the records' tracebacks hold the handlers' frames


async def test_cleanup_is_idempotent_and_safe_inside_a_handler(driver):
    def build(ch, st):
        cleanups = {}

        def first(p):
            st["log"].append("first")
            cleanups["first"]()
            cleanups["first"]()  # idempotent
            cleanups["second"]()  # the next handler of this very dispatch

        cleanups["first"] = ch.on("e", first)
        cleanups["second"] = ch.on("e", lambda p: st["log"].append("second"))
        cleanups["third"] = ch.on("e", lambda p: st["log"].append("third"))
        st["cleanups"] = cleanups

    app, st = make_app(build)
    async with serving(app) as url:
        c, ch, _ = await attached(driver, url)
        await c.emit(ch, "e")
        await c.emit(ch, "e")
        assert await c.request(ch, "sync") == {"ok": True, "payload": None}
        assert st["log"] == ["first", "third", "third"]
        st["cleanups"]["third"]()
        assert st["cleanups"]["third"].removed
        assert await c.request(ch, "e") == {"ok": True, "payload": None}
        assert st["log"] == ["first", "third", "third"]
        await c.disconnect()
    # After the view is gone a cleanup still works (and does nothing).
    st["cleanups"]["first"]()


async def test_handler_added_during_dispatch_sees_the_next_message(driver):
    def build(ch, st):
        def adder(p):
            st["log"].append("adder")
            ch.on("e", lambda p: st["log"].append("added"))

        st["off"] = ch.on("e", adder)

    app, st = make_app(build)
    async with serving(app) as url:
        c, ch, _ = await attached(driver, url)
        await c.request(ch, "e")
        assert st["log"] == ["adder"]
        st["off"]()
        await c.request(ch, "e")
        assert st["log"] == ["adder", "added"]
        await c.disconnect()


async def test_emit_close_and_closed(driver):
    def build(ch, st):
        def close_me(p):
            ch.close()
            ch.close()  # idempotent
            st["log"].append(ch.closed)
            with pytest.raises(ps.ChannelClosed):
                ch.emit("late")
            with pytest.raises(ps.ChannelClosed):
                ch.on("x", print)
            return "answer after close"  # a no-op: the channel is closed

        ch.on("close-me", close_me)
        ch.on("close-me", lambda p: st["log"].append("not after close"))

    app, st = make_app(build)
    async with serving(app) as url:
        c, ch, _ = await attached(driver, url)
        channel = st["channels"][0]
        assert not channel.closed
        channel.emit("server:hello", {"n": 1})
        channel.emit("server:bin", b"\x00\xffbinary")
        [m] = await c.wait(ch, "server:hello")
        assert m["payload"] == {"n": 1}
        [m] = await c.wait(ch, "server:bin")
        assert m["payload"] == {"$bytes": base64.b64encode(b"\x00\xffbinary").decode()}
        await c.emit(ch, "close-me")
        [m] = await c.wait(ch, "__close__")
        assert st["log"] == [True]
        assert channel.closed
        # The server answers requests for a closed channel itself.
        assert await c.request(ch, "close-me") == {"ok": False, "error": "Channel closed"}
        with pytest.raises(ps.ChannelClosed):
            channel.emit("x")
        await c.disconnect()


async def test_client_close_closes_the_channel(driver):
    app, st = make_app(lambda ch, st: None)
    async with serving(app) as url:
        c, ch, _ = await attached(driver, url)
        channel = st["channels"][0]
        await c.close_channel(ch)
        await until(lambda: channel.closed, "closed by the client")
        with pytest.raises(ps.ChannelClosed):
            channel.emit("x")
        await c.disconnect()


async def test_payload_types_cross_both_ways(driver):
    def build(ch, st):
        def echo(p):
            if isinstance(p, dict) and "file" in p:
                assert p["file"] == bytes(range(256))
            return p

        ch.on("echo", echo)
        ch.on("types", lambda p: [None, True, False, 0, -2**53, 2**53, 1.5, "é\u0000x",
                                  {"nested": [{"a": []}]}, (1, 2)])
        ch.on("big", lambda p: 2**64)
        ch.on("nan", lambda p: float("nan"))
        ch.on("key", lambda p: {1: "x"})

    app, _ = make_app(build)
    async with serving(app) as url:
        c, ch, _ = await attached(driver, url)
        value = {"s": "ünïcode ✓", "i": 42, "f": 0.25, "b": True, "n": None, "l": [1, [2, {}]]}
        assert await c.request(ch, "echo", value) == {"ok": True, "payload": value}
        r = await c.request(ch, "types")
        # JavaScript's numbers are exact to 2**53 (the server sends all 64 bits).
        assert r["payload"] == [None, True, False, 0, -2**53, 2**53, 1.5, "é\u0000x",
                                {"nested": [{"a": []}]}, [1, 2]]
        # Binary both ways: a Buffer from the client is bytes here, bytes go out as a Buffer.
        blob = {"$bytes": base64.b64encode(bytes(range(256))).decode()}
        r = await c.request(ch, "echo", {"file": blob, "name": "x"})
        assert r == {"ok": True, "payload": {"file": blob, "name": "x"}}
        assert "64 bits" in (await c.request(ch, "big"))["error"]
        assert "NaN" in (await c.request(ch, "nan"))["error"]
        assert "keys must be str" in (await c.request(ch, "key"))["error"]
        await c.disconnect()
    assert ps._core.json_round_trip({"b": b"\x01\x02", "t": (1,), "m": memoryview(b"z")}) == {
        "b": b"\x01\x02", "t": [1], "m": b"z"}
    assert ps._core.json_round_trip([-2**63, 2**63 - 1]) == [-2**63, 2**63 - 1]
    loop = []
    loop.append(loop)
    with pytest.raises(RecursionError):
        ps._core.json_round_trip(loop)


async def test_channel_messages_for_other_sessions_never_reach_handlers(driver):
    def build(ch, st):
        ch.on("e", lambda p: st["log"].append(p) or "mine")

    app, st = make_app(build)
    async with serving(app) as url:
        a, ch_a, _ = await attached(driver, url)
        b = await driver.client(url)
        assert await b.request(ch_a, "e", "intruder") == {"ok": False, "error": "Channel closed"}
        assert await a.request(ch_a, "e", "owner") == {"ok": True, "payload": "mine"}
        assert st["log"] == ["owner"]
        await a.disconnect()
        await b.disconnect()


async def test_emit_from_another_thread_is_refused(driver):
    app, st = make_app(lambda ch, st: None)
    async with serving(app) as url:
        c, ch, _ = await attached(driver, url)
        channel = st["channels"][0]
        with pytest.raises(RuntimeError, match="thread"):
            await asyncio.get_running_loop().run_in_executor(None, channel.emit, "x")
        await c.disconnect()
