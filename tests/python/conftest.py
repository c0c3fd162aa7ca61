"""Fixtures of the pytest suite of pulsec's Python package.

Every test runs a real App in this process, on 127.0.0.1 and a free port, inside the session's
asyncio loop; the clients are real socket.io-client connections in one Node process
(driver.mjs) that the tests steer line by line. `make test-python` runs the suite from the venv
that `make python` builds (Debian's /usr/bin/python3 with --system-site-packages, so pytest and
pytest-asyncio come from Debian).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Optional

import pytest

import pulsec as ps

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("driver.mjs")
NODE = os.environ.get("NODE", "node")


class DriverError(AssertionError):
    pass


class Driver:
    """One Node process holding socket.io-client connections, named by the tests."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.ids = itertools.count(1)
        self.pending: Dict[int, asyncio.Future] = {}
        self.reader = asyncio.get_running_loop().create_task(self._read())
        self.names = itertools.count(1)

    @classmethod
    async def start(cls) -> "Driver":
        # A sanitizer run preloads ASan for Python (make test-python-asan): not for Node.
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        proc = await asyncio.create_subprocess_exec(
            NODE, str(DRIVER), cwd=str(ROOT), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=env)
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert json.loads(line) == {"ready": True}, line
        return cls(proc)

    async def _read(self) -> None:
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            msg = json.loads(line)
            fut = self.pending.pop(msg.pop("id"), None)
            if fut and not fut.done():
                fut.set_result(msg)
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(DriverError("the driver process ended"))

    async def call(self, op: str, timeout: Optional[float] = 30, **fields: Any) -> Dict[str, Any]:
        """Runs one operation; timeout None waits without a timer (for measurements that a
        cancelled timer left in the loop's heap would disturb)."""
        i = next(self.ids)
        fut = asyncio.get_running_loop().create_future()
        self.pending[i] = fut
        self.proc.stdin.write((json.dumps({"id": i, "op": op, **fields}) + "\n").encode())
        await self.proc.stdin.drain()
        return await (fut if timeout is None else asyncio.wait_for(fut, timeout))

    async def ok(self, op: str, **fields: Any) -> Dict[str, Any]:
        r = await self.call(op, **fields)
        if not r.get("ok"):
            raise DriverError(f"{op} {fields}: {r}")
        return r

    def name(self) -> str:
        return f"c{next(self.names)}"

    async def client(self, url: str, **opts: Any) -> "Client":
        name = self.name()
        await self.ok("connect", client=name, url=url, **opts)
        return Client(self, name)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.call("exit", timeout=5)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()
        self.reader.cancel()


class Client:
    """One connection of the driver."""

    def __init__(self, driver: Driver, name: str) -> None:
        self.d = driver
        self.name = name

    async def attach(self, path: str, props: Any = None) -> Dict[str, Any]:
        r = await self.d.ok("attach", client=self.name, path=path, props=props)
        return {"props": r["props"], "attachId": r["attachId"]}

    async def attach_error(self, path: str, props: Any = None) -> str:
        r = await self.d.call("attach", client=self.name, path=path, props=props)
        assert not r["ok"], r
        return r["error"]

    async def detach(self, attach_id: str) -> None:
        await self.d.ok("detach", client=self.name, attachId=attach_id)

    async def emit(self, channel: str, event: str, payload: Any = None) -> None:
        await self.d.ok("emit", client=self.name, channel=channel, event=event, payload=payload)

    async def request(self, channel: str, event: str, payload: Any = None,
                      timeout_ms: int = 10000) -> Dict[str, Any]:
        """{"ok": True, "payload": ...} or {"ok": False, "error": text}."""
        return await self.d.call("request", client=self.name, channel=channel, event=event,
                                 payload=payload, timeoutMs=timeout_ms)

    async def answer(self, channel: str, event: str, mode: str, value: Any = None,
                     delay_ms: int = 0) -> None:
        await self.d.ok("answer", client=self.name, channel=channel, event=event, mode=mode,
                        value=value, delayMs=delay_ms)

    async def close_channel(self, channel: str) -> None:
        await self.d.ok("close", client=self.name, channel=channel)

    async def raw(self, message: Any) -> None:
        await self.d.ok("raw", client=self.name, message=message)

    async def wait(self, channel: Any = None, event: Any = None, count: int = 1,
                   timeout_ms: int = 10000) -> list:
        fields: Dict[str, Any] = {"count": count, "timeoutMs": timeout_ms}
        if channel is not None:
            fields["channel"] = channel
        if event is not None:
            fields["event"] = event
        r = await self.d.call("wait", client=self.name, timeout=timeout_ms / 1000 + 10, **fields)
        if not r["ok"]:
            raise DriverError(f"{self.name}: {r['error']}; matching so far: {r['messages']}")
        return r["messages"]

    async def log(self) -> list:
        return (await self.d.ok("log", client=self.name))["messages"]

    async def disconnect(self) -> None:
        await self.d.ok("disconnect", client=self.name)


@pytest.fixture(scope="session")
def event_loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
async def driver() -> AsyncIterator[Driver]:
    d = await Driver.start()
    yield d
    await d.close()


@contextlib.asynccontextmanager
async def serving(app: ps.App) -> AsyncIterator[str]:
    """Serves `app` on a free port for the block; yields its URL; stops it gracefully after."""
    port = await app.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        app.stop()
        await asyncio.wait_for(app.wait_closed(), 10)


async def until(predicate, message: str = "condition", timeout: float = 10) -> None:
    """Waits until predicate() is true (polling the loop), failing after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        await asyncio.sleep(0.01)


@pytest.fixture(autouse=True)
def no_leftovers(caplog):
    """Every test ends with the core's objects released: nothing of a stopped App lives on."""
    yield
    import gc

    # Logged tracebacks hold the frames of the handlers that raised, and those their objects.
    for when in ("setup", "call"):
        caplog.get_records(when).clear()
    caplog.clear()
    gc.collect()
    live = ps._core.live_objects()
    leftovers = {k: v for k, v in live.items() if v and k != "servers"}
    assert not leftovers, f"live objects after the test: {live}"
