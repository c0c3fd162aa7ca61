"""pulsec: real-time channels between a Python server and browser clients.

The Channels API of the Pulse framework (``ps.channel()``, ``channel.on()``, ``await
channel.request()``, ``ps.State.on_dispose``) on pulsec's C core: libuv, http-parser, wslay and
jansson serve Socket.IO v5, and this package drives that core from your asyncio loop. See
docs/PYTHON.md.

    import pulsec as ps

    class ChatRoom(ps.State):
        def __init__(self):
            self.channel = ps.channel()
            self._cleanup = self.channel.on("client:send", self._on_send)

        def _on_send(self, payload):
            self.channel.emit("server:message", {"text": payload["text"]})

        def on_dispose(self):
            self._cleanup()

    app = ps.App()

    @app.view("/chat")
    def chat(props):
        room = ChatRoom()
        return {"channelId": room.channel.id}

    app.run(port=8000)
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import signal
from typing import Any, Awaitable, Callable, Dict, Optional, Tuple, TypeVar, Union
from urllib.parse import parse_qsl

from . import _core
from ._core import Channel, Cleanup, Session, View

__all__ = [
    "App",
    "Channel",
    "ChannelClosed",
    "ChannelError",
    "ChannelTimeout",
    "Cleanup",
    "Denied",
    "Handshake",
    "Message",
    "Session",
    "State",
    "View",
    "channel",
    "current_view",
    "is_request",
]

__version__: str = _core.version

log = logging.getLogger("pulsec")

#: A JSON value as it crosses the channel: dict, list, str, int, float, bool, None, and bytes
#: for binary (Socket.IO attachments).
JSON = Any
Handler = Callable[[Any], Union[Any, Awaitable[Any]]]
F = TypeVar("F", bound=Callable[..., Any])


class ChannelClosed(RuntimeError):
    """The channel is closed: emit/request on it, or it closed while a request waited."""


class ChannelTimeout(asyncio.TimeoutError):
    """The client did not answer a request within its timeout."""


class ChannelError(RuntimeError):
    """The client answered a request with an error; str(exc) is the client's text."""


