"""The Python baseline of `make bench` (bench/scenarios/python.mjs): the /echo view and channel protocol
of bench/baseline-socketio/server.js and examples/echo, written on python-socketio 5
(AsyncServer) under uvicorn, the stack Pulse runs on, the way a user would write it: one
"message" handler, a dict of views and a dict of channels per connection, the library's
defaults (pingInterval 25 s, pingTimeout 20 s). uvicorn picks its fastest installed parts:
uvloop, httptools and websockets (Debian's python3-uvloop, -httptools, -websockets).

    attach {path:"/echo", attachId}      -> attach_ack {attachId, props:{channelId}}
    attach with another path             -> attach_error "Unknown path: PATH"
    detach {attachId}                    -> the view's channels close (__close__ to the client)
    request "echo"                       -> response with the same payload
    request "fail" {text}                -> error response "failed: TEXT"
    any other request                    -> response null
    event "echo"                         -> event "echo" back with the same payload
    event "__close__"                    -> the channel is released
    request on an unknown/closed channel -> error response "Channel closed"

Usage: python3 socketio_echo.py [--host 127.0.0.1] [--port 8000]   (--port 0: a free port)
Prints "listening on http://HOST:PORT" once it accepts connections.
"""

import argparse
import secrets
import socket

import socketio
import uvicorn

sio = socketio.AsyncServer(async_mode="asgi")
app = socketio.ASGIApp(sio)
state = {}  # sid -> (views: attachId -> [channel ids], channels: channel id -> attachId)


def echo_view():
    channel_id = secrets.token_hex(16)
    return [channel_id], {"channelId": channel_id}


routes = {"/echo": echo_view}


@sio.event
async def connect(sid, environ, auth=None):
    state[sid] = ({}, {})


@sio.event
async def disconnect(sid):
    state.pop(sid, None)


async def respond(sid, channel, request_id, payload=None, error=None):
    msg = {"type": "channel_message", "channel": channel, "responseTo": request_id}
    if error is None:
        msg["payload"] = payload
    else:
        msg["error"] = error
    await sio.emit("message", msg, to=sid)


async def on_channel_message(sid, views, channels, msg):
    channel = msg.get("channel")
    event = msg.get("event")
    payload = msg.get("payload")
    request_id = msg.get("requestId")
    if not isinstance(channel, str) or channel not in channels:
        if isinstance(request_id, str):
            await respond(sid, channel, request_id, error="Channel closed")
        return
    if "responseTo" in msg:
        return  # this server sends no requests
    if event == "__close__":
        channels.pop(channel, None)
        return
    if isinstance(request_id, str):
        if event == "echo":
            await respond(sid, channel, request_id, payload)
        elif event == "fail":
            text = payload.get("text", "") if isinstance(payload, dict) else ""
            await respond(sid, channel, request_id, error=f"failed: {text}")
        else:
            await respond(sid, channel, request_id, None)
    elif event == "echo":
        await sio.emit("message", {"type": "channel_message", "channel": channel, "event": "echo",
                                   "payload": payload}, to=sid)


@sio.event
async def message(sid, msg):
    if not isinstance(msg, dict) or sid not in state:
        return
    views, channels = state[sid]
    kind = msg.get("type")
    if kind == "channel_message":
        await on_channel_message(sid, views, channels, msg)
    elif kind == "attach":
        attach_id, path = msg.get("attachId"), msg.get("path")
        if not isinstance(attach_id, str):
            return
        init = routes.get(path)
        if init is None:
            await sio.emit("message", {"type": "attach_error", "attachId": attach_id,
                                       "error": f"Unknown path: {path}"}, to=sid)
        elif attach_id in views:
            await sio.emit("message", {"type": "attach_error", "attachId": attach_id,
                                       "error": "Duplicate attachId"}, to=sid)
        else:
            ids, props = init()
            views[attach_id] = ids
            for i in ids:
                channels[i] = attach_id
            await sio.emit("message", {"type": "attach_ack", "attachId": attach_id,
                                       "props": props}, to=sid)
    elif kind == "detach":
        for i in views.pop(msg.get("attachId"), []):
            if channels.pop(i, None) is not None:
                await sio.emit("message", {"type": "channel_message", "channel": i,
                                           "event": "__close__", "payload": None}, to=sid)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", backlog=2048)
    server = uvicorn.Server(config)

    # uvicorn prints nothing useful for a port it did not choose: say it ourselves, once the
    # server has started (the socket already accepts; startup only adds the handlers).
    startup = server.startup

    async def announce(sockets=None):
        await startup(sockets=sockets)
        print(f"listening on http://{args.host}:{sock.getsockname()[1]}", flush=True)

    server.startup = announce
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
