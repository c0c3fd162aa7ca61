"""The App: options, start/serve/stop inside a running loop, app.run() in its own process with
its `listening on` line and a graceful SIGINT/SIGTERM, and errors that must not take the
server down."""

import asyncio
import signal
import socket
import sys
import textwrap

import pytest

import pulsec as ps
from conftest import ROOT, serving, until

RUN_APP = textwrap.dedent("""
    import sys
    import pulsec as ps

    class Member(ps.State):
        def __init__(self):
            self.channel = ps.channel()
            self.channel.on("ping", lambda p: "pong")

        def on_dispose(self):
            print("disposed", flush=True)

    app = ps.App(shutdown_grace_ms=500)

    @app.view("/v")
    def view(props):
        return {"channelId": Member().channel.id}

    app.run(port=0)
    print("run returned", flush=True)
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_run_prints_its_address_and_stops_gracefully(driver, signum):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RUN_APP, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith("listening on http://127.0.0.1:"), line
        url = line.split()[-1]
        assert int(url.rsplit(":", 1)[1]) > 0  # port 0 picked a free one
        c = await driver.client(url)
        v = await c.attach("/v")
        ch = v["props"]["channelId"]
        assert await c.request(ch, "ping") == {"ok": True, "payload": "pong"}
        proc.send_signal(signum)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err.decode()
        assert out.decode().split() == ["disposed", "run", "returned"]
        assert b"Traceback" not in err, err.decode()
        assert not (await driver.ok("status", client=c.name))["connected"]  # closed with 1001
        await c.disconnect()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_serve_runs_until_stopped_or_cancelled(driver):
    app = ps.App()

    @app.view("/v")
    def view(props):
        return {"port": app.port}

    assert app.port is None and not app.serving
    server = asyncio.ensure_future(app.serve("127.0.0.1", 0))
    await until(lambda: app.serving, "serving")
    c = await driver.client(f"http://127.0.0.1:{app.port}")
    assert (await c.attach("/v"))["props"] == {"port": app.port}
    app.stop()
    await asyncio.wait_for(server, 10)
    assert app.port is None and not app.serving
    await c.disconnect()

    # Cancelling serve() stops the server before the cancellation goes on.
    server = asyncio.ensure_future(app.serve("127.0.0.1", 0))
    await until(lambda: app.serving, "serving again")
    server.cancel()
    with pytest.raises(asyncio.CancelledError):
        await server
    assert not app.serving


async def test_options_are_checked():
    with pytest.raises(TypeError, match="unknown server option"):
        ps.App(ping_intervall_ms=1)
    with pytest.raises(ValueError, match="ping_interval_ms"):
        ps.App(ping_interval_ms=-1)
    with pytest.raises(TypeError):
        ps.App(max_payload="big")
    app = ps.App(static_dir=ROOT / "no-such-dir")
    with pytest.raises(ValueError, match="static_dir"):
        await app.start("127.0.0.1", 0)
    ps.App(allowed_origins=["http://a.example"], websocket_only=True, path="/io/",
           max_connections=10, ping_timeout_ms=None)


async def test_static_files_and_a_port_in_use(tmp_path):
    (tmp_path / "index.html").write_text("<h1>hello</h1>")
    app = ps.App(static_dir=tmp_path)
    async with serving(app) as url:
        reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        body = await reader.read()
        writer.close()
        assert body.startswith(b"HTTP/1.1 200") and body.endswith(b"<h1>hello</h1>")
        other = ps.App()
        with pytest.raises(OSError) as err:
            await other.start("127.0.0.1", app.port)
        assert "cannot listen" in str(err.value)
        with pytest.raises(RuntimeError, match="already serving"):
            await app.start("127.0.0.1", 0)


async def test_stats_and_duplicate_views(driver):
    app = ps.App()

    @app.view("/v")
    def view(props):
        ps.channel()
        return {}

    with pytest.raises(ValueError, match="already has a view"):
        app.view("/v")(lambda props: {})
    async with serving(app) as url:
        c = await driver.client(url)
        await c.attach("/v")
        st = app.stats()
        assert (st["sessions"], st["views"], st["channels"]) == (1, 1, 1)
        await c.disconnect()
        await until(lambda: app.stats()["sessions"] == 0, "the session gone")


async def test_nothing_blocks_the_loop(driver):
    """Everything runs in the asyncio loop without blocking it: while a server request waits for
    an answer that never comes, the loop goes on running other tasks and serving other
    clients (no wall-clock bounds: the machine may be loaded)."""
    app = ps.App()
    channels = []

    @app.view("/v")
    def view(props):
        ch = ps.channel()
        ch.on("echo", lambda p: p)
        channels.append(ch)
        return {"channelId": ch.id}

    async with serving(app) as url:
        silent = await driver.client(url)
        await silent.attach("/v")
        await silent.answer("*", "never", "never")
        waiting = channels[0].request("never")  # no timeout: waits until the channel closes
        spins = 0
        for _ in range(100):
            await asyncio.sleep(0)
            spins += 1
        clients = [await driver.client(url) for _ in range(5)]
        for c in clients:
            v = await c.attach("/v")
            for i in range(20):
                assert (await c.request(v["props"]["channelId"], "echo", i))["payload"] == i
        assert spins == 100 and not waiting.done()
        for c in clients:
            await c.disconnect()
        await silent.disconnect()
        with pytest.raises(ps.ChannelClosed):
            await waiting


EXIT_APP = textwrap.dedent("""
    import asyncio
    import pulsec as ps

    app = ps.App()

    @app.view("/v")
    def view(props):
        ch = ps.channel()
        ch.on("exit", lambda p: (_ for _ in ()).throw(SystemExit(3)))
        ch.on("exit", lambda p: print("not after SystemExit", flush=True))
        return {"channelId": ch.id}

    async def main():
        port = await app.start("127.0.0.1", 0)
        print(f"listening on http://127.0.0.1:{port}", flush=True)
        await app.wait_closed()

    asyncio.run(main())
""")


async def test_system_exit_in_a_handler_is_not_swallowed(driver):
    """A SystemExit (or KeyboardInterrupt) raised in a handler leaves the C core's callbacks
    without running more user code and goes on from the asyncio callback: the process exits with
    its code instead of the handler's error being logged and answered."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", EXIT_APP, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        url = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().split()[-1]
        c = await driver.client(url)
        v = await c.attach("/v")
        await c.emit(v["props"]["channelId"], "exit")
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 3, err.decode()
        assert b"not after SystemExit" not in out
        await c.disconnect()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


WORKERS_APP = textwrap.dedent("""
    import os
    import pulsec as ps

    app = ps.App(workers=2, shutdown_grace_ms=500)

    class Member(ps.State):
        def __init__(self):
            self.channel = ps.channel()
            self.channel.join("everyone")
            self.channel.on("shout", self.shout)

        def shout(self, text):
            app.publish("everyone", "heard", {"text": text, "worker": app.worker})
            return app.worker

        def on_dispose(self):
            os.write(1, f"disposed {app.worker}\\n".encode())  # one write: two workers share stdout

    @app.view("/v")
    def view(props):
        return {"channelId": Member().channel.id, "worker": app.worker, "pid": os.getpid()}

    app.run(port=0)
    print("supervisor returned", app.worker, flush=True)
""")


async def test_workers(driver):
    """workers=2: two processes serve one port, each with its own asyncio loop driving its copy
    of the server; a publish in one reaches channels in the other; SIGTERM to the supervisor
    stops both gracefully (their on_dispose runs) and everything exits 0."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WORKERS_APP, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    clients = []
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line.startswith("listening on http://127.0.0.1:"), line
        url = line.split()[-1]
        members = {}  # worker index -> (client, channel id)
        for _ in range(40):  # the kernel spreads connections over the workers
            c = await driver.client(url)
            clients.append(c)
            props = (await c.attach("/v"))["props"]
            members.setdefault(props["worker"], (c, props["channelId"]))
            if len(members) == 2:
                break
        assert sorted(members) == [0, 1], members
        (a, ch_a), (b, ch_b) = members[0], members[1]
        assert await a.request(ch_a, "shout", "hello") == {"ok": True, "payload": 0}
        [m] = await b.wait(ch_b, "heard")  # published in worker 0, delivered in worker 1
        assert m["payload"] == {"text": "hello", "worker": 0}
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        lines = out.decode().splitlines()
        assert lines[-1] == "supervisor returned None", lines
        disposed = lines[:-1]
        assert len(disposed) == len(clients)  # every view of every worker disposed, once
        assert set(disposed) == {"disposed 0", "disposed 1"}, disposed
        assert b"Traceback" not in err, err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for c in clients:
            await c.disconnect()


async def test_tls(driver, tmp_path):
    """tls_cert_file / tls_key_file: the port speaks HTTPS and WSS (a certificate minted here by
    openssl); reload_tls() reads a renewed one without dropping the open connection."""
    import shutil

    openssl = shutil.which("openssl")
    assert openssl, "openssl (Debian's, with libssl-dev) mints the test's certificate"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"

    async def mint():
        p = await asyncio.create_subprocess_exec(
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        assert await p.wait() == 0

    await mint()
    app = ps.App(tls_cert_file=cert, tls_key_file=key)

    @app.view("/v")
    def view(props):
        ch = ps.channel()
        ch.on("echo", lambda p: p)
        return {"channelId": ch.id}

    port = await app.start("127.0.0.1", 0)
    try:
        url = f"https://127.0.0.1:{port}"
        c = await driver.client(url, insecure=True)
        ch = (await c.attach("/v"))["props"]["channelId"]
        assert await c.request(ch, "echo", "over wss") == {"ok": True, "payload": "over wss"}
        await mint()  # renewed
        app.reload_tls()
        assert await c.request(ch, "echo", "still open") == {"ok": True, "payload": "still open"}
        d = await driver.client(url, insecure=True)
        await d.attach("/v")
        assert app.stats()["tls_handshakes"] == 2
        await c.disconnect()
        await d.disconnect()
    finally:
        app.stop()
        await app.wait_closed()
    with pytest.raises(ValueError):
        plain = ps.App()
        await plain.start("127.0.0.1", 0)
        try:
            plain.reload_tls()
        finally:
            plain.stop()
            await plain.wait_closed()
