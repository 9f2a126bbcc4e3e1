"""The MPPS SCP: Modality Performed Procedure Step N-CREATE and N-SET on the agent's AE.

What the modality sends is hostile until checked: the attribute list's encoding is walked
(:mod:`agent.receive.structure`: lengths, nesting, deflate size) before pydicom reads it,
every UID must be one the journal can hold (1 to 64 printable characters), and the lists
are bounded (:data:`MAX_STUDIES`, :data:`MAX_SERIES`, :data:`MAX_INSTANCES`). A refused
message is answered with a failure status and an Error Comment and changes nothing.

An accepted message is committed to the journal (the step's merged state, the series and
instances it lists, and a copy queued for each ``mpps.forward_to`` peer) before it is
answered 0x0000, and then handed to the series assembler: COMPLETED completes the series
it lists as soon as their instances are in, DISCONTINUED raises an alert.

Statuses (PS3.4 F.7): 0x0106 invalid attribute value, 0x0107 attribute list error (cannot
be parsed, nested too deep), 0x0111 duplicate SOP instance, 0x0112 no such SOP instance,
0x0120 missing attribute, 0x0213 resource limitation (too large, too many references),
0xC310 the step is COMPLETED or DISCONTINUED and may no longer be updated, 0x0110
processing failure (the journal could not take it).
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid
from pynetdicom.dsutils import decode, encode

from agent.domain.procedures import PerformedSeries, ProcedureStep, StepStatus
from agent.errors import RejectedInstance
from agent.journal import mpps_log
from agent.journal.database import Journal
from agent.receive.received import safe_text
from agent.receive.structure import Limits, walk

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 << 20  # one attribute or modification list as received
MAX_STUDIES = 64  # Scheduled Step Attributes items
MAX_SERIES = 1_000  # Performed Series items
MAX_INSTANCES = 100_000  # referenced SOP instances, all series together

_UID = re.compile(r"^[\x21-\x5b\x5d-\x7e]{1,64}\Z")  # printable, no space or backslash
_REFERENCES = ("ReferencedImageSequence", "ReferencedNonImageCompositeSOPInstanceSequence")


class Refused(RejectedInstance):
    """An MPPS message refused with ``status``; ``reason`` becomes the Error Comment."""


def check_uid(what: str, value: Any) -> str:
    text = str(value or "").strip(" \x00")
    if not _UID.match(text):
        raise Refused(0x0106, f"{what} {safe_text(text, 70)} is not a UID")
    return text


class MppsScp:
    """Handlers for pynetdicom's EVT_N_CREATE and EVT_N_SET (run in association threads)."""

    def __init__(
        self, journal: Journal, sink: Callable[[ProcedureStep], None], peers: Sequence[str],
        limits: Limits,
    ) -> None:  # fmt: skip
        self.journal = journal
        self.sink = sink
        self.peers = list(peers)
        self.limits = limits

    def on_create(self, event: Any) -> tuple[Dataset, Dataset | None]:
        return self._answer(event, "N-CREATE", self._create)

    def on_set(self, event: Any) -> tuple[Dataset, Dataset | None]:
        return self._answer(event, "N-SET", self._set)

    def _answer(
        self, event: Any, op: str, handle: Callable[[Any], tuple[ProcedureStep, Dataset]]
    ) -> tuple[Dataset, Dataset | None]:
        peer = (
            f"{safe_text(str(event.assoc.requestor.ae_title))} at {event.assoc.requestor.address}"
        )
        try:
            step, reply = handle(event)
        except Refused as exc:
            log.warning("MPPS %s from %s refused with 0x%04X: %s", op, peer, exc.status, exc.reason)
            return _status(exc.status, exc.reason), None
        except Exception:
            log.exception("MPPS %s from %s failed; answering 0x0110", op, peer)
            return _status(0x0110, "processing failure"), None
        log.info("MPPS %s from %s: %s is %s (%d series, %d instances)", op, peer,
                 step.sop_instance_uid, step.status, len(step.series), step.instance_count)  # fmt: skip
        self.sink(step)
        return _status(0x0000), reply

    def _create(self, event: Any) -> tuple[ProcedureStep, Dataset]:
        req = event.request
        given = req.AffectedSOPInstanceUID
        uid = check_uid("Affected SOP Instance UID", given) if given else generate_uid()
        ds, raw = self._decoded(event, req.AttributeList)
        step = parse_step(ds, uid, str(event.assoc.requestor.ae_title))
        if step.status != StepStatus.IN_PROGRESS:
            raise Refused(0x0106, f"N-CREATE with status {step.status}, not IN PROGRESS")
        with self.journal.transaction() as db:
            if mpps_log.stored(db, uid) is not None:
                raise Refused(0x0111, f"MPPS {safe_text(uid)} exists already")
            mpps_log.save(db, step, raw, "create", raw, self.peers)
        reply = Dataset()
        if not given:  # pynetdicom moves it into the response's Affected SOP Instance UID
            reply.AffectedSOPInstanceUID = UID(uid)
        return step, reply

    def _set(self, event: Any) -> tuple[ProcedureStep, Dataset]:
        req = event.request
        uid = check_uid("Requested SOP Instance UID", req.RequestedSOPInstanceUID)
        changes, raw = self._decoded(event, req.ModificationList)
        with self.journal.transaction() as db:
            found = mpps_log.stored(db, uid)
            if found is None:
                raise Refused(0x0112, f"no MPPS {safe_text(uid)}")
            status, before = found
            if status != StepStatus.IN_PROGRESS:
                raise Refused(0xC310, f"MPPS is {status}: it may no longer be updated")
            merged = decode(io.BytesIO(before), True, True)
            for elem in changes:
                merged[elem.tag] = elem
            step = parse_step(merged, uid, str(event.assoc.requestor.ae_title))
            mpps_log.save(db, step, _encoded(merged), "set", raw, self.peers)
        return step, changes

    def _decoded(self, event: Any, stream: io.BytesIO | None) -> tuple[Dataset, bytes]:
        """Walk the encoding, then decode; the list re-encoded Implicit VR Little Endian."""
        raw = stream.getvalue() if stream is not None else b""
        if len(raw) > MAX_MESSAGE_BYTES:
            raise Refused(0x0213, f"{len(raw)} bytes, over the limit of {MAX_MESSAGE_BYTES}")
        if not raw:
            raise Refused(0x0120, "no attribute list")
        ts = UID(event.context.transfer_syntax)
        try:
            walk(io.BytesIO(raw), 0, len(raw), ts, self.limits)
            ds = decode(io.BytesIO(raw), ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
            return ds, _encoded(ds)
        except Refused:
            raise
        except RejectedInstance as exc:
            raise Refused(0x0213 if exc.status == 0xA700 else 0x0107, exc.reason) from None
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, EOFError) as exc:
            raise Refused(0x0107, f"cannot be parsed: {exc}"[:200]) from None


