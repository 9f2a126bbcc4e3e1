"""DICOM header values made acceptable to highdicom, for the result objects (SRs) the agent
builds from what scanners sent.

highdicom validates the patient and study attributes it copies from source headers and raises
on values scanners do write (StudyTime ``14:04:38``, StudyDate ``1997.04.24``), which would
lose the report. Result objects are built from these sanitised copies, never from the headers
as received; the source data sets are never changed.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.valuerep import DA, DT, TM

log = logging.getLogger(__name__)

_FORMATS = {  # PS3.5 6.2: the forms highdicom (pydicom's DA, TM, DT) accepts without doubt
    "DA": re.compile(r"\d{8}"),
    "TM": re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?"),
    "DT": re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?"),
}
_PARSERS = {"DA": DA, "TM": TM, "DT": DT}
_SEPARATORS = {"DA": ".-/", "TM": ":", "DT": ":"}  # ACR-NEMA style: 1997.04.24, 14:04:38
_SEXES = {"M", "F", "O"}  # highdicom raises on any other non-empty PatientSex


def conformant(vr: str, value: str) -> str:
    """``value`` if it is a valid ``vr`` (DA, TM, DT); else without old-style separators if
    that is valid; else "" (the SR copies these as Type 2, so empty is allowed)."""
    text = value.strip()
    for candidate in (text, text.translate(str.maketrans("", "", _SEPARATORS[vr]))):
        if _FORMATS[vr].fullmatch(candidate) and _parses(vr, candidate):
            return candidate
    return ""


def _parses(vr: str, text: str) -> bool:
    try:
        _PARSERS[vr](text)  # calendar checks: month 13, hour 25
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def sanitised_header(ds: Dataset, repairs: set[str] | None = None) -> Dataset:
    """A shallow copy of ``ds`` whose top-level DA, TM and DT values and PatientSex highdicom
    accepts; each change is added to ``repairs`` ("StudyTime '14:04:38' -> '140438'")."""
    out = Dataset()
    out.update(ds)
    for elem in ds:
        if elem.VR in _FORMATS and not elem.is_empty:
            values = [str(v) for v in (elem.value if elem.VM > 1 else [elem.value])]
            fixed = [f for f in (conformant(elem.VR, v) for v in values) if f]
            if fixed != values:  # a new element: the source's own must stay untouched
                value = fixed if len(fixed) > 1 else (fixed[0] if fixed else None)
                out[elem.tag] = DataElement(elem.tag, elem.VR, value)
                _note(repairs, elem.keyword, "\\".join(values), "\\".join(fixed))
    raw = str(ds.get("PatientSex", "") or "")
    sex = raw.strip().upper() if raw.strip().upper() in _SEXES else ""
    if sex != raw:
        out.PatientSex = sex or None
        _note(repairs, "PatientSex", raw, sex)
    return out


def _note(repairs: set[str] | None, keyword: str, was: str, now: str) -> None:
    if repairs is not None:
        repairs.add(f"{keyword} {was!r} -> {now!r}")


# Retired image storage classes old modalities still send -> their current successor. highdicom
# finds the patient and study modules of a source through its IOD, and knows no retired class.
_RETIRED_SUCCESSORS = {
    "1.2.840.10008.5.1.4.1.1.6": "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image
    "1.2.840.10008.5.1.4.1.1.3": "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame
    "1.2.840.10008.5.1.4.1.1.5": "1.2.840.10008.5.1.4.1.1.20",  # Nuclear Medicine Image
    "1.2.840.10008.5.1.4.1.1.12.3": "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angio Bi-Plane
}


@functools.cache
def _teach_highdicom() -> None:
    """Map each retired class to its successor's IOD in highdicom's (cached) table: the
    patient and study modules are the same, and a report must not be lost to an old class."""
    from highdicom._standard_utils import get_sop_class_iod_map

    table = get_sop_class_iod_map()
    for old, new in _RETIRED_SUCCESSORS.items():
        if old not in table and new in table:
            table[old] = table[new]


def sanitised_headers(headers: Sequence[Dataset], what: str) -> list[Dataset]:
    """:func:`sanitised_header` of each, with one warning naming every repair for ``what``."""
    _teach_highdicom()
    repairs: set[str] = set()
    clean = [sanitised_header(ds, repairs) for ds in headers]
    if repairs:
        log.warning("%s: header values repaired: %s", what, "; ".join(sorted(repairs)))
    return clean
