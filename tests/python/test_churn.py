"""Churn: thousands of attach / request / detach cycles, and connections coming and going, leave
nothing behind: no live core objects, no growth of Python's traced memory (tracemalloc traces
pulsec's and jansson's allocations too: the extension routes them through Python's raw
allocator), no growth of the process's RSS."""

import asyncio
import gc
import tracemalloc

import pulsec as ps
from conftest import serving, until


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Echo(ps.State):
    """A view that does a bit of everything per cycle: sync and async handlers, a server
    request answered by the client, a cleanup, on_dispose."""

    def __init__(self, counters):
        self.counters = counters
        self.channel = ps.channel()
        self.cleanups = [self.channel.on("echo", self.echo), self.channel.on("echo", self.never)]
        self.task = asyncio.ensure_future(self.ping())

    async def echo(self, payload):
        await asyncio.sleep(0)
        return payload

    def never(self, payload):
        raise AssertionError("the first handler answered")

    async def ping(self):
        try:
            await self.channel.request("server:ping", {"n": 1}, timeout=30)
            self.counters["pings"] += 1
        except ps.ChannelClosed:
            self.counters["closed"] += 1

    def on_dispose(self):
        self.counters["disposed"] += 1
        for cleanup in self.cleanups:
            cleanup()


async def churn(driver, url, cycles, connections):
    r = await driver.call("churn", url=url, n=cycles, connections=connections, timeout=None)
    assert r["ok"] and r["errors"] == 0, r


def measure():
    gc.collect()
    return tracemalloc.get_traced_memory()[0], rss_kib(), len(gc.get_objects())


async def test_churn_leaves_nothing_behind(driver):
    counters = {"pings": 0, "closed": 0, "disposed": 0}
    app = ps.App()

    @app.view("/echo")
    def view(props):
        return {"channelId": Echo(counters).channel.id}

    views = 0

    async def round(cycles, connections):
        nonlocal views
        await churn(driver, url, cycles, connections)
        views += cycles + 1 + connections  # each churn call ends with one more attach
        await until(lambda: app.stats()["sessions"] == 0, "the sessions gone")
        await until(lambda: counters["disposed"] == views, "every view disposed")
        await until(lambda: counters["pings"] + counters["closed"] == views, "every ping done")
        await asyncio.sleep(0.05)  # the last close callbacks of libuv

    tracemalloc.start(4)
    try:
        async with serving(app) as url:
            # Warm-up: free lists, arenas, pulsec's pools and first-use allocations settle.
            await round(300, 20)
            m0 = measure()
            await round(1500, 50)
            m1 = measure()
            await round(1500, 50)
            m2 = measure()
            growth = ""
            if m2[0] - m1[0] >= 16 * 1024:  # where it grows, for the failure message
                s1 = tracemalloc.take_snapshot()
                await round(1500, 50)
                s2 = tracemalloc.take_snapshot()
                growth = "\n".join(str(d) for d in s2.compare_to(s1, "traceback")[:5])
            live = ps._core.live_objects()
    finally:
        tracemalloc.stop()

    assert {k: v for k, v in live.items() if k != "servers" and v} == {}, live
    first = (m1[0] - m0[0], m1[1] - m0[1], m1[2] - m0[2])
    second = (m2[0] - m1[0], m2[1] - m1[1], m2[2] - m1[2])
    print(f"churn: {views} views; traced memory {first[0]:+d} then {second[0]:+d} B, "
          f"RSS {first[1]:+d} then {second[1]:+d} KiB, GC objects {first[2]:+d} then "
          f"{second[2]:+d}; pings answered {counters['pings']}")
    # 1,551 views, connections and requests went through in the second round: a leak of even a
    # few bytes each would show there.
    assert second[0] < 16 * 1024, f"traced memory grew by {second[0]} bytes:\n{growth}"
    assert first[0] < 128 * 1024, f"traced memory grew by {first[0]} bytes"
    assert second[2] < 100, f"{second[2]} more objects tracked by the GC"
    assert second[1] < 1024, f"RSS grew by {second[1]} KiB"  # (ASan runs skip this test)
    assert counters["pings"] > views / 2
