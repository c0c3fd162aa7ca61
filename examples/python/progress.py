"""progress.py: the Channels page's "progress tracking" use case, in Python on pulsec.

A page (examples/python/web, bundled by `make web` into build/web/progress) starts a
long-running job on the server. The job is an asyncio task that reports its progress over the
channel; the page can cancel it with a request; and before its one destructive step (replacing
the previous results) the server asks the page to confirm, with a timeout.

    client:start {steps, delayMs}  request -> {started: true, steps} or {started: false, reason}
    server:progress {done, total}  event, after every step
    server:confirm {question, timeoutMs}   request to the page before the destructive step;
                                   {"confirm": true} replaces, anything else keeps, and no
                                   answer in time keeps (the page is told why)
    server:done {status, text, runs}       event: "replaced" | "kept" | "cancelled"
    client:cancel                  request -> {cancelled: true, done} or {cancelled: false, reason}

    python3 examples/python/progress.py --port 8000     # then open http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

import pulsec as ps

CONFIRM_TIMEOUT = 10.0


class Job(ps.State):
    """One page's job: at most one run at a time."""

    def __init__(self):
        self.channel = ps.channel()
        self.task: asyncio.Task | None = None
        self.done = 0
        self.runs = 0  # results replaced so far
        self._cleanups = [
            self.channel.on("client:start", self._on_start),
            self.channel.on("client:cancel", self._on_cancel),
        ]

    def _on_start(self, payload: dict):
        if self.task and not self.task.done():
            return {"started": False, "reason": "A job is already running"}
        payload = payload if isinstance(payload, dict) else {}
        steps = min(max(int(payload.get("steps", 20)), 1), 1000)
        delay = min(max(int(payload.get("delayMs", 200)), 0), 10_000) / 1000
        self.done = 0
        self.task = asyncio.ensure_future(self._run(steps, delay))
        return {"started": True, "steps": steps}

    async def _run(self, steps: int, delay: float):
        try:
            for i in range(1, steps + 1):
                await asyncio.sleep(delay)  # the work of one step
                self.done = i
                self.channel.emit("server:progress", {"done": i, "total": steps})
            # The destructive step: ask first.
            try:
                answer = await self.channel.request(
                    "server:confirm",
                    {"question": "Replace the previous results with these?",
                     "timeoutMs": int(CONFIRM_TIMEOUT * 1000)},
                    timeout=CONFIRM_TIMEOUT,
                )
            except ps.ChannelTimeout:
                self._finish("kept", f"No answer within {CONFIRM_TIMEOUT:g} s: previous results kept")
                return
            except ps.ChannelError as err:
                self._finish("kept", f"The page said: {err}")
                return
            if isinstance(answer, dict) and answer.get("confirm") is True:
                self.runs += 1
                self._finish("replaced", "Results replaced")
            else:
                self._finish("kept", "Previous results kept")
        except asyncio.CancelledError:
            self._finish("cancelled", f"Cancelled after {self.done} of {steps} steps")
        except ps.ChannelClosed:
            pass  # the page went away: nobody to report to

    def _finish(self, status: str, text: str):
        if not self.channel.closed:
            self.channel.emit("server:done", {"status": status, "text": text, "runs": self.runs})

    async def _on_cancel(self, payload):
        if not self.task or self.task.done():
            return {"cancelled": False, "reason": "Nothing is running"}
        self.task.cancel()  # also abandons a pending server:confirm request
        await asyncio.wait([self.task])
        return {"cancelled": True, "done": self.done}

    def on_dispose(self):
        for cleanup in self._cleanups:
            cleanup()
        if self.task:
            self.task.cancel()


def main():
    root = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
    parser.add_argument("--static", default=str(root / "build/web/progress"),
                        help="the bundled page (make web)")
    args = parser.parse_args()

    app = ps.App(static_dir=args.static)

    @app.view("/progress")
    def progress(props):
        job = Job()
        return {"channelId": job.channel.id}

    app.run(host=args.host, port=args.port)


if __name__ == "__main__":
    main()
