"""The live feed behind the pages: the journal's series list and the agent's new alerts,
fanned out to every open event stream (server-sent events).

:meth:`Hub.watch` polls the journal's ``data_version`` every :data:`POLL_S` and, when it
moved, sends the rows that changed, so a row changes on the page within that much of a
commit (a new page gets the whole list first). :meth:`Hub.alert` is the notifier's
watcher: each alert is durable (in the outbox) before it is shown here. Each stream has a
small bounded buffer; a browser that does not keep up is disconnected (its page reconnects
and gets the whole list again), never waited for.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
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
        self._texts: dict[str, str] = {}  # series_uid -> its row's JSON, as last sent
        self._order: list[str] = []
        self.alerts: deque[dict[str, Any]] = deque(maxlen=RECENT_ALERTS)
        self._streams: dict[MemoryObjectSendStream[Event], str] = {}  # -> its session id
        self._refreshing = anyio.Lock()  # the poll and a command's refresh, one at a time

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
        async with self._refreshing:  # else an older snapshot could land after a newer one
            await self._refresh()

    async def _refresh(self) -> None:
        if not await anyio.to_thread.run_sync(self.board.changed):
            return
        try:
            rows = await anyio.to_thread.run_sync(self.board.series)
        except Exception:
            self.board.stale()  # read again at the next poll, commit or not
            raise
        texts = {r["series_uid"]: _json(r) for r in rows}
        order = [r["series_uid"] for r in rows]
        changed = [texts[uid] for uid in order if self._texts.get(uid) != texts[uid]]
        removed = [uid for uid in self._texts if uid not in texts]
        if not changed and not removed and order == self._order:
            return
        moved = order != self._order
        self.series, self._texts, self._order = rows, texts, order
        parts = [f'"changed":[{",".join(changed)}]', f'"removed":{_json(removed)}']
        if moved:  # a new series, or one that left: the page needs the order again
            parts.append(f'"order":{_json(order)}')
        self._send(("rows", "{" + ",".join(parts) + "}"))

    def series_json(self) -> str:
        return "[" + ",".join(self._texts[uid] for uid in self._order) + "]"

    def alert(self, alert: Alert) -> None:
        """The notifier's watcher (called on the event loop)."""
        doc = alert.to_dict()
        self.alerts.appendleft(doc)
        self._send(("alert", _json(doc)))

    def _send(self, event: Event) -> None:
        for tx in list(self._streams):
            try:
                tx.send_nowait(event)
            except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                tx.close()  # too slow or gone: its page reconnects and starts afresh
                self._streams.pop(tx, None)

    def close(self, session_id: str | None = None) -> None:
        """End every stream, or those of one session (it logged out)."""
        for tx, sid in list(self._streams.items()):
            if session_id is None or sid == session_id:
                tx.close()
                del self._streams[tx]

    def open_stream(self, session_id: str) -> MemoryObjectReceiveStream[Event] | None:
        """A new page's stream, or None when :data:`MAX_STREAMS` are open."""
        if len(self._streams) >= MAX_STREAMS:
            return None
        tx, rx = anyio.create_memory_object_stream[Event](STREAM_BUFFER)
        self._streams[tx] = session_id
        return rx

    async def events(
        self, rx: MemoryObjectReceiveStream[Event], signed_in: Callable[[], bool]
    ) -> AsyncIterator[str]:
        """The text/event-stream body: the whole list (``series``) and the recent alerts first,
        then each change as it comes: ``rows`` (the rows that changed, the uids that left and,
        when it changed, the new order) and ``alert``. It ends when ``signed_in()`` turns
        false (logged out elsewhere, the account removed, the session expired)."""
        yield _sse("series", self.series_json())
        for doc in reversed(self.alerts):
            yield _sse("alert", _json({**doc, "replay": True}))
        async with rx:
            while True:
                event: Event | None = None
                with anyio.move_on_after(KEEPALIVE_S):  # never yield inside a cancel scope
                    try:
                        event = await rx.receive()
                    except anyio.EndOfStream:
                        return
                if not signed_in():
                    return
                yield _sse(*event) if event else ": keepalive\n\n"


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _sse(name: str, data: str) -> str:
    return f"event: {name}\ndata: {data}\n\n"  # JSON has no raw newlines
