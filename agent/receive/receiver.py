"""The C-STORE SCP: durable receive.

pynetdicom streams each data set to a file in ``incoming/`` (chunked: never a whole study
in memory). The handler fsyncs it while checking it, renames it into the spool and joins
the group commit, whose leader fsyncs the batch's folders, waits for the batch's files'
fsyncs, then commits the batch to the journal (agent/receive/flush.py says why that order
is safe); only then does it answer 0x0000.
Any failure before that is a failure status, and the file is removed (by pynetdicom from
``incoming/``, by the handler from the spool), so nothing unjournaled stays. A full
disk anywhere on that path (the incoming file, the spool, the journal) is 0xA700, never a
dropped association.
"""

from __future__ import annotations

import functools
import itertools
import logging
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pynetdicom import (
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    _config,
    dimse_messages,
    evt,
)
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    Verification,
)

from agent.config import DicomConfig, TLSConfig
from agent.domain.instances import AssociationEnded, Instance
from agent.domain.procedures import ProcedureStep
from agent.errors import OutOfResources, RejectedInstance
from agent.journal.database import Journal
from agent.journal.group_commit import GroupCommit
from agent.journal.space import JournalFull, space_for
from agent.receive import incoming
from agent.receive.flush import Flushes
from agent.receive.mpps import MppsScp
from agent.receive.received import describe, limits, read_checked, safe_text
from agent.receive.server import GuardedAE
from agent.receive.spool import Spool, hash_dataset
from agent.receive.tcp import no_delay

log = logging.getLogger(__name__)

Sink = Callable[[Instance | AssociationEnded | ProcedureStep], None]


@functools.cache
def retired_image_storage() -> tuple[str, ...]:
    """Retired image storage SOP classes that old modalities still send (the 1993 Ultrasound
    Image Storage, Nuclear Medicine...), registered with pynetdicom's storage service: it
    knows only current classes, and answers nothing at all to a C-STORE of another one."""
    from pydicom._uid_dict import UID_dictionary
    from pynetdicom.service_class import StorageServiceClass
    from pynetdicom.sop_class import register_uid

    known = {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts}
    found = []
    for uid, (name, kind, _kw, retired, *_rest) in UID_dictionary.items():
        if kind == "SOP Class" and name.endswith("Image Storage") and retired and uid not in known:
            keyword = "Retired" + "".join(w for w in name.replace("-", " ").split() if w.isalnum())
            register_uid(uid, keyword, StorageServiceClass)
            found.append(uid)
    return tuple(found)


def _stream_to(folder: Path, max_bytes: int, prefix: str = "") -> None:
    """Have pynetdicom stream data sets into ``folder`` (on the spool's file system).

    Same file system means the handler can rename instead of copy. pynetdicom reads
    these settings module-wide, which is why one process serves one spool.
    """
    _config.STORE_RECV_CHUNKED_DATASET = True
    dimse_messages.NamedTemporaryFile = incoming.factory(folder, max_bytes, prefix)  # type: ignore[attr-defined]


# success, and the warnings that still mean stored (coercion, elements discarded, no check)
_SUCCESS = frozenset({0x0000, 0xB000, 0xB006, 0xB007})


