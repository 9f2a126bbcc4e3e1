"""Group commit: instances received at the same time share one journal transaction.

Each commit costs an fsync of the WAL (``synchronous=FULL``), and with several associations
their handlers queue behind one another for it. Here a handler that finds no commit running
becomes the leader: it takes every instance waiting (its own included) and commits them in
one transaction; those that arrive meanwhile wait, and the next leader takes them all. Nobody
returns before the transaction holding its own instance is committed, so the C-STORE rule
(durable in the journal, then 0x0000) is kept. With one association a batch is one instance,
exactly as before. ``announce`` is called with each recorded instance by the leader, in
commit order, before any of the batch returns: a receive worker's announcements are in the
order of its rows (see agent/receive/workers.py).

``before_commit`` is called by the leader with the batch's instances before their
transaction: the receiver fsyncs their spool folders there, once per batch, so that the
rows are written only once their files' names are durable (agent/receive/flush.py). If it
raises, the whole batch fails with that error and nothing is written; it is not retried
one by one, as a failed journal write is: a flush that failed must not be asked again.

``lock_file``: receive workers (several processes on one journal) take an exclusive
``flock`` on it around each transaction. SQLite alone makes a writer that finds the journal
locked sleep and retry (1, 2, 5, 10... ms, tens of ms in all behind a busy neighbour); the
flock wakes it as soon as the other's commit is done.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agent.domain.instances import Instance, SeriesInfo

log = logging.getLogger(__name__)

MAX_BATCH = 64  # a bound on one transaction's size; the rest wait for the next


class _Journal(Protocol):
    def record_instances(
        self, items: Sequence[tuple[Instance, SeriesInfo]]
    ) -> list[Instance | None]: ...


@dataclass
class _Pending:
    inst: Instance
    info: SeriesInfo
    done: bool = False
    result: Instance | None = None
    error: BaseException | None = field(default=None, repr=False)


class GroupCommit:
    def __init__(
        self, journal: _Journal, announce: Callable[[Instance], None] | None = None,
        before_commit: Callable[[Sequence[Instance]], None] | None = None,
        lock_file: Path | None = None,
    ) -> None:  # fmt: skip
        self._journal = journal
        self._lock_file = lock_file
        self._lock_fd = -1
        self._announce = announce
        self._before_commit = before_commit
        self._cond = threading.Condition()
        self._waiting: list[_Pending] = []
        self._leading = False
        self.batches = 0  # transactions committed (for tests and profiles)
        self.largest = 0

    def record(self, inst: Instance, info: SeriesInfo) -> Instance | None:
        """As Journal.record_instance: returns once ``inst`` is committed (or raises)."""
        mine = _Pending(inst, info)
        with self._cond:
            self._waiting.append(mine)
            while self._leading and not mine.done:
                self._cond.wait()
            if not mine.done:  # lead: commit everything waiting, mine among it
                self._leading = True
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
        if not mine.done:
            try:
                self._commit(batch)
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()
        if mine.error is not None:
            raise mine.error
        return mine.result

    def _commit(self, batch: list[_Pending]) -> None:
        if self._before_commit is not None:
            try:
                self._before_commit([p.inst for p in batch])
            except BaseException as exc:
                for p in batch:
                    _settle(p, None, exc)
                return
        self._write(batch)

    def _write(self, batch: list[_Pending]) -> None:
        try:
            with self._across_processes():
                results = self._journal.record_instances([(p.inst, p.info) for p in batch])
        except BaseException as exc:
            if len(batch) == 1:
                _settle(batch[0], None, exc)
                return
            # one bad row must not fail the others: each on its own, then
            log.warning("group commit of %d instances failed (%s); one by one", len(batch), exc)
            for p in batch:
                self._write([p])
            return
        with self._cond:
            self.batches += 1
            self.largest = max(self.largest, len(batch))
        for result in results:
            if result is not None and self._announce is not None:
                self._announce(result)
        for p, result in zip(batch, results, strict=True):
            _settle(p, result, None)

    @contextlib.contextmanager
    def _across_processes(self) -> Iterator[None]:
        """The ``lock_file`` flock (only the leader writes, so one descriptor serves)."""
        if self._lock_file is None:
            yield
            return
        if self._lock_fd < 0:
            self._lock_fd = os.open(self._lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)


def _settle(p: _Pending, result: Instance | None, error: BaseException | None) -> None:
    p.result, p.error, p.done = result, error, True
