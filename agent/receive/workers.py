"""Receiving in several processes (``dicom.receive_processes`` > 1): the daemon's side.

pynetdicom holds the GIL for most of an image, so one process receives on about one core.
Here the daemon binds the listener and spawns N worker processes (:mod:`agent.receive.worker`)
that all accept on that one socket: the kernel gives each connection to one of them, a
connection waiting in the backlog survives a worker's death, and the port is open before
any worker is. A supervisor thread in the daemon:

- passes each worker's arrivals (instances, association ends, MPPS steps) to the pipeline,
  in the order the worker committed them;
- admits associations for all workers together: ``dicom.max_associations`` and
  ``max_associations_per_peer`` are totals (``max_pending_connections`` is divided: each
  worker holds its share of pending sockets);
- adds up the refusals for /metrics, and carries the full-disk pause both ways;
- restarts a worker that died. The journal is the truth: the rows a dead worker committed
  but had not announced (counted per worker generation) are read back and passed on, its
  open associations end as aborted, and its partial files in ``incoming/`` are removed.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from pynetdicom.association import Association

from agent.config import DicomConfig
from agent.domain.instances import AssociationEnded, Instance
from agent.journal.database import Journal
from agent.receive import incoming
from agent.receive.receiver import Receiver, Sink
from agent.receive.server import GuardedAE
from agent.receive.spool import Spool
from agent.receive.worker import REPORT_S, SERIAL_BITS, WorkerSpec, main

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0
RESTART_BACKOFF_S = 1.0  # a worker that dies at once is not restarted in a tight loop
_COLUMNS = [f.name for f in fields(Instance)]


@dataclass
class _Worker:
    generation: int
    proc: BaseProcess
    conn: Connection
    started: float
    ready: bool = False
    announced: int = 0  # instances announced: the first this many rows of its generation
    serials: set[int] = field(default_factory=set)  # associations that delivered, not ended
    admitted: dict[int, tuple[str, float]] = field(default_factory=dict)  # key -> host, when
    sending: threading.Lock = field(default_factory=threading.Lock)  # one writer at a time

    def send(self, *message: Any) -> None:
        with self.sending, contextlib.suppress(OSError):
            self.conn.send(message)


class _PoolAE(GuardedAE):
    """Stands for the workers' AEs: what reload and /metrics read or set reaches them."""

    pool: ReceiverPool

    @property
    def active_associations(self) -> list[Association]:
        return [None] * self.pool.admitted_count()  # type: ignore[list-item]  # counted only

    @property
    def require_calling_aet(self) -> list[str]:
        return list(getattr(self, "_calling", []))

    @require_calling_aet.setter
    def require_calling_aet(self, aets: list[str]) -> None:
        self._calling = list(aets)
        if hasattr(self, "pool"):
            self.pool.broadcast("calling_aets", list(aets))