class Receiver:
    incoming_prefix = ""  # names this process's files in incoming/ (a worker's, see worker.py)
    commit_lock: str | None = None  # a flock file in storage for journal writes across workers

    def __init__(
        self, cfg: DicomConfig, journal: Journal, spool: Spool, sink: Sink,
        mpps_peers: Sequence[str] = (),
    ) -> None:  # fmt: skip
        self.cfg = cfg
        self.journal = journal
        self.spool = spool
        self.sink = sink
        self.space = space_for(spool.root)
        # concurrent associations share a transaction and its folder fsyncs; each instance
        # is announced to the pipeline in commit order, before its C-STORE is answered
        self.flushes = Flushes(spool.files)
        self.commits = GroupCommit(
            journal, announce=sink, before_commit=self.flushes.sync_folders,
            lock_file=spool.root / self.commit_lock if self.commit_lock else None,
        )  # fmt: skip
        self._serials: dict[int, int] = {}
        self._next_serial = itertools.count(1)
        self._lock = threading.Lock()
        self._server: Any = None
        self.refusals: Counter[int] = Counter()  # C-STORE failure status -> count, for /metrics
        self.mpps = MppsScp(journal, sink, mpps_peers, limits(cfg))  # N-CREATE, N-SET
        self.ae = self._make_ae()

    def _make_ae(self) -> GuardedAE:
        ae = GuardedAE(ae_title=self.cfg.ae_title)
        ae.maximum_associations = self.cfg.max_associations
        ae.maximum_pdu_size = self.cfg.max_pdu
        ae.network_timeout = self.cfg.network_timeout_s
        ae.acse_timeout = self.cfg.acse_timeout_s
        ae.max_pending = self.cfg.max_pending_connections
        ae.require_called_aet = self.cfg.require_called_aet
        ae.require_calling_aet = list(self.cfg.allowed_calling_aets)
        for uid in [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts] + list(
            retired_image_storage()
        ):
            ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES[:3])
        ae.add_supported_context(ModalityPerformedProcedureStep, ALL_TRANSFER_SYNTAXES[:3])
        return ae

    @property
    def port(self) -> int:
        return int(self._server.server_address[1]) if self._server else self.cfg.port

    def start(self) -> None:
        _stream_to(self.spool.incoming, int(self.cfg.max_dataset_bytes), self.incoming_prefix)
        self._server = self.ae.start_server(
            (self.cfg.bind, self.cfg.port),
            block=False,
            evt_handlers=self._event_handlers(),
            ssl_context=_server_tls(self.cfg.tls) if self.cfg.tls else None,
        )
        log.log(
            logging.DEBUG if self.ae.listener else logging.INFO,  # a worker: the daemon says it
            "DICOM SCP %s listening on %s:%d%s",
            self.cfg.ae_title, self.cfg.bind, self.port, " (TLS)" if self.cfg.tls else "",
        )  # fmt: skip

    def _event_handlers(self) -> list[Any]:
        return [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_STORE, self._on_store_counted),
            (evt.EVT_C_ECHO, lambda _event: 0x0000),
            (evt.EVT_N_CREATE, self.mpps.on_create),
            (evt.EVT_N_SET, self.mpps.on_set),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_RELEASED, functools.partial(self._on_ended, released=True)),
            (evt.EVT_ABORTED, functools.partial(self._on_ended, released=False)),
            (evt.EVT_REJECTED, self._on_rejected),
        ]

    def stop(self, drain_s: float = 10.0) -> None:
        """Stop accepting; let running associations finish for up to ``drain_s``, then abort."""
        if self._server is None:
            return
        server, self._server = self._server, None
        # Only established associations have work to finish; acceptor threads still
        # waiting for an A-ASSOCIATE are daemon threads and end with the process.
        active = [a for a in server.active_associations if a.is_established]
        server.shutdown()
        deadline = time.monotonic() + drain_s
        for assoc in active:
            assoc.join(timeout=max(0.0, deadline - time.monotonic()))
            if assoc.is_alive():
                log.warning("aborting association from %s at shutdown", assoc.requestor.ae_title)
                assoc.abort()

    # -- event handlers (pynetdicom threads) ---------------------------------------------------

    def _on_requested(self, event: Any) -> None:
        """``max_associations_per_peer``: one host cannot take every slot."""
        cap = self.cfg.max_associations_per_peer
        assoc = event.assoc
        if cap is None:
            return
        host = assoc.requestor.address
        others = [
            a for a in self.ae.active_associations
            if a.is_acceptor and a is not assoc and a.requestor.address == host
        ]  # fmt: skip
        if len(others) >= cap:
            log.warning(
                "association from %s:%s (calling AE %s) rejected: %d open, "
                "dicom.max_associations_per_peer is %d",
                host, assoc.requestor.port, safe_text(str(assoc.requestor.ae_title)),
                len(others), cap,
            )  # fmt: skip
            assoc.acse.send_reject(0x02, 0x03, 0x02)  # rejected-transient, local limit exceeded
            assoc.kill()  # as pynetdicom's own rejections do: waits until the RJ has gone

    def _on_accepted(self, event: Any) -> None:
        no_delay(event.assoc)
        with self._lock:
            self._serials[id(event.assoc)] = next(self._next_serial)

    def _serial(self, event: Any) -> int:
        with self._lock:
            return self._serials.get(id(event.assoc), 0)

    def _on_ended(self, event: Any, *, released: bool) -> None:
        with self._lock:
            serial = self._serials.pop(id(event.assoc), 0)
        if serial:
            self.sink(AssociationEnded(serial, released))

    def _on_rejected(self, event: Any) -> None:
        req = event.assoc.requestor
        log.warning(
            "association rejected: calling AE %r called AE %r from %s:%s",
            req.ae_title, event.assoc.acceptor.ae_title, req.address, req.port,
        )  # fmt: skip

    def _on_store(self, event: Any) -> int:
        req = event.assoc.requestor
        peer = f"{req.ae_title!r} at {req.address}:{req.port}"
        try:
            return self._store(event, calling_aet=str(req.ae_title))
        except RejectedInstance as exc:
            log.warning("C-STORE from %s refused with 0x%04X: %s", peer, exc.status, exc.reason)
            return exc.status
        except OSError as exc:
            status = 0xA700 if exc.errno in incoming.FULL else 0xC001
            if status == 0xA700:
                self.space.pause(f"receive: {exc}")
            log.error("C-STORE from %s failed with 0x%04X: %s", peer, status, exc)
            return status
        except JournalFull as exc:  # the Space is paused: the next ones are refused early
            log.error("C-STORE from %s failed with 0xA700: %s", peer, exc)
            return 0xA700
        except Exception:
            log.exception("C-STORE from %s failed unexpectedly; answering 0xC001", peer)
            return 0xC001

    def refusal_counts(self) -> dict[int, int]:
        with self._lock:
            return dict(self.refusals)

    def _on_store_counted(self, event: Any) -> int:
        status = self._on_store(event)
        if status not in _SUCCESS:
            with self._lock:
                self.refusals[status] += 1
        return status

    def _store(self, event: Any, calling_aet: str) -> int:
        request = event.request
        sop_class = str(request.AffectedSOPClassUID)
        sop_uid = str(request.AffectedSOPInstanceUID)
        temp = Path(event.dataset_path)
        cut_short = incoming.failure(temp)
        if cut_short is not None:
            raise cut_short  # the disk filled (or the limit was hit) while it streamed in
        if self.space.paused:
            raise OutOfResources(f"storage is full, intake paused: {self.space.reason}")
        self.spool.check_room(self.journal.spooled_bytes)
        synced = self.flushes.data_soon(temp)  # the disk works while the data set is checked
        ds = read_checked(
            temp, sop_class, sop_uid, limits(self.cfg), str(event.context.transfer_syntax)
        )
        sha256, size = incoming.digest(temp) or hash_dataset(temp)  # hashed as it arrived
        if self.journal.find_duplicate(sop_uid, sha256):
            log.info(
                "duplicate of %s with identical bytes from %s: kept one copy",
                safe_text(sop_uid), safe_text(calling_aet),
            )  # fmt: skip
            return 0x0000
        final = self.spool.final_path(
            str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), sop_uid, sha256
        )
        inst, info = describe(
            ds, path=str(final), size=size, sha256=sha256, version=1,
            calling_aet=calling_aet, association=self._serial(event), received_at=time.time(),
        )  # fmt: skip
        self.flushes.place(temp, final, synced)  # its folder is fsynced with the batch's
        try:
            recorded = self.commits.record(inst, info)  # with others' in one transaction
        except BaseException:
            # not journaled, so never acknowledged: a refused data set stays out of the spool
            final.unlink(missing_ok=True)  # this copy's own file (Spool.final_path)
            raise
        if recorded is None:  # an identical copy raced past find_duplicate and was first
            final.unlink(missing_ok=True)
            return 0x0000
        if recorded.version > 1:  # (already announced, see commits)
            log.warning(
                "%s arrived again with different bytes: kept as version %d",
                safe_text(sop_uid), recorded.version,
            )  # fmt: skip
        return 0x0000


def _server_tls(tls: TLSConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tls.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_NONE
    return ctx
