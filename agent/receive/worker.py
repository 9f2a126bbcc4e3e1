"""One receive worker process (``dicom.receive_processes`` > 1): a :class:`Receiver` of its own.

The daemon binds the listening socket and each worker accepts on that same socket, with its
own pynetdicom AE, its own journal connection (SQLite WAL serialises writers across
processes) and the same spool, so the durable rule is unchanged: fsync, rename, journal
commit, then 0x0000. What it stores it announces to the daemon over its pipe
(:mod:`agent.receive.workers`), in commit order, before answering; what the daemon must
decide for all workers together (the association limits, the full-disk pause) it asks the
daemon for. The worker dies with the daemon (``PR_SET_PDEATHSIG``, and the pipe's end).
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association

from agent.config import DicomConfig
from agent.journal.database import Journal
from agent.receive.incoming import worker_prefix
from agent.receive.receiver import Receiver
from agent.receive.spool import Spool

log = logging.getLogger(__name__)

SERIAL_BITS = 32  # association serial = generation << 32 | n: unique across workers and runs
REPORT_S = 2.0  # how often a worker tells which associations it still holds
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs; pickled to the spawned process."""

    dicom: DicomConfig
    storage: Path
    min_free_bytes: int
    max_spool_bytes: int | None
    mpps_peers: tuple[str, ...]
    processes: int
    generation: int
    log_level: int
    log_format: logging.Formatter | None


class Link:
    """The worker's end of its pipe: messages out (thread-safe), questions with answers."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._send_lock = threading.Lock()
        self._answers: dict[int, tuple[threading.Event, list[Any]]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def send(self, *message: Any) -> None:
        with self._send_lock:
            self.conn.send(message)

    def ask(self, *question: Any) -> Any:
        """Send ``question`` and wait for the daemon's answer (None if the pipe is gone)."""
        ask_id = next(self._ids)
        got: tuple[threading.Event, list[Any]] = (threading.Event(), [])
        with self._lock:
            self._answers[ask_id] = got
        try:
            self.send("ask", ask_id, *question)
            got[0].wait()
        except OSError:
            return None
        finally:
            with self._lock:
                self._answers.pop(ask_id, None)
        return got[1][0] if got[1] else None

    def answered(self, ask_id: int, answer: Any) -> None:
        with self._lock:
            got = self._answers.get(ask_id)
        if got is not None:
            got[1].append(answer)
            got[0].set()

    def fail_all(self) -> None:
        with self._lock:
            for got in self._answers.values():
                got[0].set()


class WorkerReceiver(Receiver):
    """A Receiver whose admission, refusal counts and pauses are shared with the daemon."""

    commit_lock = "receive-commit.lock"  # the workers' group commits take turns on it

    def __init__(self, spec: WorkerSpec, journal: Journal, spool: Spool, link: Link) -> None:
        self.link = link
        self.generation = spec.generation
        self.incoming_prefix = worker_prefix(spec.generation)
        super().__init__(spec.dicom, journal, spool, self._announce, spec.mpps_peers)
        self._next_serial = itertools.count((spec.generation << SERIAL_BITS) + 1)
        self.ae.max_pending = max(1, spec.dicom.max_pending_connections // spec.processes)

    def _announce(self, item: Any) -> None:
        self.link.send("arrival", item)

    def _on_requested(self, event: Any) -> None:
        """The daemon counts associations over all workers: dicom.max_associations and
        max_associations_per_peer hold in total, not per worker."""
        assoc = event.assoc
        admitted = self.link.ask("admit", id(assoc), str(assoc.requestor.address))
        if admitted is True:
            return
        log.warning(
            "association from %s:%s (calling AE %s) rejected: %s",
            assoc.requestor.address, assoc.requestor.port,
            repr(str(assoc.requestor.ae_title)[:80]), admitted or "the daemon did not answer",
        )  # fmt: skip
        assoc.acse.send_reject(0x02, 0x03, 0x02)  # rejected-transient, local limit exceeded
        assoc.kill()

    def _on_closed(self, event: Any) -> None:
        self.link.send("left", id(event.assoc))

    def _on_store_counted(self, event: Any) -> int:
        status = super()._on_store_counted(event)
        if status not in (0x0000, 0xB000, 0xB006, 0xB007):
            self.link.send("refused", status)
        return status

    def _event_handlers(self) -> list[Any]:
        return [*super()._event_handlers(), (evt.EVT_CONN_CLOSE, self._on_closed)]

    def serve(self, listener: socket.socket) -> None:
        self.ae.listener = listener
        self.start()


def held() -> list[int]:
    """Keys of the associations this process still serves (threads alive)."""
    return [id(t) for t in threading.enumerate() if isinstance(t, Association)]


def main(spec: WorkerSpec, listener: socket.socket, conn: Connection) -> None:
    """The spawned process's entry point."""
    _die_with_parent()
    _setup_logging(spec)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when workers stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    spool = Spool(spec.storage, min_free_bytes=spec.min_free_bytes,
                  max_spool_bytes=spec.max_spool_bytes)  # fmt: skip
    journal = Journal.open(spool.journal_path)
    link = Link(conn)
    receiver = WorkerReceiver(spec, journal, spool, link)
    receiver.serve(listener)
    link.send("ready", os.getpid())
    drain_s = _follow(link, receiver, spec)
    receiver.stop(drain_s)
    link.send("stopped", os.getpid())
    journal.close()


def _follow(link: Link, receiver: WorkerReceiver, spec: WorkerSpec) -> float:
    """Apply the daemon's messages until it says stop (or goes): returns the drain time."""
    space = receiver.space
    told = False
    reported = 0.0
    while True:
        try:
            ready = link.conn.poll(0.25)
            message = link.conn.recv() if ready else None
        except (EOFError, OSError):
            link.fail_all()
            os._exit(0)  # the daemon is gone: nothing here is unacknowledged and durable
        if space.paused and not told:  # a full disk seen here pauses every worker
            link.send("paused", space.reason)
        told = space.paused
        if time.monotonic() - reported > REPORT_S:  # a slow, sure check behind EVT_CONN_CLOSE
            reported = time.monotonic()
            link.send("held", held())
            if spec.max_spool_bytes is not None:
                receiver.journal.spooled_bytes = _spooled(receiver.journal)
        if message is None:
            continue
        kind, *args = message
        if kind == "answer":
            link.answered(*args)
        elif kind == "space":
            paused, reason = args
            space.pause(reason) if paused else space.resume()
            told = paused
        elif kind == "calling_aets":
            receiver.ae.require_calling_aet = list(args[0])
            log.info("receive worker %d: dicom.allowed_calling_aets now %s", spec.generation,
                     list(args[0]) or "any")  # fmt: skip
        elif kind == "stop":
            return float(args[0])


def _spooled(journal: Journal) -> int:
    """Bytes spooled by every worker (each counts only its own), for storage.max_spool_bytes."""
    with journal.reading() as db:
        row = db.execute(
            "SELECT COALESCE(SUM(size), 0) FROM instances WHERE state != 'purged'"
        ).fetchone()
    return int(row[0])


def _die_with_parent() -> None:
    """SIGKILL when the daemon dies, however it dies: no orphan keeps the port."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the pipe's end stops the worker instead
        pass
    if os.getppid() == 1:  # the daemon went before the prctl took
        os._exit(0)


def _setup_logging(spec: WorkerSpec) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        spec.log_format or logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=spec.log_level, handlers=[handler], force=True)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
