"""Domain types: small frozen dataclasses named the way DICOM names things."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class InstanceState(StrEnum):
    RECEIVED = "received"
    PROCESSED = "processed"
    PURGED = "purged"


class SeriesState(StrEnum):
    RECEIVING = "receiving"
    COMPLETE = "complete"
    HELD = "held"
    RELEASED = "released"
    FORWARDED = "forwarded"
    QUARANTINED = "quarantined"


class DeliveryState(StrEnum):
    QUEUED = "queued"
    DELIVERED = "delivered"
    QUARANTINED = "quarantined"
    DROPPED = "dropped"  # an operator gave up on a quarantined item


@dataclass(frozen=True, slots=True)
class Instance:
    """One stored SOP instance, as the journal records it."""

    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    study_uid: str
    transfer_syntax: str
    path: str
    size: int
    sha256: str  # of the data set bytes exactly as received (the file meta excluded)
    version: int  # 2+ when the same SOP Instance UID arrived again with different bytes
    modality: str = ""
    instance_number: int | None = None
    slice_position: float | None = None  # along the slice normal, from IPP and IOP
    number_of_frames: int = 1
    images_in_acquisition: int | None = None
    acquisition_number: int | None = None
    temporal_positions: int | None = None  # NumberOfTemporalPositions or CardiacNumberOfImages
    calling_aet: str = ""
    association: int = 0  # the receiving association's serial within this process
    received_at: float = 0.0


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """Descriptive attributes of a series, taken from its first instance."""

    series_uid: str
    study_uid: str
    modality: str = ""
    series_description: str = ""
    series_number: int | None = None
    body_part: str = ""
    station_name: str = ""
    accession_number: str = ""
    calling_aet: str = ""


@dataclass(frozen=True, slots=True)
class AssociationEnded:
    """An association that delivered instances has ended."""

    association: int
    released: bool  # False: aborted or dropped, so nothing can be inferred from it


@dataclass(frozen=True, slots=True)
class SeriesComplete:
    """The assembler's output: a series the data (or the clock) says is complete."""

    series_uid: str
    study_uid: str
    modality: str
    instances: int
    reason: str  # count | frames | released | idle | recovered
    amended: bool  # True when late images re-opened a series already emitted
    last_image_at: float
    completed_at: float