class ReceiverPool(Receiver):
    def __init__(
        self, cfg: DicomConfig, journal: Journal, spool: Spool, sink: Sink,
        mpps_peers: Sequence[str] = (),
    ) -> None:  # fmt: skip
        self._workers: list[_Worker] = []
        super().__init__(cfg, journal, spool, sink, mpps_peers)
        self._peers = tuple(mpps_peers)
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._paused = False
        self._next_generation = _first_generation(journal)
        self._ctx = multiprocessing.get_context("spawn")
        self._drain_s = 10.0

    def _make_ae(self) -> GuardedAE:
        ae = _PoolAE(ae_title=self.cfg.ae_title)
        ae.pool = self
        ae.require_calling_aet = list(self.cfg.allowed_calling_aets)
        return ae

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1]) if self._listener else self.cfg.port

    def admitted_count(self) -> int:
        with self._lock:
            return sum(len(w.admitted) for w in self._workers)

    def start(self) -> None:
        self._listener = _bound(self.cfg.bind, self.cfg.port)
        for _ in range(self.cfg.receive_processes):
            self._spawn()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(w.ready for w in self._workers):
            if time.monotonic() > deadline or any(not w.proc.is_alive() for w in self._workers):
                self._kill_all()
                raise RuntimeError("receive workers did not start; see the log above")
            self._serve_once(0.1)
        self._listener.listen(128)  # open once every worker accepts: then the port is ready
        self._supervisor = threading.Thread(target=self._supervise, name="receive-workers")
        self._supervisor.start()
        log.info(
            "DICOM SCP %s listening on %s:%d%s (%d receive processes)",
            self.cfg.ae_title, self.cfg.bind, self.port, " (TLS)" if self.cfg.tls else "",
            len(self._workers),
        )  # fmt: skip

    def stop(self, drain_s: float = 10.0) -> None:
        """Workers stop accepting and drain; everything they announced is passed on."""
        if self._supervisor is None:
            return
        self._drain_s = drain_s
        self._stopping.set()
        self._supervisor.join()
        self._supervisor = None
        if self._listener is not None:
            self._listener.close()

    def broadcast(self, *message: Any) -> None:
        with self._lock:
            workers = list(self._workers)
        for w in workers:
            w.send(*message)

    # -- the supervisor thread --------------------------------------------------------------

    def _spawn(self) -> None:
        generation, self._next_generation = self._next_generation, self._next_generation + 1
        root = logging.getLogger()
        spec = WorkerSpec(
            dicom=self.cfg, storage=self.spool.root, min_free_bytes=self.spool.min_free_bytes,
            max_spool_bytes=self.spool.max_spool_bytes, mpps_peers=self._peers,
            processes=self.cfg.receive_processes, generation=generation,
            log_level=root.level, log_format=root.handlers[0].formatter if root.handlers else None,
        )  # fmt: skip
        ours, theirs = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=main, args=(spec, self._listener, theirs), name=f"receive-{generation}",
            daemon=True,
        )  # fmt: skip
        proc.start()
        theirs.close()
        worker = _Worker(generation, proc, ours, time.monotonic())
        with self._lock:
            self._workers.append(worker)
        if self.space.paused:
            worker.send("space", True, self.space.reason)

    def _supervise(self) -> None:
        stop_sent = False
        restart_at: float | None = None
        kill_at = float("inf")
        while self._workers:
            if self._stopping.is_set() and not stop_sent:
                self.broadcast("stop", self._drain_s)
                stop_sent, restart_at = True, None
                kill_at = time.monotonic() + self._drain_s + 10
            if stop_sent and time.monotonic() > kill_at:
                self._kill_all()
            self._serve_once(0.25)
            self._carry_pause()
            if (n := self.cfg.receive_processes - len(self._workers)) > 0 and not stop_sent:
                restart_at = restart_at or time.monotonic() + RESTART_BACKOFF_S
                if time.monotonic() >= restart_at:
                    for _ in range(n):
                        self._spawn()
                    restart_at = None

    def _serve_once(self, timeout: float) -> None:
        by_conn = {w.conn: w for w in self._workers}
        by_sentinel = {w.proc.sentinel: w for w in self._workers}
        for ready in wait([*by_conn, *by_sentinel], timeout):
            if ready in by_conn:
                self._read(by_conn[ready])
            elif ready in by_sentinel:
                self._buried(by_sentinel[ready])

    def _read(self, w: _Worker) -> None:
        try:
            while w.conn.poll():
                self._handle(w, w.conn.recv())
        except (EOFError, OSError):  # it died mid-message: the sentinel says so next
            pass

    def _handle(self, w: _Worker, message: tuple[Any, ...]) -> None:
        kind, *args = message
        if kind == "arrival":
            item = args[0]
            if isinstance(item, Instance):
                w.announced += 1
                if item.association:
                    w.serials.add(item.association)
            elif isinstance(item, AssociationEnded):
                w.serials.discard(item.association)
            self.sink(item)
        elif kind == "ask":
            ask_id, question, *rest = args
            if question == "admit":
                w.send("answer", ask_id, self._admit(w, *rest))
        elif kind == "left":
            with self._lock:
                w.admitted.pop(args[0], None)
        elif kind == "held":  # admitted earlier, no longer served, its close unseen
            live, before = set(args[0]), time.monotonic() - 2 * REPORT_S
            with self._lock:
                for key in [
                    k for k, (_, at) in w.admitted.items() if k not in live and at < before
                ]:
                    del w.admitted[key]
        elif kind == "refused":
            with self._lock:
                self.refusals[args[0]] += 1
        elif kind == "paused":
            self.space.pause(args[0])
        elif kind == "ready":
            w.ready = True

    def _admit(self, w: _Worker, key: int, host: str) -> bool | str:
        cap, per_peer = self.cfg.max_associations, self.cfg.max_associations_per_peer
        with self._lock:
            hosts = Counter(h for x in self._workers for h, _ in x.admitted.values())
            if sum(hosts.values()) >= cap:
                return f"{cap} open, dicom.max_associations is {cap}"
            if per_peer is not None and hosts[host] >= per_peer:
                return f"{hosts[host]} open, dicom.max_associations_per_peer is {per_peer}"
            w.admitted[key] = (host, time.monotonic())
        return True

    def _carry_pause(self) -> None:
        """The daemon's Space (its watcher resumes it) is the one the workers follow."""
        paused = self.space.paused
        if paused != self._paused:
            self._paused = paused
            self.broadcast("space", paused, self.space.reason)

    def _buried(self, w: _Worker) -> None:
        """A worker exited: pass on what it committed but did not announce, end its
        associations as aborted, remove its partial files."""
        self._read(w)
        w.proc.join()
        with self._lock:
            self._workers.remove(w)
        w.conn.close()
        missed = self._unannounced(w)
        for inst in missed:
            self.sink(inst)
        for serial in sorted(w.serials | {i.association for i in missed if i.association}):
            self.sink(AssociationEnded(serial, released=False))
        removed = incoming.remove_leftovers(self.spool.incoming, w.generation)
        if not self._stopping.is_set() or missed or w.proc.exitcode:
            log.warning(
                "receive worker %d (generation %d) exited with %s: %d committed instances "
                "recovered from the journal, %d associations ended, %d partial files removed",
                w.proc.pid, w.generation, w.proc.exitcode, len(missed), len(w.serials), removed,
            )  # fmt: skip

    def _unannounced(self, w: _Worker) -> list[Instance]:
        low = w.generation << SERIAL_BITS
        with self.journal.reading() as db:
            rows = db.execute(
                f"SELECT {','.join(_COLUMNS)} FROM instances WHERE association >= ? AND "
                "association < ? ORDER BY id LIMIT -1 OFFSET ?",
                (low, low + (1 << SERIAL_BITS), w.announced),
            ).fetchall()
        return [Instance(**dict(row)) for row in rows]

    def _kill_all(self) -> None:
        for w in list(self._workers):
            if w.proc.is_alive():
                log.warning("receive worker %d did not stop in time: killed", w.proc.pid)
                w.proc.kill()


def _bound(host: str, port: int) -> socket.socket:
    """The listening socket, bound but not yet listening: connections are refused, as with
    one process, until the workers accept."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)  # every worker polls it; one that loses the race does not wait
    return sock


def _first_generation(journal: Journal) -> int:
    """Above every generation in the journal, so serials never repeat across runs."""
    with journal.reading() as db:
        (top,) = db.execute("SELECT COALESCE(MAX(association), 0) FROM instances").fetchone()
    return (int(top) >> SERIAL_BITS) + 1
