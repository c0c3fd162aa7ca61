#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/.

The seeds are real protocol bytes: HTTP requests as browsers and Engine.IO clients send them,
RFC 6455 frames (masked as a client must, with the key of RFC 6455 §5.7), the Socket.IO packets
of SOCKETIO.md §4 and tests/fixtures/socketio-packets.json, and the envelopes of DESIGN §3.
Running it again rewrites the directories of the targets it seeds (names are content hashes), so the committed
corpus can be regenerated and reviewed. Files that libFuzzer adds during `make fuzz` go to a scratch
copy, never here.
"""
import hashlib
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MASK = bytes([0x37, 0xFA, 0x21, 0x3D])


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    h = hashlib.sha1(data).hexdigest()[:12]
    with open(os.path.join(d, f"{name}-{h}"), "wb") as f:
        f.write(data)


# ---- HTTP ---------------------------------------------------------------------------------

def req(method, target, headers=(), body=b"", version="HTTP/1.1"):
    lines = [f"{method} {target} {version}".encode(), b"Host: 127.0.0.1:8000"]
    lines += [h.encode() if isinstance(h, str) else h for h in headers]
    if body and not any(str(h).lower().startswith("transfer-encoding") for h in headers):
        lines.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0, length=None):
    """One RFC 6455 frame; `length` overrides the announced length."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    m = 0x80 if mask else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack(">H", n)
    else:
        head += bytes([m | 127]) + struct.pack(">Q", n)
    if mask:
        head += MASK
        payload = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return head + payload


def text(s, **kw):
    return frame(1, s.encode() if isinstance(s, str) else s, **kw)


def close(code=None, reason=b""):
    return frame(8, b"" if code is None else struct.pack(">H", code) + reason)


WS_UPGRADE = [
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
]


