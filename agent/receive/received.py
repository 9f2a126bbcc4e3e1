"""Checking a received data set and reading what the journal needs from it.

Everything here treats the bytes as hostile: the encoding is walked first
(:mod:`agent.receive.structure`: lengths, nesting, inflated size) so pydicom only ever
reads a data set whose structure holds, then it is parsed with pixel data deferred, and
the UIDs the agent relies on must be present, storable and consistent with the request.

Failure statuses (Storage Service Class, PS3.4 Annex B):
    0xA700  the data set, or its inflated form, is larger than the configured limit
    0xA900  the data set's SOP Class does not match the request's
    0xC210  the data set cannot be parsed, is truncated, lies about a length or nests too deep
    0xC211  a required attribute is missing, empty or not storable as a UID
    0xC212  the data set's SOP Instance UID differs from the request's
"""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info

from agent.config import DicomConfig
from agent.domain.instances import Instance, SeriesInfo
from agent.errors import RejectedInstance
from agent.receive.spool import dataset_offset
from agent.receive.structure import Limits, walk

_UNDEFINED = 0xFFFFFFFF
_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_DEFER = 64 * 1024  # pixel data and other large values are checked, not loaded
_UID_MAX = 64  # PS3.5 9.1; longer ones cannot be forwarded to a conformant PACS


def limits(cfg: DicomConfig) -> Limits:
    return Limits(
        max_depth=cfg.max_sequence_depth,
        max_inflated=int(cfg.max_inflated_bytes),
        max_dataset=int(cfg.max_dataset_bytes),
    )


_DEFAULT_LIMITS = limits(DicomConfig())


def read_checked(
    path: Path, sop_class: str, sop_instance: str, bounds: Limits = _DEFAULT_LIMITS,
    transfer_syntax: str | None = None,
) -> Dataset:  # fmt: skip
    """Parse a received Part 10 file and check it; raise RejectedInstance if it is bad.

    ``transfer_syntax``: the accepted presentation context's, which the receiver wrote into
    the file meta itself; given, the meta is parsed once (by pydicom), not twice."""
    try:
        size = _walk_file(path, bounds, transfer_syntax)
        ds = dcmread(path, defer_size=_DEFER)
        _check_structure(ds, size)
    except RejectedInstance:
        raise
    except (InvalidDicomError, ValueError, TypeError, KeyError, EOFError, OSError, zlib.error,
            NotImplementedError, OverflowError, AttributeError, RecursionError) as exc:  # fmt: skip
        # RecursionError: a last line behind max_sequence_depth, never reached by design
        raise RejectedInstance(0xC210, f"cannot parse data set: {exc}") from exc
    _check_identity(ds, sop_class, sop_instance)
    return ds


def _walk_file(path: Path, bounds: Limits, transfer_syntax: str | None) -> int:
    if transfer_syntax is None:  # the meta is written by pynetdicom (or by us), not the peer
        transfer_syntax = str(read_file_meta_info(path).TransferSyntaxUID)
    with path.open("rb") as fh:
        start = dataset_offset(fh.read(1024))
        size = fh.seek(0, os.SEEK_END)
        walk(fh, start, size, transfer_syntax, bounds)
    return size


def _check_structure(ds: Dataset, file_size: int) -> None:
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if isinstance(raw, RawDataElement):
            _check_raw_length(raw, file_size)
            if raw.VR == "SQ":
                _ = ds[tag].value  # parse nested items now, so a broken sequence is caught here
    _check_pixel_length(ds)


def _check_raw_length(raw: RawDataElement, file_size: int) -> None:
    if raw.length == _UNDEFINED:
        return
    if raw.value is None:
        if raw.value_tell + raw.length > file_size:
            raise RejectedInstance(0xC210, f"element {raw.tag} runs past the end of the data set")
    elif len(raw.value) != raw.length:
        raise RejectedInstance(0xC210, f"element {raw.tag} is truncated")