def parse_step(ds: Dataset, uid: str, calling_aet: str) -> ProcedureStep:
    """The step's state from its (merged) attributes; Refused when something is off."""
    try:
        return _parse(ds, uid, calling_aet)
    except Refused:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise Refused(0x0107, f"cannot be parsed: {exc}"[:200]) from None


def _parse(ds: Dataset, uid: str, calling_aet: str) -> ProcedureStep:
    text = str(ds.get("PerformedProcedureStepStatus", "") or "").strip()
    if not text:
        raise Refused(0x0120, "Performed Procedure Step Status is missing")
    if text not in set(StepStatus):
        raise Refused(0x0106, f"Performed Procedure Step Status {safe_text(text)} is unknown")
    scheduled = _items(ds, "ScheduledStepAttributesSequence", MAX_STUDIES)
    studies = tuple(dict.fromkeys(
        check_uid("Study Instance UID", item.get("StudyInstanceUID"))
        for item in scheduled if item.get("StudyInstanceUID")
    ))  # fmt: skip
    accession = next((str(i.AccessionNumber) for i in scheduled if i.get("AccessionNumber")), "")
    return ProcedureStep(
        sop_instance_uid=uid, status=StepStatus(text), study_uids=studies,
        series=_performed_series(ds), accession_number=printable(accession, 16), calling_aet=calling_aet,
        discontinued_reason=_reason(ds), at=time.time(),
    )  # fmt: skip


def _performed_series(ds: Dataset) -> tuple[PerformedSeries, ...]:
    out: dict[str, set[str]] = {}
    total = 0
    for item in _items(ds, "PerformedSeriesSequence", MAX_SERIES):
        series = check_uid("Series Instance UID", item.get("SeriesInstanceUID"))
        refs = out.setdefault(series, set())
        for keyword in _REFERENCES:
            for ref in _items(item, keyword, MAX_INSTANCES - total):
                refs.add(
                    check_uid("Referenced SOP Instance UID", ref.get("ReferencedSOPInstanceUID"))
                )
                total += 1
    return tuple(PerformedSeries(s, frozenset(i)) for s, i in out.items())


def _items(ds: Dataset, keyword: str, limit: int) -> list[Dataset]:
    seq = ds.get(keyword)
    if seq is None or seq == "":
        return []
    items = list(seq)
    if len(items) > limit:
        raise Refused(0x0213, f"{keyword} has {len(items)} items, over the limit")
    return items


def _reason(ds: Dataset) -> str:
    items = ds.get("PerformedProcedureStepDiscontinuationReasonCodeSequence") or []
    first = items[0] if len(items) else None
    if first is None:
        return ""
    return printable(str(first.get("CodeMeaning") or first.get("CodeValue") or ""), 64)


def printable(text: str, limit: int) -> str:
    """A peer's text for alerts and the journal: printable ASCII only, bounded."""
    return re.sub(r"[^\x20-\x7e]", "?", text[:limit]).strip()


def _encoded(ds: Dataset) -> bytes:
    data = encode(ds, True, True)
    if data is None:
        raise Refused(0x0107, "cannot be encoded again")
    return data


def _status(code: int, comment: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment.encode("ascii", "replace").decode()[:64]
    return ds
