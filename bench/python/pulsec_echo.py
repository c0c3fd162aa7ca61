"""The /echo view of `make bench` (bench/scenarios/python.mjs) on pulsec's Python API: the protocol of
examples/echo's /echo view and of socketio_echo.py beside this file, written as the Channels
page writes views (a ps.State with a channel and its handlers).

    request "echo"          -> the same payload       event "echo" -> event "echo" back
    request "fail" {text}   -> error "failed: TEXT"   any other request -> null

Usage: python3 pulsec_echo.py [--host 127.0.0.1] [--port 8000]   (--port 0: a free port)
"""

import argparse

import pulsec as ps


class Echo(ps.State):
    def __init__(self):
        self.channel = ps.channel()
        self.channel.on("echo", self.echo)
        self.channel.on("fail", self.fail)

    def echo(self, payload):
        if ps.is_request():
            return payload
        self.channel.emit("echo", payload)

    def fail(self, payload):
        text = payload.get("text", "") if isinstance(payload, dict) else ""
        raise ps.ChannelError(f"failed: {text}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-connections", type=int, default=None)
    args = parser.parse_args()
    app = ps.App(max_connections=args.max_connections)

    @app.view("/echo")
    def echo(props):
        return {"channelId": Echo().channel.id}

    app.run(host=args.host, port=args.port)


if __name__ == "__main__":
    main()