class Denied(Exception):
    """A refusal: raised by middleware to refuse a connection or a channel message, by a view
    function to refuse the attach, or by a handler to answer a request with an error.

    ``reason`` reaches the client: as the connect_error message (with ``data``, if any) for
    on_connect, as the error reply of a denied request for on_channel_message and handlers, as
    the attach_error of a view. Unlike other exceptions a Denied is not logged: it is a
    decision, not a failure.
    """

    def __init__(self, reason: str = "denied", data: JSON = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.data = data


_current_view: contextvars.ContextVar[Optional[View]] = contextvars.ContextVar(
    "pulsec_current_view", default=None
)


def _building_view(what: str) -> View:
    view = _current_view.get()
    if view is None or not view._building:
        raise RuntimeError(
            f"{what} must be called inside a view function (directly or in the __init__ of "
            "a ps.State created there), while it runs"
        )
    return view


def channel() -> Channel:
    """Opens a channel owned by the view being built; hand ``channel.id`` to the client."""
    return _building_view("ps.channel()")._open_channel()


_in_request: contextvars.ContextVar[bool] = contextvars.ContextVar("pulsec_in_request", default=False)


def is_request() -> bool:
    """Inside a channel handler: True when the client made a request (its answer is awaited),
    False for an event. A pulsec addition to the seed's API, for handlers that serve both."""
    return _in_request.get()


def current_view() -> View:
    """The view being built, for pushing new props later (``view.set_props(...)``)."""
    return _building_view("ps.current_view()")


class State:
    """Base class of a view's state. Every State created while a view function runs belongs
    to that view: its ``on_dispose()`` runs once when the view goes away (detach, disconnect,
    server stop), newest State first, while the view's channels are still open."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "State":
        self = super().__new__(cls)
        view = _current_view.get()
        if view is not None and view._building:
            view._adopt(self)
        return self

    def on_dispose(self) -> None:
        """Runs once when the owning view goes away. May be async."""


class Handshake:
    """What a client sent to connect, as on_connect middleware sees it."""

    __slots__ = ("headers", "query", "cookies", "auth", "address", "session")

    def __init__(
        self,
        headers: Dict[str, str],
        query_string: str,
        cookies: Dict[str, str],
        auth: JSON,
        address: str,
        session: Session,
    ) -> None:
        #: Request headers, names lower-cased (the last one of a repeated header).
        self.headers = headers
        query: Dict[str, str] = {}
        for key, value in parse_qsl(query_string, keep_blank_values=True):
            query.setdefault(key, value)  # the first one, as pulsec's lookup by name
        #: Query parameters of the connection URL, decoded.
        self.query = query
        #: Cookies of the Cookie header.
        self.cookies = cookies
        #: The Socket.IO ``auth`` object of the CONNECT ({} when none).
        self.auth = auth
        #: The peer's address ("127.0.0.1").
        self.address = address
        #: The connection being made; ``session.data`` keeps values for later middleware.
        self.session = session

    def __repr__(self) -> str:
        return f"<pulsec.Handshake from {self.address} {self.session.id}>"


class Message:
    """A client event or request on a channel, as on_channel_message middleware sees it."""

    __slots__ = ("channel", "event", "payload", "is_request")

    def __init__(self, channel: Optional[Channel], event: str, payload: JSON, is_request: bool):
        self.channel = channel
        self.event = event
        self.payload = payload
        self.is_request = is_request

    def __repr__(self) -> str:
        kind = "request" if self.is_request else "event"
        return f"<pulsec.Message {kind} {self.event!r} on {self.channel!r}>"


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _log_exception(what: str, exc: BaseException) -> None:
    log.error("%s", what, exc_info=(type(exc), exc, exc.__traceback__))


def _failed(what: str, exc: BaseException) -> str:
    """The text an exception of user code answers with; logged unless it is a ps.Denied."""
    if isinstance(exc, Denied):
        return exc.reason
    _log_exception(what, exc)
    return _text(exc)


async def _run_chain(first: Awaitable[Any], rest: Tuple[Cleanup, ...], payload: JSON,
                     reply: Any, channel: Channel) -> None:
    """The handlers of one client message from the first that returned an awaitable on, in
    registration order (the C core ran the ones before it). ``reply`` is None for an event;
    for a request the first result other than None answers it, an exception answers with its
    text, and no answer at all answers None."""
    for step in (None, *rest):
        try:
            if step is None:
                result = await first
            else:
                handler = step.handler
                if handler is None:
                    continue  # removed meanwhile
                if channel.closed:
                    return  # later handlers do not run; a reply is a no-op now
                result = handler(payload)
                if inspect.isawaitable(result):
                    result = await result
        except Exception as exc:
            text = _failed(f"a handler on {channel!r} raised", exc)
            if reply is not None:
                reply.error(text)
                return
            continue  # an event: the other handlers still run
        if result is not None and reply is not None:
            try:
                reply.ok(result)
            except Exception as exc:
                _log_exception(f"a handler's answer on {channel!r} is not JSON", exc)
                reply.error(_text(exc))
            return
    if reply is not None:
        reply.ok(None)


async def _build_view(view: View, coro: Awaitable[Any]) -> None:
    """Runs an async view function; its props answer the attach."""
    try:
        props = await coro
    except asyncio.CancelledError:
        if not view.closed:
            view._reject("Attach cancelled")
        raise
    except Exception as exc:
        view._reject(_failed(f"the view function of {view.path} raised", exc))
        return
    view._accept(props)


_core._setup(
    channel_closed=ChannelClosed,
    channel_timeout=ChannelTimeout,
    channel_error=ChannelError,
    denied=Denied,
    log_exception=_log_exception,
    run_chain=_run_chain,
    build_view=_build_view,
    handshake=Handshake,
    message=Message,
    current_view=_current_view,
    in_request=_in_request,
)


def _plain_function(fn: Callable[..., Any], what: str) -> None:
    if inspect.iscoroutinefunction(fn):
        raise TypeError(f"{what} must be a plain (not async) function: it runs before any "
                        "answer is sent, inside the server's network callback")


class App:
    """A pulsec server: views, middleware, and the options of the C core.

    Options (all optional, pulsec's defaults otherwise): ``static_dir``, ``path``,
    ``allowed_origins``, ``ping_interval_ms``, ``ping_timeout_ms``, ``connect_timeout_ms``,
    ``shutdown_grace_ms``, ``ws_idle_release_ms``, ``max_payload``, ``max_header_size``,
    ``max_body_size``, ``backlog``, ``websocket_only``, ``max_queued_bytes``,
    ``max_connections``, ``max_views_per_session``, ``max_channels_per_session``,
    ``max_pending_requests``, ``idle_timeout_ms``, ``max_topics_per_channel``, ``max_topics``,
    ``trusted_proxies``, ``workers`` (with ``run()``), ``redis_url``, ``redis_prefix``,
    ``max_redis_queued``, ``redis_timeout_ms``, ``close_timeout_ms``, ``max_unconnected``,
    ``max_unconnected_per_address``, ``tls_cert_file``, ``tls_key_file``,
    ``tls_handshake_timeout_ms``, ``resume_window_ms`` (connection state recovery: how long a
    session whose transport dropped waits for its client, 60000 by default; 0 turns it off),
    ``max_replay_bytes``, ``max_detached_sessions`` (docs/PYTHON.md; ps_server_opts in
    include/pulsec.h).
    """

    def __init__(self, **options: Any) -> None:
        self._options = dict(options)
        self._core = _core.Server(self._options)  # checks the options now
        self._paths: Dict[str, Callable[..., Any]] = {}

    def view(self, path: str) -> Callable[[F], F]:
        """Registers a view: ``fn(props) -> props``, sync or async. It builds the view's
        state (States, ``ps.channel()``) and returns the props the client gets."""

        def register(fn: F) -> F:
            if path in self._paths:
                raise ValueError(f"{path!r} already has a view")
            self._core.route(path, fn)
            self._paths[path] = fn
            return fn

        return register

    def on_connect(self, fn: F) -> F:
        """Connect middleware ``fn(handshake)``: raise ``ps.Denied(reason)`` to refuse."""
        _plain_function(fn, "on_connect middleware")
        self._core.use_connect(fn)
        return fn

    def on_channel_message(self, fn: F) -> F:
        """Channel middleware ``fn(session, message)``: raise ``ps.Denied(reason)`` to deny
        (a request then gets the reason as its error reply)."""
        _plain_function(fn, "on_channel_message middleware")
        self._core.use_message(fn)
        return fn

    @property
    def port(self) -> Optional[int]:
        """The bound port while serving (useful with port 0), else None."""
        return self._core.port

    @property
    def serving(self) -> bool:
        return self._core.serving

    def publish(self, topic: str, event: str, payload: JSON = None, *,
                skip: Optional[Channel] = None) -> None:
        """Emits `event` on every channel joined to `topic` (``channel.join(topic)``), but
        `skip` (the sender, for "everyone but me"). The payload is serialised once."""
        self._core.publish(topic, event, payload, skip)

    def reload_tls(self) -> None:
        """Reads tls_cert_file and tls_key_file again (a renewed certificate): new connections
        get it, open ones keep theirs. ``run()`` does it on SIGHUP."""
        self._core.reload_tls()

    @property
    def _scheme(self) -> str:
        return "https" if self._options.get("tls_cert_file") else "http"

    def stats(self) -> Dict[str, int]:
        """The C core's counters: connections, sessions, views, channels, messages..."""
        return self._core.stats()

    async def start(self, host: str = "127.0.0.1", port: int = 8000) -> int:
        """Binds and starts serving on the running loop; returns the port."""
        return self._core.start(asyncio.get_running_loop(), self._options, host, port)

    def stop(self) -> None:
        """Starts the graceful stop (views disposed, WebSockets closed with 1001); safe from
        handlers and signal handlers. ``await app.wait_closed()`` for its end."""
        self._core.stop()

    async def wait_closed(self) -> None:
        closed = self._core.closed
        if closed is not None:
            await asyncio.shield(closed)

    async def serve(self, host: str = "127.0.0.1", port: int = 8000) -> None:
        """Serves inside the running asyncio loop until ``app.stop()``; cancelling it stops
        the server gracefully first."""
        await self.start(host, port)
        try:
            await self.wait_closed()
        except asyncio.CancelledError:
            self.stop()
            await self.wait_closed()
            raise

    @property
    def worker(self) -> Optional[int]:
        """With ``workers``: this worker process's index (0..workers-1), -1 in the supervisor;
        0 in a server without workers; None when not serving."""
        return self._core.worker

    def run(self, host: str = "127.0.0.1", port: int = 8000) -> None:
        """Serves until SIGINT or SIGTERM, then stops gracefully. Prints
        ``listening on http://HOST:PORT`` once it accepts connections (port 0: a free one;
        https with TLS, where SIGHUP reloads the certificate).

        With the option ``workers=N`` (N > 1), N processes serve the port, each running its own
        asyncio loop with the views, handlers and middleware registered before run(); this
        process supervises them (restarting a worker that dies) until SIGINT or SIGTERM stops
        them all. Per-worker state lives in each worker; topics reach every worker."""
        if (self._options.get("workers") or 0) > 1:
            return self._run_workers(host, port)

        async def main() -> None:
            loop = asyncio.get_running_loop()
            await self.start(host, port)
            print(f"listening on {self._scheme}://{host}:{self.port}", flush=True)
            signals = [signal.SIGINT, signal.SIGTERM]
            for sig in signals:
                loop.add_signal_handler(sig, self.stop)
            if self._scheme == "https":
                signals.append(signal.SIGHUP)
                loop.add_signal_handler(signal.SIGHUP, self._reload_logged)
            try:
                await self.wait_closed()
            finally:
                for sig in signals:
                    loop.remove_signal_handler(sig)

        asyncio.run(main())

    def _reload_logged(self) -> None:
        try:
            self.reload_tls()
            log.info("TLS certificate reloaded")
        except ValueError as exc:
            log.error("TLS reload failed: %s", exc)

    def _run_workers(self, host: str, port: int) -> None:
        def worker_main(index: int) -> None:
            # In a freshly forked worker: its own loop drives its copy of the server. No
            # asyncio signal handlers: pulsec's own stop the worker on SIGINT/SIGTERM.
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                self._core.adopt(loop)
                loop.run_until_complete(self.wait_closed())
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            finally:
                loop.close()

        bound = self._core.listen_workers(self._options, host, port, worker_main)
        print(f"listening on {self._scheme}://{host}:{bound}", flush=True)
        if self._core.supervise() != 0:
            raise SystemExit("pulsec: a worker did not exit cleanly")
