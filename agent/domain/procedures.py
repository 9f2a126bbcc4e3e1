"""Modality Performed Procedure Steps: what the modality says it performed (MPPS)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class StepStatus(StrEnum):
    IN_PROGRESS = "IN PROGRESS"
    COMPLETED = "COMPLETED"
    DISCONTINUED = "DISCONTINUED"


@dataclass(frozen=True, slots=True)
class PerformedSeries:
    """One series the step lists, with the SOP instances it says belong to it."""

    series_uid: str
    instances: frozenset[str]


@dataclass(frozen=True, slots=True)
class ProcedureStep:
    """The state of one MPPS instance after an N-CREATE or N-SET (already journaled)."""

    sop_instance_uid: str
    status: StepStatus
    study_uids: tuple[str, ...] = ()
    series: tuple[PerformedSeries, ...] = ()
    accession_number: str = ""
    calling_aet: str = ""
    discontinued_reason: str = ""  # the code meaning of the discontinuation reason, if sent
    at: float = 0.0

    @property
    def instance_count(self) -> int:
        return sum(len(s.instances) for s in self.series)
