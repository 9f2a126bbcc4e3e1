"""The live feed behind the pages: the journal's series list and the agent's new alerts,
fanned out to every open event stream (server-sent events).

:meth:`Hub.watch` polls the journal's ``data_version`` every :data:`POLL_S` and sends the
series list again when it changed, so a row changes on the page within that much of a
commit. :meth:`Hub.alert` is the notifier's watcher: each alert is durable (in the outbox)
before it is shown here. Each stream has a small bounded buffer; a browser that does not
keep up is disconnected (its page reconnects and gets the whole list again), never waited for.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from agent.domain.verdicts import Alert
from agent.web.board import Board

log = logging.getLogger(__name__)

POLL_S = 0.2
MAX_STREAMS = 32  # open pages at once; a console is a handful of screens, not a website
STREAM_BUFFER = 16
KEEPALIVE_S = 15.0  # a comment line through proxies that drop idle connections
RECENT_ALERTS = 50

Event = tuple[str, str]  # (event name, JSON data)


class Hub:
    def __init__(self, board: Board) -> None:
        self.board = board
        self.series: list[dict[str, Any]] = []
        self._series_json = "[]"
        self.alerts: deque[dict[str, Any]] = deque(maxlen=RECENT_ALERTS)
        self._streams: set[MemoryObjectSendStream[Event]] = set()

    async def watch(self) -> None:
        """Run in the daemon's task group until cancelled."""
        failing = False
        try:
            while True:
                try:
                    await self.refresh()
                    failing = False
                except Exception:  # a busy or locked journal: try again at the next poll
                    if not failing:  # once per outage, not five times a second
                        log.exception("web console: reading the journal failed")
                    failing = True
                await anyio.sleep(POLL_S)
        finally:
            self.close()
            await anyio.to_thread.run_sync(self.board.close)

    async def refresh(self) -> None:
        if not await anyio.to_thread.run_sync(self.board.changed):
            return
        rows = await anyio.to_thread.run_sync(self.board.series)
        text = json.dumps(rows, separators=(",", ":"))
        if text != self._series_json:
            self.series, self._series_json = rows, text
            self._send(("series", text))

    def alert(self, alert: Alert) -> None:
        """The notifier's watcher (called on the event loop)."""
        doc = alert.to_dict()
        self.alerts.appendleft(doc)
        self._send(("alert", json.dumps(doc, separators=(",", ":"))))

    def _send(self, event: Event) -> None:
        for tx in list(self._streams):
            try:
                tx.send_nowait(event)
            except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                tx.close()  # too slow or gone: its page reconnects and starts afresh
                self._streams.discard(tx)

    def close(self) -> None:
        for tx in self._streams:
            tx.close()
        self._streams.clear()

    def open_stream(self) -> MemoryObjectReceiveStream[Event] | None:
        """A new page's stream, or None when :data:`MAX_STREAMS` are open."""
        if len(self._streams) >= MAX_STREAMS:
            return None
        tx, rx = anyio.create_memory_object_stream[Event](STREAM_BUFFER)
        self._streams.add(tx)
        return rx

    async def events(self, rx: MemoryObjectReceiveStream[Event]) -> AsyncIterator[str]:
        """The text/event-stream body: the whole list and the recent alerts first, then each
        change as it comes."""
        yield _sse("series", self._series_json)
        for doc in reversed(self.alerts):
            yield _sse("alert", json.dumps({**doc, "replay": True}, separators=(",", ":")))
        async with rx:
            while True:
                event: Event | None = None
                with anyio.move_on_after(KEEPALIVE_S):  # never yield inside a cancel scope
                    try:
                        event = await rx.receive()
                    except anyio.EndOfStream:
                        return
                yield _sse(*event) if event else ": keepalive\n\n"


def _sse(name: str, data: str) -> str:
    return f"event: {name}\ndata: {data}\n\n"  # JSON has no raw newlines
