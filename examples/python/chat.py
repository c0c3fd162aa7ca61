"""chat.py: the Channels page's "Full Example" chat, in Python on pulsec, multi-user.

It serves the chat page of examples/chat/web (`make web` bundles it into build/web/chat) and
speaks the protocol of examples/chat/chat.c, so the same page runs on either server:

    attach "/chat" {name}       -> props {channelId, me, members, messages}, pushed again to
                                   every member when the room changes (view_props)
    client:send {text}          -> server:message {user, text, at} to every member
    (a member joins / leaves)   -> server:join / server:leave {user} to the others
    client:clear                -> the server asks that member first: request server:confirm
                                   {question, timeoutMs} with a 5 s timeout; {"confirm": true}
                                   clears the history for everyone (server:notice to all),
                                   anything else or no answer keeps it (server:notice to them)

As close to the page as the API allows: the page's ChatRoom(ps.State) keeps its messages in a
class attribute and its handlers in a list that on_dispose cleans up; here the class
attributes are the one room every member shares, and the view function (the page's ChatApp
component with its `ps.init()` block) builds one ChatRoom per member.

    make run-python                       # http://127.0.0.1:8000, open it in two windows
    python3 examples/python/chat.py --port 0 --static build/web/chat
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pulsec as ps

MAX_MEMBERS = 1024
MAX_HISTORY = 200  # the whole list travels in every props push: keep the newest
CONFIRM_TIMEOUT = 5.0


class ChatRoom(ps.State):
    messages: list[dict] = []  # the room's history, shared by every member
    members: list[ChatRoom] = []

    def __init__(self, name: str):
        self.name = name
        self.view = ps.current_view()
        self.channel = ps.channel()
        self._handlers = [
            self.channel.on("client:send", self._on_send),
            self.channel.on("client:clear", self._on_clear),
        ]
        ChatRoom.members.append(self)
        # This member's page has no bridge before its attach_ack: the others hear the join.
        self._broadcast("server:join", {"user": name}, skip=self)

    def props(self) -> dict:
        return {
            "channelId": self.channel.id,
            "me": self.name,
            "members": [m.name for m in ChatRoom.members],
            "messages": ChatRoom.messages,
        }

    def _on_send(self, payload: dict):
        text = payload.get("text") if isinstance(payload, dict) else None
        if not isinstance(text, str) or not text.strip() or len(text) > 2000:
            return
        msg = {"user": self.name, "text": text, "at": int(time.time() * 1000)}
        self.messages.append(msg)
        del self.messages[:-MAX_HISTORY]
        # Broadcast to every member's client
        self._broadcast("server:message", msg)

    async def _on_clear(self, payload: dict):
        try:
            answer = await self.channel.request(
                "server:confirm",
                {"question": "Clear the history for everyone?", "timeoutMs": 5000},
                timeout=CONFIRM_TIMEOUT,
            )
        except ps.ChannelTimeout:
            self._notice("No answer within 5 s: history kept")
            return
        except ps.ChannelError:
            answer = None
        except ps.ChannelClosed:
            return  # the member left: nobody to tell
        if isinstance(answer, dict) and answer.get("confirm") is True:
            self.messages.clear()
            self._broadcast("server:notice", {"text": "History cleared"})
        else:
            self._notice("Cancelled")

    def _notice(self, text: str):
        try:
            self.channel.emit("server:notice", {"text": text})
        except ps.ChannelClosed:
            pass  # the member left while we waited

    def _broadcast(self, event: str | None, payload: dict, skip: ChatRoom | None = None):
        for member in ChatRoom.members:
            try:
                member.view.set_props(member.props())  # the server-rendered state
                if event and member is not skip:
                    member.channel.emit(event, payload)
            except ps.ChannelClosed:
                pass  # that member's connection is going away (its on_dispose follows)

    def on_dispose(self):
        for cleanup in self._handlers:
            cleanup()
        ChatRoom.members.remove(self)
        self._broadcast("server:leave", {"user": self.name})


def main():
    root = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
    parser.add_argument("--static", default=str(root / "build/web/chat"),
                        help="the bundled chat page (make web)")
    args = parser.parse_args()

    app = ps.App(static_dir=args.static)

    @app.view("/chat")
    def chat(props):
        name = props.get("name") if isinstance(props, dict) else None
        if not isinstance(name, str) or not 0 < len(name.encode()) < 64:
            raise ps.Denied("A name of 1 to 63 bytes is required")
        if len(ChatRoom.members) >= MAX_MEMBERS:
            raise ps.Denied("The room is full")
        room = ChatRoom(name)
        return room.props()  # the view's props, sent in attach_ack

    app.run(host=args.host, port=args.port)


if __name__ == "__main__":
    main()
