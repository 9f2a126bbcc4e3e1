"""Decompressing a stored object for a destination that does not accept its transfer syntax.

The spool file is never changed: the decoded copy is written beside it and removed after
the send. pydicom decodes through pylibjpeg (JPEG, JPEG-LS, JPEG 2000) and its own RLE.
"""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


class TranscodeError(Exception):
    pass


def decompress_copy(
    source: Path, target: Path, transfer_syntax: UID = ExplicitVRLittleEndian
) -> Path:
    """Write ``source`` decoded into ``transfer_syntax`` at ``target``; raise TranscodeError."""
    if transfer_syntax not in UNCOMPRESSED:
        raise TranscodeError(f"cannot transcode into {transfer_syntax}")
    try:
        ds = dcmread(source)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        ds.file_meta.TransferSyntaxUID = transfer_syntax
        ds.save_as(target, enforce_file_format=True)
    except Exception as exc:  # every decoder failure means the same thing: cannot transcode
        target.unlink(missing_ok=True)
        raise TranscodeError(f"cannot decode {ds_ts(source)}: {exc}") from exc
    return target


def ds_ts(path: Path) -> str:
    try:
        ts = dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        return f"{ts.name} ({ts})"
    except Exception:
        return "an unreadable transfer syntax"
