"""Hostile data sets, written byte by byte: pydicom will not encode a lie, so these do.

Each builder returns a Part 10 file whose file meta is honest (so the C-STORE request is
well formed) and whose data set carries one attack after the identifying UIDs, so that
only the attack, never a missing UID, can be the reason for a refusal.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    generate_uid,
)

UNDEFINED = 0xFFFFFFFF
_LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}


def header(group: int, elem: int, vr: str, length: int) -> bytes:
    """An Explicit VR Little Endian element header that may declare any length."""
    tag = struct.pack("<HH", group, elem)
    if vr in _LONG:
        return tag + vr.encode() + b"\0\0" + struct.pack("<I", length)
    return tag + vr.encode() + struct.pack("<H", length)


def element(group: int, elem: int, vr: str, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr == "UI" else b" "
    return header(group, elem, vr, len(value)) + value


def identity(sop_uid: str, study: str | None = None, series: str | None = None) -> bytes:
    """SOP Class and Instance, Modality, Study and Series UIDs, in tag order."""
    return b"".join([
        element(0x0008, 0x0016, "UI", CTImageStorage.encode()),
        element(0x0008, 0x0018, "UI", sop_uid.encode()),
        element(0x0008, 0x0060, "CS", b"CT"),
        element(0x0020, 0x000D, "UI", (study or generate_uid()).encode("latin-1")),
        element(0x0020, 0x000E, "UI", (series or generate_uid()).encode("latin-1")),
    ])  # fmt: skip


def part10(path: Path, sop_uid: str, dataset: bytes, ts: str = ExplicitVRLittleEndian) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_meta(sop_uid, ts) + dataset)
    return path


def _meta(sop_uid: str, ts: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    buf = DicomBytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)
    return buf.getvalue()


def lying_length(path: Path) -> Path:
    """A private OB element declares 0xFFFFFFF0 bytes; 64 are present."""
    uid = generate_uid()
    body = identity(uid) + header(0x0029, 0x1010, "OB", 0xFFFFFFF0) + b"\x55" * 64
    return part10(path, uid, body)


def huge_un_in_the_middle(path: Path) -> Path:
    """A 4 GiB UN element between ordinary ones; a few bytes of it and more elements follow."""
    uid = generate_uid()
    body = (
        identity(uid)
        + header(0x0029, 0x1010, "UN", 0xFFFFFFFE)
        + b"\0" * 256
        + element(0x0040, 0x0244, "DA", b"20260101")
        + element(0x0040, 0x0245, "TM", b"120000")
    )
    return part10(path, uid, body)


def deep_nesting(path: Path, depth: int = 500) -> Path:
    """Content Sequences nested ``depth`` deep (undefined lengths, properly delimited)."""
    uid = generate_uid()
    opening = header(0x0040, 0xA730, "SQ", UNDEFINED) + struct.pack(
        "<HHI", 0xFFFE, 0xE000, UNDEFINED
    )
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    body = (
        identity(uid) + opening * depth + element(0x0040, 0xA040, "CS", b"TEXT") + closing * depth
    )
    return part10(path, uid, body)


def deflate_bomb(path: Path, inflated: int) -> Path:
    """A Deflated Explicit VR Little Endian data set whose one OB value is ``inflated`` zero
    bytes: a valid data set, a thousandth of its size on the wire. Written streaming."""
    uid = generate_uid()
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(_meta(uid, DeflatedExplicitVRLittleEndian))
        fh.write(z.compress(identity(uid) + header(0x0029, 0x1010, "OB", inflated)))
        zeros = bytes(16 << 20)
        left = inflated
        while left:
            step = min(left, len(zeros))
            fh.write(z.compress(zeros[:step]))
            left -= step
        fh.write(z.flush())
    return path


def with_uids(path: Path, study: str, series: str) -> Path:
    """An ordinary small instance whose Study and Series UIDs are exactly these strings."""
    uid = generate_uid()
    return part10(path, uid, identity(uid, study, series))
