"""Verdict messages for the HL7 and FHIR destinations, queued in the journal when a series is
judged and sent once it is released, like its images.

A message carries the verdict and, from the series' first image, the patient and study facts
a RIS or EHR needs to file the result: patient ID, name, birth date, sex, accession number.
These destinations carry patient identifiers whatever ``alerts.include_patient_data`` says:
that switch governs the consoles and the broker; a result a RIS cannot match to its order is
lost. Values from the header are hostile bytes: control characters go, lengths are capped,
and the HL7 and FHIR builders escape and validate what is left.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from agent.config import MESSAGE_KINDS, ForwardConfig
from agent.domain.verdicts import Verdict
from agent.journal.database import Journal
from agent.journal.message_queue import MessageQueue

log = logging.getLogger(__name__)

PATIENT_KEYS = ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex")
STUDY_KEYS = (
    "AccessionNumber", "StudyID", "StudyDate", "StudyTime", "StudyDescription",
    "ReferringPhysicianName", "InstitutionName", "SeriesNumber", "BodyPartExamined",
)  # fmt: skip
MAX_VALUE = 256


def message_destinations(cfg: ForwardConfig, names: list[str]) -> list[str]:
    kinds = {d.name: d.kind for d in cfg.destinations}
    return [n for n in names if kinds.get(n) in MESSAGE_KINDS]


def image_destinations(cfg: ForwardConfig, names: list[str]) -> list[str]:
    kinds = {d.name: d.kind for d in cfg.destinations}
    return [n for n in names if kinds.get(n) not in MESSAGE_KINDS]


def queue_verdict(journal: Journal, verdict: Verdict, destinations: list[str]) -> int:
    """Queue the verdict for each HL7/FHIR destination; returns the messages queued."""
    if not destinations:
        return 0
    facts = header_facts(journal, verdict.series_uid)
    body = {
        "id": uuid.uuid4().hex[:20],  # HL7 MSH-10 and the FHIR identifier; stable across retries
        "verdict": verdict.to_dict(),
        "patient": {k: v for k, v in facts.items() if k in PATIENT_KEYS},
        "study": {k: v for k, v in facts.items() if k in STUDY_KEYS},
    }
    return MessageQueue(journal).enqueue(verdict.series_uid, destinations, body)


def header_facts(journal: Journal, series_uid: str) -> dict[str, str]:
    """The patient and study attributes of the series' first readable image, cleaned."""
    for inst in journal.instances_of(series_uid):
        try:
            ds = dcmread(inst.path, stop_before_pixels=True)
        except (OSError, InvalidDicomError) as exc:
            log.warning("series %s: cannot read %s for its message: %s", series_uid, inst.path, exc)
            continue
        return {k: clean(ds.get(k)) for k in (*PATIENT_KEYS, *STUDY_KEYS) if ds.get(k)}
    return {}


def clean(value: Any) -> str:
    """A header value as one printable line, capped."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(value))
    return text.strip()[:MAX_VALUE]