def http_seeds():
    o = lambda opt, data: bytes([opt]) + data  # noqa: E731
    get = lambda path, *h: req("GET", path, h)  # noqa: E731
    seeds = {
        "index": o(0, get("/")),
        "app-js": o(0, get("/app.js", "Accept: */*")),
        "sub-dir": o(0, get("/sub/")),
        "sub-dir-noslash": o(0, get("/sub")),
        "sub-json": o(0, get("/sub/data.json")),
        "noindex": o(0, get("/noindex/")),
        "percent-space": o(0, get("/with%20space.txt")),
        "symlink-in": o(0, get("/inside")),
        "symlink-out": o(0, get("/leak")),
        "symlink-dir-out": o(0, get("/up/secret.txt")),
        "dotdot": o(0, get("/../secret.txt")),
        "dotdot-encoded": o(0, get("/%2e%2e/secret.txt")),
        "nul-encoded": o(0, get("/index.html%00.js")),
        "backslash": o(0, get("/sub\\..\\index.html")),
        "missing": o(0, get("/missing.png")),
        "head": o(0, req("HEAD", "/index.html")),
        "post-static": o(0, req("POST", "/index.html", body=b"x=1")),
        "healthz": o(0, get("/healthz")),
        "healthz-post": o(0, req("POST", "/healthz", body=b"{}")),
        "query": o(0, get("/q?EIO=4&transport=polling&t=Nabc&sid=a%20b+c&a+b=1&%25=x",
                          "Origin: http://127.0.0.1:8000", "Cookie: io=abc",
                          "Content-Type: text/plain")),
        "query-bad-escape": o(0, get("/q?sid=%zz&EIO=%4")),
        "query-empty-name": o(0, get("/q?=1&&EIO&transport=")),
        "json": o(0, get("/json")),
        "keep-pipelined": o(0, get("/keep") + get("/q?x") + get("/healthz")),
        "keep-pipelined-1byte": o(1, get("/keep") + get("/healthz")),
        "http10": o(0, req("GET", "/q", ["Connection: keep-alive"], version="HTTP/1.0")
                    + req("GET", "/", version="HTTP/1.0")),
        "connection-close": o(0, get("/keep", "Connection: close") + get("/")),
        "options-star": o(0, req("OPTIONS", "*")),
        "absolute-form": o(0, get("http://127.0.0.1:8000/")),
        "defer": o(0, get("/defer") + get("/q?after=1")),
        "defer-late": o(32, get("/defer") + req("POST", "/q", body=b"abc") + get("/defer")),
        "defer-eof": o(16 | 32, get("/defer")),
        "post-body": o(0, req("POST", "/q?EIO=4&transport=polling&sid=x",
                              ["Content-Type: text/plain;charset=UTF-8"],
                              b'40\x1e42["hello","world"]')),
        "post-chunked": o(0, req("POST", "/q", ["Transfer-Encoding: chunked"],
                                 b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nTrailer: x\r\n\r\n")),
        "post-big": o(0, req("POST", "/big/q", body=b"b" * 2000)),
        "body-too-large": o(8, req("POST", "/q", body=b"x" * 100)),
        "content-length-huge": o(0, req("POST", "/q", ["Content-Length: 99999999999"])),
        "header-too-large": o(8, get("/", "X-Long: " + "a" * 600)),
        "many-headers": o(8, get("/q", *[f"X-{i}: {i}" for i in range(120)])),
        "empty-header-value": o(0, get("/q", "Origin:", "X-Empty: ")),
        "folded-header": o(0, b"GET /q HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n b\r\n\r\n"),
        "garbage": o(0, b"GARBAGE\r\n\r\n"),
        "bad-version": o(0, b"GET / HTTP/9.9\r\n\r\n"),
        "lf-only": o(0, b"GET /q HTTP/1.1\nHost: a\n\n"),
        "eof-mid-request": o(16, b"GET /q HTTP/1.1\r\nHost: a\r\n"),
        "upgrade-ws": o(0, get("/ws", *WS_UPGRADE) + text("hello") + text("close")),
        "upgrade-ws-split": o(3, get("/ws", *WS_UPGRADE) + text("hi") + frame(9, b"p")),
        "upgrade-ws-bad-key": o(0, get("/ws", "Upgrade: websocket", "Connection: Upgrade",
                                       "Sec-WebSocket-Key: short==",
                                       "Sec-WebSocket-Version: 13")),
        "upgrade-ws-version8": o(0, get("/ws", "Upgrade: websocket", "Connection: Upgrade",
                                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                                        "Sec-WebSocket-Version: 8")),
        "upgrade-ws-post": o(0, req("POST", "/ws", WS_UPGRADE, b"")),
        "upgrade-other-path": o(0, get("/other", *WS_UPGRADE)),
        "upgrade-h2c": o(0, get("/q", "Upgrade: h2c", "Connection: Upgrade, HTTP2-Settings")),
        # Files sent in chunks (big.js, 300 KiB) and output over the 1 MiB bound (huge.bin):
        # pipelined requests behind them wait, also across a FIN and a deferred answer.
        "big-file": o(0, get("/big.js")),
        "big-head": o(0, req("HEAD", "/big.js")),
        "big-close": o(0, get("/big.js", "Connection: close") + get("/")),
        "huge-pipelined": o(0, get("/huge.bin") * 3 + get("/q?after=huge")),
        "huge-pipelined-eof": o(16, get("/huge.bin") * 2 + get("/keep")),
        "huge-then-defer": o(32, get("/huge.bin") + get("/defer") + get("/q?after=defer")),
        "huge-then-upgrade": o(0, get("/huge.bin") + get("/ws", *WS_UPGRADE) + text("hello")),
    }
    for name, data in seeds.items():
        write("fuzz_http", name, data)


# ---- WebSocket ----------------------------------------------------------------------------

def ws_seeds():
    euro = "€".encode()
    seeds = {
        # RFC 6455 §5.7: a single-frame masked text message "Hello".
        "rfc-hello": text("Hello"),
        "fragmented": text("Hel", fin=False) + frame(0, b"lo"),
        "fragmented-ping-between": text("Hel", fin=False) + frame(9, b"x") + frame(0, b"lo"),
        "ping": frame(9, b"Hello"),
        "pong-unsolicited": frame(10, b"Hello"),
        "binary-256": frame(2, bytes(range(256))),
        "binary-64k-header": frame(2, b"", length=65536),
        "binary-huge-header": frame(2, b"", length=1 << 40),
        "length-top-bit": frame(1, b"", length=(1 << 63) | 2),
        "continuation-length-top-bit": text("4", fin=False) + frame(0, b"", length=(1 << 64) - 1),
        "close-1000": close(1000, b"bye"),
        "close-empty": close(),
        "close-1-byte": frame(8, b"\x03"),
        "close-1005": close(1005),
        "close-999": close(999),
        "close-4999": close(4999, b"app"),
        "close-bad-utf8-reason": close(1000, b"\xc0\x80"),
        "close-then-text": close(1000) + text("after"),
        "unmasked": text("Hello", mask=False),
        "invalid-utf8": text(b"\xc0\x80"),
        "surrogate": text(b"\xed\xa0\x80"),
        "max-code-point": text("\U0010ffff"),
        "beyond-max": text(b"\xf4\x90\x80\x80"),
        "utf8-split-across-fragments": text(euro[:1], fin=False) + frame(0, euro[1:]),
        "utf8-truncated-in-last-fragment": text(euro[:1], fin=False) + frame(0, euro[1:2]),
        "reserved-opcode": frame(3, b"x"),
        "reserved-control-opcode": frame(11, b"x"),
        "rsv1": text("x", rsv=4),
        "control-fragmented": frame(9, b"x", fin=False),
        "control-too-long": frame(9, b"p" * 126),
        "non-minimal-length": bytes([0x81, 0x80 | 126, 0, 5]) + MASK + bytes(5),
        "continuation-first": frame(0, b"x"),
        "text-inside-fragments": text("a", fin=False) + text("b"),
        "close-cmd": text("close"),
        "abort-cmd": text("abort"),
        "eio-connect": text("40") + text('42["hello","world"]') + frame(10, b""),
        "eio-binary": text('451-["baz",{"_placeholder":true,"num":0}]') + frame(2, b"\x01\x02\x03\x04"),
        "empty-text": text(""),
        "many-small": b"".join(text(str(i)) for i in range(40)),
    }
    for name, data in seeds.items():
        # Option bytes: whole reads; 1-byte reads; max_message 125 + pipelined; FIN at the end.
        for opt in (0, 1, 8 | 32, 16 | 64):
            write("fuzz_websocket", f"{name}-o{opt}", bytes([opt]) + data)


# ---- Engine.IO / Socket.IO packets --------------------------------------------------------

def packet_seeds():
    with open(os.path.join(ROOT, "tests", "fixtures", "socketio-packets.json")) as f:
        fx = json.load(f)
    n = 0
    for v in fx["encode"]:
        write("fuzz_packets", f"wire-{n}", v["wire"][1:].encode())
        n += 1
    for v in fx["decode_valid"] + fx["decode_invalid"]:
        write("fuzz_packets", f"packet-{n}", v["packet"].encode())
        n += 1
    payloads = [
        b"40",
        b'40{"sid":"yg1p4Q_KEbOquBChAAAA"}\x1e42["welcome","hi"]',
        b'421["echo","x"]\x1e42["echo","y"]',
        b'451-["baz",{"_placeholder":true,"num":0}]\x1ebAQIDBA==',
        b"2probe\x1e5\x1e6\x1e3\x1e1",
        b"b\x1eb=\x1e\x1e4",
        b"bAQIDBA",
        b"AQIDBA==",
        b"QR==",
        b"////",
        b'42/admin,13["foo",1e400]',
        b'42["big",10000000000000000000]',
        b'42["nul","a\\u0000b"]',
        b'43999999999999999["x"]',
        b"%41%2x+%",
        "h\u00e9 \u20ac \U0001f600".encode(),
        b"\xed\xa0\x80\xf4\x90\x80\x80\xc0\x80",
        # Ack ids: 2^53-1 is the largest legal one; 2^53 is refused.
        b'439007199254740991["x"]',
        b'42/admin,9007199254740992["x"]',
        b"430000000000000001[]",
    ]
    for i, p in enumerate(payloads):
        write("fuzz_packets", f"payload-{i}", p)


# ---- the whole server ---------------------------------------------------------------------

SID = "B" * 20  # the first Engine.IO sid of an input (fuzz_server.c's getrandom)
CHANNEL = "03" * 16  # the channel of the first view attached on the first session
REQUEST = "04" * 16  # the first request the server sends on it


def seg(ctl, data=b""):
    """A fuzz_server segment: connection ctl & 3, FIN if ctl & 4, read size ctl >> 3 & 7,
    graceful stop first if ctl & 64."""
    return b"\xfe\xfd" + bytes([ctl]) + data


def msg(obj):
    return "42" + json.dumps(["message", obj], separators=(",", ":"))


def chan(event, payload=None, **kw):
    d = {"type": "channel_message", "channel": CHANNEL, "event": event, "payload": payload}
    d.update(kw)
    return msg(d)


def server_seeds():
    eio = "/socket.io/?EIO=4&transport="
    ws = req("GET", eio + "websocket", WS_UPGRADE)
    attach = msg({"type": "attach", "path": "/echo", "attachId": "a1", "props": {"x": 1}})
    frames = lambda *texts: b"".join(text(t) for t in texts)  # noqa: E731
    poll = lambda method, body=b"", *h: req(method, eio + "polling&sid=" + SID, h, body)  # noqa
    seeds = {
        "ws-events": ws + frames("40", '42["hello","world"]', '421["ack",{"a":1}]',
                                 '42["ask","q",0,[1]]', "430[\"answer\"]", "3",
                                 '42["keep"]', '425["keep"]', '42["next"]', '42["bye"]'),
        "ws-admin": ws + frames("40/admin,", '42/admin,["x"]', '42/admin,7["y"]', "41/admin,",
                                "40/nope,", '40{"deny":"no"}'),
        "ws-binary": ws + text("40") + text('451-["bin",{"_placeholder":true,"num":0}]')
        + frame(2, b"\x01\x02\x03\x04") + text('452-1["two",{"_placeholder":true,"num":0},'
                                               '{"_placeholder":true,"num":1}]')
        + frame(2, b"\x01") + frame(2, b"")
        + text('451-["bad",{"_placeholder":true,"num":3}]') + frame(2, b"x"),
        "ws-channels": ws + frames(
            "40", attach, chan("echo", {"a": [1, 2]}), chan("echo", 1, requestId="r1"),
            chan("fail", "why", requestId="r2"), chan("keep", None, requestId="r3"),
            chan("flush", "done"), chan("forbidden", None, requestId="r4"),
            chan("ask", {"event": "q", "payload": 5, "timeout": True}),
            msg({"type": "channel_message", "channel": CHANNEL, "responseTo": REQUEST,
                 "payload": "yes"}),
            chan("ask", {"event": "q2"}),
            msg({"type": "channel_message", "channel": CHANNEL, "responseTo": "05" * 16,
                 "error": "nope"}),
            chan("echo", {"$binary": "AQID"}), chan("echo", [{"$binary": ""}], requestId="b1"),
            chan("open"), chan("off"), chan("echo", 2), chan("close"), chan("echo", 3),
            chan("__close__"), chan("echo", 4, requestId="after-close"),
            msg({"type": "detach", "attachId": "a1"})),
        "ws-views": ws + frames(
            "40", attach, attach,
            msg({"type": "attach", "path": "/echo", "attachId": "a2", "props": {"reject": True}}),
            msg({"type": "attach", "path": "/nope", "attachId": "a3"}),
            msg({"type": "attach", "path": "/echo", "attachId": "a4"}),
            chan("keep", None, requestId="k1"), chan("ask", {"event": "q"}),
            chan("closeview"), chan("echo", 1),
            msg({"type": "nonsense"}), "42[\"message\",5]", chan("disconnect")),
        "ws-stop-in-flight": ws + frames("40", attach, chan("ask", {"event": "q"}),
                                         chan("keep", None, requestId="k")) + seg(64, text("2")),
        "ws-bad-packets": ws + frames("40", "4", "9", "2", "4{", "42[\"connect\"]", "40",
                                      "6", "1"),
        "polling-session": req("GET", eio + "polling")
        + seg(1, poll("POST", b'40\x1e42["hello","world"]\x1e' + attach.encode()))
        + seg(0, poll("GET"))
        + seg(1, poll("POST", b"3\x1e" + chan("echo", 1, requestId="r").encode()))
        + seg(0, poll("GET")) + seg(0, poll("GET")) + seg(1, poll("POST", b"1")),
        "polling-upgrade": req("GET", eio + "polling")
        + seg(1, poll("POST", b"40"))
        + seg(0, poll("GET"))
        + seg(2, req("GET", eio + "websocket&sid=" + SID, WS_UPGRADE) + text("2probe"))
        + seg(0, poll("GET"))
        + seg(2, text("5") + text('42["after","upgrade"]') + text("3")),
        "polling-errors": req("GET", eio + "polling")
        + seg(1, poll("POST", b"", "Content-Type: application/octet-stream"))
        + seg(1, poll("PUT"))
        + seg(1, req("GET", eio + "polling&sid=nosuchsid"))
        + seg(1, req("GET", "/socket.io/?EIO=3&transport=polling"))
        + seg(1, req("GET", eio + "carrier-pigeon"))
        + seg(1, req("GET", eio + "polling", ["Origin: http://evil.example"]))
        + seg(1, req("OPTIONS", eio + "polling", ["Origin: http://ok.example"]))
        + seg(1, req("POST", eio + "polling", body=b"40"))
        + seg(2, poll("POST", b"b" + b"A" * 7))
        + seg(0, poll("GET")) + seg(3, poll("GET")),
        "polling-binary": req("GET", eio + "polling")
        + seg(1, poll("POST", b'40\x1e451-["b",{"_placeholder":true,"num":0}]\x1ebAQIDBA=='))
        + seg(0, poll("GET")),
        # Regression: a namespace of invalid UTF-8 was echoed raw in CONNECT_ERROR.
        "polling-nsp-invalid-utf8": req("GET", eio + "polling")
        + seg(1, poll("POST", b"40/\xff\xfe,")) + seg(0, poll("GET")),
        "polling-stop": req("GET", eio + "polling") + seg(0, poll("GET")) + seg(65, poll("POST", b"40")),
        # Handshakes beyond max_unconnected_per_address (2 in fuzz_server): the first session
        # (SID) is ended and answers 400; one that polled is kept longer.
        "polling-unconnected": req("GET", eio + "polling") + seg(1, poll("GET"))
        + seg(0, req("GET", eio + "polling") * 4)
        + seg(2, poll("POST", b"40")) + seg(2, poll("GET")),
        "http-misc": req("GET", "/healthz") + req("GET", "/nothing") + b"BAD\r\n\r\n",
        "many-connections": b"".join(seg(c | 8, ws + text("40")) for c in (0, 1, 2, 3))
        + b"".join(seg(c | 4, text("41")) for c in (3, 2, 1, 0)) + seg(0, ws),
    }
    for name, data in seeds.items():
        write("fuzz_server", name, data)


# ---- envelopes ----------------------------------------------------------------------------

def envelope_seeds():
    c = "0123456789abcdef0123456789abcdef"
    envs = [
        {"type": "channel_message", "channel": c, "event": "ping", "payload": {"n": 1}},
        {"type": "channel_message", "channel": c, "event": "ask", "payload": [1, 2],
         "requestId": "r1"},
        {"type": "channel_message", "channel": c, "responseTo": "r1", "payload": "ok"},
        {"type": "channel_message", "channel": c, "responseTo": "r1", "error": "nope"},
        {"type": "channel_message", "channel": c, "event": None, "responseTo": "r1",
         "payload": None},
        {"type": "channel_message", "channel": c, "event": "__close__", "payload": None},
        {"type": "channel_message", "channel": "", "event": "x"},
        {"type": "channel_message", "channel": c, "event": "x", "responseTo": "y"},
        {"type": "channel_message", "channel": c},
        {"type": "channel_message", "channel": 5, "event": "x"},
        {"type": "channel_message", "channel": c, "event": "x", "error": 3},
        {"type": "channel_message", "channel": c, "event": "bin",
         "payload": {"$binary": "AQIDBA=="}},
        {"type": "channel_message", "channel": c, "event": "bin",
         "payload": [{"$binary": ""}, {"$binary": "QR=="}, {"$binary": "*"},
                     {"$binary": "AQ==", "x": 1}]},
        {"type": "attach", "path": "/chat", "attachId": "a1", "props": {"room": "x"}},
        {"type": "detach", "attachId": "a1"},
    ]
    for i, e in enumerate(envs):
        write("fuzz_envelope", f"envelope-{i}", json.dumps(e, separators=(",", ":")).encode())
    write("fuzz_envelope", "nul-channel", b'{"channel":"a\\u0000b","event":"x"}')
    write("fuzz_envelope", "long-channel", json.dumps({"channel": "c" * 300, "event": "x"}).encode())
    write("fuzz_envelope", "not-object", b'["channel_message"]')


def json_seeds():
    seeds = {
        "envelope": b'["message",{"type":"channel_message","channel":"Xk3b9QmZ2pL8vR1tY6wE4a",'
                    b'"event":"echo","payload":{"id":"12.345","data":"xx"},"requestId":"12.345"}]',
        "mixed": b'{"a":[1,-2.5e3,true,false,null,"\\u00e9\\ud83d\\ude00"],"a":{}}',
        "bigint": b"[9223372036854775808,1,-0,1e-400]",
        "nul": b'"a\\u0000b"',
        "nested": b"[[[[[[[[[[]]]]]]]]]]",
        "scalar": b" 42 ",
        "lone-high": b'"\\ud800"',
        "nul-key": b'{"k\\u0000":1}',
    }
    for name, data in seeds.items():
        write("fuzz_json", name, data)


# The targets whose seeds this script writes. The others keep hand-written seeds
# (fuzz_broker: binary broker records and Redis URLs, see fuzz_broker.c) that a rewrite must not
# delete.
GENERATED = ("fuzz_http", "fuzz_websocket", "fuzz_packets", "fuzz_envelope", "fuzz_json",
             "fuzz_server")

if __name__ == "__main__":
    for target in GENERATED:
        shutil.rmtree(os.path.join(HERE, "corpus", target), ignore_errors=True)
    http_seeds()
    ws_seeds()
    packet_seeds()
    envelope_seeds()
    json_seeds()
    server_seeds()