def _check_pixel_length(ds: Dataset) -> None:
    """Native (uncompressed) pixel data must hold every declared frame."""
    if "PixelData" not in ds or ds.file_meta.TransferSyntaxUID.is_compressed:
        return
    raw = ds.get_item("PixelData")
    declared = raw.length if isinstance(raw, RawDataElement) else len(ds.PixelData)
    try:
        need = (
            int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
            * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.BitsAllocated)
        )  # fmt: skip
    except (AttributeError, TypeError, ValueError) as exc:
        raise RejectedInstance(0xC211, f"image attributes missing or invalid: {exc}") from exc
    if declared * 8 < need:
        raise RejectedInstance(
            0xC210, f"pixel data holds {declared} B, the image needs {need // 8} B"
        )


def _check_identity(ds: Dataset, sop_class: str, sop_instance: str) -> None:
    for keyword in _REQUIRED:
        _check_uid(keyword, str(ds.get(keyword, "") or "").strip())
    if str(ds.SOPClassUID) != sop_class:
        raise RejectedInstance(
            0xA900,
            f"SOP Class UID {safe_text(str(ds.SOPClassUID))} does not match the request's "
            f"{safe_text(sop_class)}",
        )
    if str(ds.SOPInstanceUID) != sop_instance:
        raise RejectedInstance(
            0xC212,
            f"SOP Instance UID {safe_text(str(ds.SOPInstanceUID))} does not match the request's",
        )


def _check_uid(keyword: str, uid: str) -> None:
    """Non-conformant UIDs (letters, 64 hex digits) are stored: scanners send them. Only
    what cannot be stored and forwarded safely is refused; paths never use the raw UID."""
    if not uid:
        raise RejectedInstance(0xC211, f"{keyword} is missing or empty")
    if len(uid) > _UID_MAX:
        raise RejectedInstance(0xC211, f"{keyword} is {len(uid)} characters, over {_UID_MAX}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in uid):
        raise RejectedInstance(0xC211, f"{keyword} {safe_text(uid)} holds control characters")


def safe_text(value: str, limit: int = 80) -> str:
    """A peer's string as a log field: quoted and escaped, so it cannot forge a log line."""
    return repr(value[:limit])


def describe(ds: Dataset, **fields: Any) -> tuple[Instance, SeriesInfo]:
    """The journal's view of a checked data set; ``fields`` supplies path, hash, AE and so on."""
    inst = Instance(
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        series_uid=str(ds.SeriesInstanceUID),
        study_uid=str(ds.StudyInstanceUID),
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
        modality=header_text(ds, "Modality"),
        instance_number=_int(ds, "InstanceNumber"),
        slice_position=slice_position(ds),
        number_of_frames=_int(ds, "NumberOfFrames") or 1,
        images_in_acquisition=_int(ds, "ImagesInAcquisition"),
        acquisition_number=_int(ds, "AcquisitionNumber"),
        temporal_positions=_int(ds, "NumberOfTemporalPositions")
        or _int(ds, "CardiacNumberOfImages"),
        **fields,
    )
    info = SeriesInfo(
        series_uid=inst.series_uid,
        study_uid=inst.study_uid,
        modality=inst.modality,
        series_description=header_text(ds, "SeriesDescription"),
        series_number=_int(ds, "SeriesNumber"),
        body_part=header_text(ds, "BodyPartExamined"),
        station_name=header_text(ds, "StationName"),
        accession_number=header_text(ds, "AccessionNumber"),
        calling_aet=inst.calling_aet,
    )
    return inst, info


def slice_position(ds: Dataset) -> float | None:
    """Distance along the slice normal: ImagePositionPatient . (row x column cosines)."""
    try:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        r0, r1, r2, c0, c1, c2 = (float(v) for v in ds.ImageOrientationPatient)
    except (AttributeError, TypeError, ValueError):
        return None
    normal = (r1 * c2 - r2 * c1, r2 * c0 - r0 * c2, r0 * c1 - r1 * c0)
    pos = x * normal[0] + y * normal[1] + z * normal[2]
    return pos if math.isfinite(pos) else None


def header_text(ds: Dataset, keyword: str) -> str:
    """A header value as the journal records it: stripped, at most 256 characters."""
    try:
        value = ds.get(keyword, "")
        return str(value).strip()[:256] if value is not None else ""
    except (ValueError, TypeError):
        return ""


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (ValueError, TypeError, OverflowError):
        return None
