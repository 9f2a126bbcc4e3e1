"""The local feed: where alerts and verdicts go when no broker is configured.

``<storage>/feed.jsonl`` gets one JSON object per line, in the same shape as the broker's
topics so the console reads both alike::

    {"topic": "alerts" | "series/<uid>" | "status", "payload": {...} | null, "at": "...Z"}

A ``null`` payload clears a series (its images were purged). Past ``alerts.feed_max_bytes``
the file is renamed to ``feed.jsonl.1`` (replacing the previous one) and a new one begun.

Commands come back the other way as files the console drops into ``<storage>/commands/``
(written under a dot-name, then renamed, so the agent never reads half a command); the agent
handles them in name order and deletes each once handled.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from agent.alerts.mqtt import LinkState, stamp, status_payload
from agent.alerts.online import OnlineGate
from agent.alerts.outbox import Entry, Outbox
from agent.domain.verdicts import iso_utc

log = logging.getLogger(__name__)

FEED_NAME = "feed.jsonl"
COMMANDS_DIR = "commands"
POLL_S = 0.2  # how often the commands folder is looked at
BATCH = 256


def feed_line(topic: str, payload: Any) -> str:
    doc = {"topic": topic, "payload": payload, "at": iso_utc(time.time())}
    return json.dumps(doc, separators=(",", ":")) + "\n"


class FeedWriter:
    """Appends lines and rotates at a size cap. Blocking: use from a worker thread."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, lines: list[str]) -> None:
        data = "".join(lines).encode()
        if self._size() + len(data) > self.max_bytes and self._size() > 0:
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        with self.path.open("ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the outbox forgets these rows once this returns

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0


def drop_command(storage: Path, doc: dict[str, Any]) -> Path:
    """Used by the console: hand one command to the agent through the commands folder."""
    folder = storage / COMMANDS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
    tmp = folder / f".{name}"
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, folder / name)
    return folder / name


class FeedPublisher:
    """The broker-less link: drains the outbox into the feed and the log, and reads the
    commands folder. Same shape as :class:`agent.alerts.mqtt.MqttPublisher`."""

    def __init__(
        self,
        storage: Path,
        max_bytes: int,
        agent_id: str,
        outbox: Outbox,
        on_command: Callable[[bytes], Awaitable[None]],
    ) -> None:
        self.writer = FeedWriter(storage / FEED_NAME, max_bytes)
        self.commands_dir = storage / COMMANDS_DIR
        self.agent_id = agent_id
        self.state: LinkState = "online"
        self._outbox = outbox
        self._on_command = on_command
        self._wakeup = anyio.Event()
        self.online = OnlineGate()

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        await self.online.wait()  # not before the DICOM listener is open
        await self._status("online")
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._drain, name="feed-drain")
                tg.start_soon(self._read_commands, name="feed-commands")
        finally:
            with anyio.CancelScope(shield=True):
                await self._status("offline", reason="stopped")

    async def _status(self, state: str, **extra: Any) -> None:
        doc = json.loads(status_payload(state, self.agent_id, **extra))
        await anyio.to_thread.run_sync(self.writer.write, [feed_line("status", doc)])

    async def _drain(self) -> None:
        while True:
            self._wakeup = anyio.Event()
            entries = await anyio.to_thread.run_sync(self._outbox.pending, BATCH)
            if not entries:
                await self._wakeup.wait()
                continue
            lines, good = [], []
            for e in entries:
                try:
                    lines.append(_entry_line(e))
                    good.append(e.seq)
                except ValueError as exc:  # a row that is not JSON: set aside, not retried
                    log.error("feed: row %d (%s) quarantined: %s", e.seq, e.kind, exc)
                    await anyio.to_thread.run_sync(self._outbox.quarantine, e.seq, str(exc))
            await anyio.to_thread.run_sync(self.writer.write, lines)
            await anyio.to_thread.run_sync(self._outbox.ack, good)

    async def _read_commands(self) -> None:
        while True:
            for path in await anyio.to_thread.run_sync(self._ready_commands):
                payload = await anyio.to_thread.run_sync(_read, path)
                try:
                    if payload is not None:
                        await self._on_command(payload)
                except Exception:  # a bad command must never stop the reader
                    log.exception("command handler failed")
                await anyio.to_thread.run_sync(_remove, path)  # after handling: crash-safe
            await anyio.sleep(POLL_S)

    def _ready_commands(self) -> list[Path]:
        try:
            return sorted(p for p in self.commands_dir.iterdir() if not p.name.startswith("."))
        except FileNotFoundError:
            return []


def _entry_line(entry: Entry) -> str:
    raw = stamp(entry, time.time())
    return feed_line(entry.topic, json.loads(raw) if raw else None)


def _read(path: Path) -> bytes | None:
    try:
        with path.open("rb") as f:
            return f.read(65536)  # bigger is refused by the parser anyway
    except OSError as exc:
        log.warning("cannot read command file %s: %s", path, exc)
        return None


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError as exc:
        log.warning("cannot remove command file %s: %s", path, exc)
