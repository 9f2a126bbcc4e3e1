"""The worklist check (``worklist:``): is this study the one the RIS scheduled?

Before a complete series is released, its accession number and patient ID (from its first
image) are looked up by C-FIND in the RIS's Modality Worklist (Modality Worklist
Information Model - FIND), keyed on the accession number. The outcome:

- ``worklist.match``: an entry with that accession number has that patient ID; released.
- ``worklist.mismatch``: the entries with that accession number name another patient (a
  mis-filed study): held, with a ``worklist`` alert (action ``review``).
- ``worklist.no-entry``: no entry has that accession number, or the series has none: held,
  with a ``worklist`` alert.
- ``worklist.unreachable``: no association, a failure status or a timeout: held, with a
  ``worklist`` alert saying so. The RIS being down must not stop studies for long, so the
  normal ``forward.hold_timeout_s`` then forwards the series flagged (fail open).
The technologist's release clears any of these holds, as it clears a QC hold.

A definitive answer (match, mismatch, no entry) is kept for ``worklist.cache_s`` so the
series of one study cost one query; unreachable is never cached. Answers are bounded
(:data:`MAX_ANSWERS` identifiers read, then the query is cancelled).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from agent.config import WorklistConfig
from agent.journal.database import Journal

log = logging.getLogger(__name__)

MAX_ANSWERS = 100  # worklist entries read for one accession number
CACHE_ENTRIES = 1024
PENDING = (0xFF00, 0xFF01)
WILDCARDS = "*?\\"  # C-FIND wildcards and the value separator


@dataclass(frozen=True)
class Outcome:
    code: str  # worklist.match | mismatch | no-entry | unreachable
    message: str

    @property
    def holds(self) -> bool:
        return self.code != "worklist.match"


class WorklistCheck:
    def __init__(self, cfg: WorklistConfig, calling_aet: str) -> None:
        self.cfg = cfg
        self.calling_aet = cfg.calling_ae_title or calling_aet
        self._cache: OrderedDict[tuple[str, str], tuple[float, Outcome]] = OrderedDict()

    def check_series(self, journal: Journal, series_uid: str) -> Outcome:
        """The check for a journal series, from its first image's header."""
        instances = journal.instances_of(series_uid)
        if not instances:
            return Outcome("worklist.no-entry", "the series has no stored image to check")
        ds = dcmread(instances[0].path, stop_before_pixels=True,
                     specific_tags=["AccessionNumber", "PatientID"])  # fmt: skip
        return self.check(
            str(ds.get("AccessionNumber", "") or ""), str(ds.get("PatientID", "") or "")
        )

    def check(self, accession: str, patient_id: str) -> Outcome:
        accession, patient_id = accession.strip(), patient_id.strip()
        if not accession:
            return Outcome("worklist.no-entry", "the study has no accession number to check")
        if any(c in accession for c in WILDCARDS):  # "*" would match every entry
            return Outcome("worklist.no-entry", "the accession number holds C-FIND wildcard "
                           "characters and cannot be checked")  # fmt: skip
        key = (accession, patient_id)
        hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.cfg.cache_s:
            return hit[1]
        outcome = self._query(accession, patient_id)
        if outcome.code != "worklist.unreachable":
            self._cache[key] = (time.monotonic(), outcome)
            self._cache.move_to_end(key)
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return outcome

    def _query(self, accession: str, patient_id: str) -> Outcome:
        """Messages name neither the accession number nor a patient ID: the alert carries
        the accession number where ``alerts.include_patient_data`` decides, and IDs never."""
        found = self.patient_ids(accession)
        if isinstance(found, str):
            return Outcome("worklist.unreachable", f"worklist {self._where}: {found}")
        if not found:
            return Outcome(
                "worklist.no-entry", "no worklist entry has the study's accession number"
            )
        if patient_id in found:
            return Outcome(
                "worklist.match", "the worklist confirms accession number and patient ID"
            )
        return Outcome(
            "worklist.mismatch",
            "the worklist schedules the study's accession number for another patient ID "
            f"({len(found)} entr{'y' if len(found) == 1 else 'ies'})",
        )

    @property
    def _where(self) -> str:
        return f"{self.cfg.ae_title} at {self.cfg.host}:{self.cfg.port}"

    def patient_ids(self, accession: str) -> set[str] | str:
        """Patient IDs of the entries with ``accession``, or why the RIS did not answer."""
        ae = AE(ae_title=self.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.cfg.timeout_s
        ae.add_requested_context(ModalityWorklistInformationFind)
        assoc = ae.associate(self.cfg.host, self.cfg.port, ae_title=self.cfg.ae_title)
        if not assoc.is_established:
            return "no association"
        try:
            return _collect(assoc, _query(accession), accession)
        finally:
            if assoc.is_established:
                assoc.release()


def _query(accession: str) -> Dataset:
    ds = Dataset()
    ds.AccessionNumber = accession
    ds.PatientID = ""
    ds.PatientName = ""
    step = Dataset()
    step.Modality = ""
    step.ScheduledProcedureStepStartDate = ""
    ds.ScheduledProcedureStepSequence = [step]
    return ds


def _collect(assoc: object, query: Dataset, accession: str) -> set[str] | str:
    ids: set[str] = set()
    answers = 0
    final = None
    for status, identifier in assoc.send_c_find(query, ModalityWorklistInformationFind):  # type: ignore[attr-defined]
        if not status:
            return "no C-FIND response (timeout or abort)"
        final = int(status.Status)
        if final in PENDING and identifier is not None:
            answers += 1
            if str(identifier.get("AccessionNumber", "") or "").strip() == accession:
                ids.add(str(identifier.get("PatientID", "") or "").strip())
            if answers >= MAX_ANSWERS:
                break  # enough to decide; the association is released
    if final is None or (final != 0x0000 and final not in PENDING):
        return f"C-FIND failed with status 0x{final or 0:04X}"
    return ids
