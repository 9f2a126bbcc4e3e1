"""A full disk under the journal: pause intake, keep running, resume when space returns.

When a journal write fails for space (SQLite's "database or disk is full") or a received
data set cannot be written (ENOSPC), the storage directory's :class:`Space` is paused:
new C-STOREs are answered 0xA700 and MRD connections are refused, while the stages that
hit the full journal wait (:func:`retrying`, :func:`surviving`) and then do the same
work again, so nothing acknowledged is dropped. Nothing is deleted to make room: the only
file given up is the agent's own reserve (``<storage>/reserve``, made at start), so the
``storage.full`` system alert, and the work in flight, still find room in the journal.
:meth:`Space.watch` raises that alert once per episode, polls the free space, makes the
reserve again, proves with a journal write that writes succeed and resumes intake with a
``storage.resumed`` alert.

There is one Space per storage directory, found by path, so the connections of the
receiver, the pipeline, the outbox and the command handler share one pause.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol, TypeVar

import anyio

from agent.errors import JournalError

log = logging.getLogger(__name__)

T = TypeVar("T")
Alert = Callable[[str, str], Awaitable[None]]

RESERVE_BYTES = 2 << 20  # room for the alert and the writes in flight when the disk fills
POLL_S = 1.0
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)

_spaces: dict[Path, Space] = {}
_spaces_lock = threading.Lock()


class JournalFull(JournalError):
    """A journal write failed for space; ``space`` says when writes may be tried again."""

    def __init__(self, space: Space, reason: str) -> None:
        self.space = space
        super().__init__(reason)


def is_full(exc: BaseException) -> bool:
    """SQLITE_FULL (as the code or, from older SQLite builds, the message) or ENOSPC."""
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS


def space_for(root: Path) -> Space:
    """The Space of a storage directory (the journal's folder), made on first use."""
    key = Path(os.path.realpath(root))
    with _spaces_lock:
        if key not in _spaces:
            _spaces[key] = Space(key)
        return _spaces[key]


def full_error(conn: sqlite3.Connection, exc: sqlite3.OperationalError) -> JournalFull:
    """Pause the Space of ``conn``'s journal and say so as a JournalFull."""
    space = space_for(Path(db_file(conn)).parent)
    space.pause(f"journal write failed: {exc}")
    return JournalFull(space, f"the journal's disk is full: {exc}")


def db_file(conn: sqlite3.Connection) -> str:
    for _seq, name, file in conn.execute("PRAGMA database_list").fetchall():
        if name == "main" and file:
            return str(file)
    return os.getcwd() + "/journal"  # an in-memory journal: a Space of its own, never full


class Space:
    """The pause flag of one storage directory, its reserve file and its watcher."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.reserve = root / "reserve"
        self.reason = ""
        self._paused = threading.Event()
        self._lock = threading.Lock()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def pause(self, reason: str) -> None:
        """Safe from any thread; the first reason of an episode is kept for the alert."""
        with self._lock:
            if not self._paused.is_set():
                self.reason = reason
                self._paused.set()
                log.error("storage full, intake paused: %s", reason)

    def resume(self) -> None:
        """Clear the pause without the watcher: a receive worker follows the daemon's Space."""
        self._paused.clear()

    async def resumed(self) -> None:
        """Return once intake has resumed (at once when it is not paused)."""
        while self._paused.is_set():
            await anyio.sleep(POLL_S / 4)

    def make_reserve(self) -> bool:
        """Write the reserve file in full; False (and no partial file) when there is no room."""
        try:
            fd = os.open(self.reserve, os.O_WRONLY | os.O_CREAT, 0o640)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self.reserve.unlink(missing_ok=True)
            if exc.errno in _FULL_ERRNOS:
                return False
            # the reserve is an aid, not a condition: go on without it
            log.warning("cannot make the reserve %s: %s", self.reserve, exc)
        return True

    def free_bytes(self) -> int:
        stat = os.statvfs(self.root)
        return stat.f_bavail * stat.f_frsize

    async def watch(self, alert: Alert, probe: Callable[[], None], min_free: int = 0) -> None:
        """Run beside the pipeline: one ``storage.full`` alert per episode, then resume when
        the free space exceeds ``min_free`` plus twice the reserve and ``probe()`` (a
        journal write) succeeds, with a ``storage.resumed`` alert."""
        while True:
            while not self.paused:
                await anyio.sleep(POLL_S / 4)
            with contextlib.suppress(FileNotFoundError):
                self.reserve.unlink()  # the agent's own ballast, never anybody's data
            told = await _tell(alert, "storage.full", self._full_message())
            while not await anyio.to_thread.run_sync(self._try_resume, probe, min_free):
                await anyio.sleep(POLL_S)
            if not told:  # queued now that there is room, so the episode is on record
                await _tell(alert, "storage.full", self._full_message())
            await _tell(
                alert, "storage.resumed",
                f"storage under {self.root} has {self.free_bytes()} B free again: "
                "receiving resumed",
            )  # fmt: skip

    def _full_message(self) -> str:
        return (
            f"storage under {self.root} is full ({self.reason}): C-STOREs are answered "
            "0xA700 and MRD connections refused until space returns; nothing undelivered "
            "is deleted"
        )

    def _try_resume(self, probe: Callable[[], None], min_free: int) -> bool:
        if self.free_bytes() < min_free + 2 * RESERVE_BYTES or not self.make_reserve():
            return False
        try:
            probe()  # fails (and keeps the pause) while the journal still cannot grow
        except JournalFull:
            return False
        except Exception as exc:  # a locked or failing journal: try again at the next poll
            log.warning("journal write to test for space failed: %s", exc)
            return False
        self._paused.clear()
        log.warning("storage has room again (%d B free): intake resumed", self.free_bytes())
        return True


async def _tell(alert: Alert, code: str, message: str) -> bool:
    try:
        await alert(code, message)
    except JournalFull as exc:  # even the reserve is gone: the alert follows the resume
        log.error("system alert %s could not be queued yet: %s", code, exc)
        return False
    return True


async def retrying(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in a worker thread, again after each full-journal pause, until it
    succeeds: for a stage whose work must not be dropped."""
    while True:
        try:
            return await anyio.to_thread.run_sync(fn, *args)
        except JournalFull as exc:
            log.warning("%s waits for disk space: %s", getattr(fn, "__name__", fn), exc)
            await exc.space.resumed()


async def surviving(name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run a long-lived task; if it stops on a full journal, start it again after the
    pause instead of letting the error take the agent down."""
    while True:
        try:
            await run()
            return
        except Exception as exc:
            full = _full_in(exc)
            if full is None:
                raise
            log.warning("%s stopped on a full journal; it restarts when space returns", name)
            await full.space.resumed()


def _full_in(exc: BaseException) -> JournalFull | None:
    if isinstance(exc, JournalFull):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        match, rest = exc.split(JournalFull)
        if rest is None and match is not None:
            leaf: BaseException = match
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            return leaf if isinstance(leaf, JournalFull) else None
    return None


class _Journal(Protocol):
    @property
    def space(self) -> Space: ...

    def record_event(self, kind: str, series_uid: str | None, detail: str = "") -> None: ...


async def watch_space(journal: _Journal, alert: Alert, min_free: int) -> None:
    """Make the reserve, then watch the journal's Space (the daemon runs this)."""
    space = journal.space
    if not await anyio.to_thread.run_sync(space.make_reserve):
        space.pause(f"no room for the {RESERVE_BYTES} B reserve at start")

    def probe() -> None:
        journal.record_event("storage-resumed", None, f"{space.free_bytes()} B free")

    await space.watch(alert, probe, min_free)
