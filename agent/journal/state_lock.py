"""One agent per state directory: an exclusive ``flock`` on ``<storage.path>/agent.lock``.

The lock is taken before anything touches the spool, since start-up recovery deletes what it
finds in ``incoming/``: a second agent on the same folder would delete the first one's
in-flight data sets and release its held series. The kernel drops the lock when the process
dies, kill -9 included, so a stale file never blocks a restart. The file holds the holder's
pid, for the refusal message and for ``scanner-agent health``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from agent.errors import StartupError, StateDirInUse

LOCK_NAME = "agent.lock"


class StateLock:
    """Held from :meth:`acquire` until :meth:`release` or the end of the process."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self.path = path

    @classmethod
    def acquire(cls, storage: Path) -> StateLock:
        try:
            storage.mkdir(parents=True, exist_ok=True, mode=0o750)
            fd = os.open(storage / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise StartupError([f"storage.path {storage}: cannot use it: {exc.strerror}"]) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateDirInUse(str(storage), holder_pid(storage)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(fd, storage / LOCK_NAME)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1


def holder_pid(storage: Path) -> int | None:
    """The pid written by the agent that holds (or last held) the lock, if readable."""
    try:
        text = (storage / LOCK_NAME).read_text("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def is_held(storage: Path) -> bool:
    """Whether a live process holds the lock now (probing takes and drops it at once)."""
    try:
        fd = os.open(storage / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return False
