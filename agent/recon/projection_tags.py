"""Where projection data keeps its geometry: tag numbers and tolerant value decoding.

Two layouts (documented in docs/projection-data.md):

* **DICOM-CT-PD** (Chen et al., Med. Phys. 42(12):6964, 2015; TCIA LDCT-and-Projection-data):
  one projection per CT Image Storage instance, geometry in private groups 7029/7031/7033/7041,
  read by fixed tag number as the format's own readers do. Files in the wild store these
  values as raw little-endian float32 bytes (VR UN, or OB in implicit VR), so every decoder
  here accepts bytes as well as numbers and strings.
* **Raw Data Storage sinogram**: this project's private block ``SCANNER-AGENT PROJECTION 1``
  in group 0x0077 of a Raw Data Storage (1.2.840.10008.5.1.4.1.1.66) instance.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

F64 = npt.NDArray[np.float64]

# DICOM-CT-PD private tags (Chen et al. 2015, Table IV of the 2020 LDCT data paper)
PD_ROWS = 0x70291010  # NumberofDetectorRows
PD_COLUMNS = 0x70291011  # NumberofDetectorColumns
PD_TRANSVERSE_SPACING = 0x70291002  # DetectorElementTransverseSpacing (mm, at the detector)
PD_AXIAL_SPACING = 0x70291006  # DetectorElementAxialSpacing (mm, at the detector)
PD_SHAPE = 0x7029100B  # DetectorShape: CYLINDRICAL | SPHERICAL | FLAT
PD_ANGLE = 0x70311001  # DetectorFocalCenterAngularPosition phi0 (rad)
PD_AXIAL = 0x70311002  # DetectorFocalCenterAxialPosition z0 (mm)
PD_RADIUS = 0x70311003  # DetectorFocalCenterRadialDistance rho0 (mm): source to isocentre
PD_SDD = 0x70311031  # ConstantRadialDistance d0 (mm): focal centre to central element
PD_CENTRAL = 0x70311033  # DetectorCentralElement (column, row), 1-based
PD_ANGLE_SHIFT = 0x7033100B  # SourceAngularPositionShift (flying focal spot)
PD_AXIAL_SHIFT = 0x7033100C  # SourceAxialPositionShift
PD_RADIAL_SHIFT = 0x7033100D  # SourceRadialDistanceShift
PD_FFS = 0x7033100E  # FlyingFocalSpotMode: FFSNONE | FFSZ | FFSXY | FFSXYZ
PD_WATER = 0x70411001  # WaterAttenuationCoefficient (taken as 1/mm)
PD_REQUIRED = {
    PD_ROWS: "NumberofDetectorRows (7029,1010)",
    PD_COLUMNS: "NumberofDetectorColumns (7029,1011)",
    PD_TRANSVERSE_SPACING: "DetectorElementTransverseSpacing (7029,1002)",
    PD_ANGLE: "DetectorFocalCenterAngularPosition (7031,1001)",
    PD_AXIAL: "DetectorFocalCenterAxialPosition (7031,1002)",
    PD_RADIUS: "DetectorFocalCenterRadialDistance (7031,1003)",
    PD_SDD: "ConstantRadialDistance (7031,1031)",
}

# The Raw Data Storage private block: element offset -> (VR, name)
RAW_GROUP = 0x0077
RAW_CREATOR = "SCANNER-AGENT PROJECTION 1"
RAW_ELEMENTS: dict[int, tuple[str, str]] = {
    0x01: ("CS", "GeometryType"),  # PARALLEL | FAN | CONE
    0x02: ("CS", "DetectorShape"),  # FLAT | CYLINDRICAL
    0x03: ("UL", "NumberOfViews"),
    0x04: ("UL", "NumberOfDetectorRows"),
    0x05: ("UL", "NumberOfDetectorColumns"),
    0x06: ("FD", "ViewAngles"),  # degrees, one per view
    0x07: ("FD", "DetectorElementTransverseSpacing"),  # mm
    0x08: ("FD", "DetectorElementAxialSpacing"),  # mm
    0x09: ("FD", "DistanceSourceToIsocenter"),  # mm
    0x0A: ("FD", "DistanceSourceToDetector"),  # mm
    0x0B: ("FD", "DetectorCentralElement"),  # (row, column), 0-based
    0x0C: ("FD", "WaterAttenuationCoefficient"),  # 1/mm
    0x10: ("OF", "ProjectionData"),  # float32 (views, rows, columns), line integrals
}
RAW_OFFSETS = {name: offset for offset, (_, name) in RAW_ELEMENTS.items()}
RAW_REQUIRED = ("GeometryType", "NumberOfViews", "NumberOfDetectorRows",
                "NumberOfDetectorColumns", "ViewAngles", "DetectorElementTransverseSpacing",
                "ProjectionData")  # fmt: skip


_NUMBER = rb"[-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?"
_NUMERIC_TEXT = re.compile(rb"[ \x00]*" + _NUMBER + rb"(?: *\\ *" + _NUMBER + rb")*[ \x00]*")


def floats(value: Any, name: str) -> F64:
    """Numbers from a decoded value, a backslash string, ASCII bytes (a DS read as UN) or
    little-endian float32 bytes."""
    try:
        if isinstance(value, bytes | bytearray) and _NUMERIC_TEXT.fullmatch(bytes(value)):
            arr = np.array([float(v) for v in bytes(value).strip(b"\x00 ").split(b"\\")])
        elif isinstance(value, bytes | bytearray):
            if len(value) % 4:
                raise ValueError(f"{len(value)} bytes is not a float32 array")
            arr = np.frombuffer(bytes(value), dtype="<f4").astype(np.float64)
        elif isinstance(value, str):
            arr = np.array([float(v) for v in value.strip("\x00 ").split("\\") if v.strip()])
        else:
            arr = np.atleast_1d(np.asarray(value, dtype=np.float64)).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: cannot read a number from {value!r:.60}: {exc}") from None
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or inf")
    return arr


def number(value: Any, name: str) -> float:
    return float(floats(value, name)[0])


def count(value: Any, name: str) -> int:
    """A positive integer stored as a number, a string, uint16/uint32 or float32 bytes.

    Four bytes are ambiguous: a small count read as uint32 is far below 2**24, while the
    float32 pattern of any count >= 1 reads as at least 0x3F800000, so the size decides.
    """
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
        if len(raw) == 2:
            result = int(np.frombuffer(raw, "<u2")[0])
        elif len(raw) == 4 and int(np.frombuffer(raw, "<u4")[0]) < 2**24:
            result = int(np.frombuffer(raw, "<u4")[0])
        else:
            result = round(number(raw, name))
    else:
        result = round(number(value, name))
    if result < 1:
        raise ValueError(f"{name} must be a positive count, got {result}")
    return result


def text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("ascii", "replace").strip("\x00 ").upper()
    return str(value).strip().upper()


def pd_value(ds: Dataset, tag: int) -> Any:
    """The value of a DICOM-CT-PD tag, or None when absent or empty."""
    elem = ds.get(tag)
    if elem is None or elem.value in (None, b"", ""):
        return None
    return elem.value


def raw_block_values(ds: Dataset) -> dict[str, Any] | None:
    """The private block's values by name, or None when the block is absent."""
    base = raw_block_base(ds)
    if base is None:
        return None
    values: dict[str, Any] = {}
    for offset, (vr, name) in RAW_ELEMENTS.items():
        elem = ds.get((RAW_GROUP << 16) | base | offset)
        if elem is not None and elem.value not in (None, b"", ""):
            values[name] = _decode(elem.value, vr, name)
    return values


def raw_block_base(ds: Dataset) -> int | None:
    """0xXX00 of the block whose private creator is RAW_CREATOR, or None.

    Looked up from the data set itself rather than pydicom's cached private blocks,
    which a deep copy can leave pointing at the original.
    """
    for element in range(0x10, 0x100):
        creator = ds.get((RAW_GROUP << 16) | element)
        if creator is not None and text(creator.value) == RAW_CREATOR:
            return element << 8
    return None


def _decode(value: Any, vr: str, name: str) -> Any:
    """Undo implicit VR: an element read without a dictionary arrives as bytes."""
    if not isinstance(value, bytes | bytearray):
        return value
    raw = bytes(value)
    if vr == "CS":
        return raw.decode("ascii", "replace").strip("\x00 ")
    if vr == "UL":
        if len(raw) != 4:
            raise ValueError(f"{name}: {len(raw)} bytes is not one UL")
        return int(np.frombuffer(raw, "<u4")[0])
    if vr == "FD":
        if len(raw) % 8:
            raise ValueError(f"{name}: {len(raw)} bytes is not a float64 array")
        return np.frombuffer(raw, "<f8").astype(np.float64)
    return raw  # OF stays bytes; the reader turns it into float32
