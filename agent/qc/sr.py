"""A series' QC result as a DICOM Comprehensive SR (highdicom), for the PACS beside the images.

The SR belongs to the source study (patient and study attributes come from the source
headers), in a new series, and references every source image twice: in the evidence
sequence (CurrentRequestedProcedureEvidenceSequence) and as IMAGE items in the tree.

Content tree (concepts are private, scheme ``99SCNAGT``, except the DCM source concept)::

    CONTAINER  Image quality control report
      CODE       QC status = pass | warn | fail
      TEXT       QC protocol = <name>                     (when a protocol applied)
      CONTAINER  QC reason                                (one per reason)
        TEXT       Reason code = ring_hu
        TEXT       Reason message = ...
        NUM        Measured value                         (when the reason has one)
        NUM        Threshold                              (when the reason has one)
      NUM        <metric> (e.g. ring_hu.worst)            (one per aggregated metric)
      IMAGE      Source of Measurement (DCM 121112)       (one per source image)

highdicom validates the patient and study attributes it copies from the sources and raises on
values scanners do write (StudyTime ``14:04:38``), which would lose the report: every result
object is built from :func:`sanitised_header` copies, never from the headers as received.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence

import highdicom as hd
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid
from pydicom.valuerep import DA, DT, TM

from agent.domain.verdicts import QC

log = logging.getLogger(__name__)

SERIES_DESCRIPTION = "QC report (scanner-agent)"
SCHEME = "99SCNAGT"
SCHEME_NAME = "scanner-agent"
REPORT = Code("QCREPORT", SCHEME, "Image quality control report")
STATUS = Code("QCSTATUS", SCHEME, "QC status")
PROTOCOL = Code("QCPROTOCOL", SCHEME, "QC protocol")
REASON = Code("QCREASON", SCHEME, "QC reason")
REASON_CODE = Code("QCREASONCODE", SCHEME, "Reason code")
REASON_MESSAGE = Code("QCREASONMSG", SCHEME, "Reason message")
VALUE = Code("QCVALUE", SCHEME, "Measured value")
THRESHOLD = Code("QCTHRESHOLD", SCHEME, "Threshold")
SOURCE = Code("121112", "DCM", "Source of Measurement")
STATUS_CODES = {
    "pass": Code("QCPASS", SCHEME, "QC pass"),
    "warn": Code("QCWARN", SCHEME, "QC warning"),
    "fail": Code("QCFAIL", SCHEME, "QC failure"),
}
NO_UNIT = Code("1", "UCUM", "no units")
UNITS = {"_mm2": Code("mm2", "UCUM", "mm2"), "_hu": Code("[hnsf'U]", "UCUM", "Hounsfield unit")}
CONTAINS = hd.sr.RelationshipTypeValues.CONTAINS


def _unit(name: str) -> Code:
    stem = name.split(".")[0]
    if name.endswith(".fail_fraction"):
        return NO_UNIT
    return next((u for part, u in UNITS.items() if part in stem), NO_UNIT)


def _metric_code(name: str) -> hd.sr.CodedConcept:
    """A private concept per metric; the name (up to 64 characters) is its code value."""
    return hd.sr.CodedConcept(name[:64], SCHEME, name[:64])


def _num(name: hd.sr.CodedConcept | Code, value: float, unit: Code) -> hd.sr.NumContentItem:
    return hd.sr.NumContentItem(name=name, value=value, unit=unit, relationship_type=CONTAINS)


def _text(name: Code, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value[:1024], relationship_type=CONTAINS)


def _finite(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    return None


def content_tree(
    qc: QC, sources: Sequence[Dataset], protocol: str | None = None
) -> hd.sr.ContainerContentItem:
    root = hd.sr.ContainerContentItem(name=REPORT)
    items: list[hd.sr.ContentItem] = [
        hd.sr.CodeContentItem(
            name=STATUS, value=STATUS_CODES[qc.status], relationship_type=CONTAINS
        )
    ]
    if protocol:
        items.append(_text(PROTOCOL, protocol))
    for r in qc.reasons:
        box = hd.sr.ContainerContentItem(name=REASON, relationship_type=CONTAINS)
        inner: list[hd.sr.ContentItem] = [
            _text(REASON_CODE, r.code),
            _text(REASON_MESSAGE, r.message),
        ]
        unit = _unit(r.code)
        for concept, raw in ((VALUE, r.value), (THRESHOLD, r.threshold)):
            v = _finite(raw)
            if v is not None:
                inner.append(_num(concept, v, unit))
        box.ContentSequence = hd.sr.ContentSequence(inner)
        items.append(box)
    for name, raw in qc.metrics.items():
        v = _finite(raw)
        if v is not None:
            items.append(_num(_metric_code(name), v, _unit(name)))
    for ds in sources:
        items.append(
            hd.sr.ImageContentItem(
                name=SOURCE,
                referenced_sop_class_uid=ds.SOPClassUID,
                referenced_sop_instance_uid=ds.SOPInstanceUID,
                relationship_type=CONTAINS,
            )
        )
    root.ContentSequence = hd.sr.ContentSequence(items)
    return root


def qc_sr(
    qc: QC,
    sources: Sequence[Dataset],
    *,
    protocol: str | None = None,
    series_number: int = 9901,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> hd.sr.ComprehensiveSR:
    """The Comprehensive SR of ``qc`` for the series whose image headers are ``sources``.

    ``sources`` must be one series of one study (headers suffice: read them with
    ``stop_before_pixels=True``). A new series UID is generated unless given.
    """
    if not sources:
        raise ValueError("a QC SR needs at least one source image")
    if len({str(ds.SeriesInstanceUID) for ds in sources}) != 1:
        raise ValueError("the source images must belong to one series")
    repairs: set[str] = set()
    evidence = [sanitised_header(_with_type2(ds), repairs) for ds in sources]
    if repairs:
        log.warning("QC SR: source header values repaired: %s", "; ".join(sorted(repairs)))
    return hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=content_tree(qc, sources, protocol),
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=1,
        manufacturer="scanner-agent",
        is_complete=True,
        series_description=SERIES_DESCRIPTION,
    )


# Type 2 patient and study attributes the SR copies from its first source; empty if absent.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
          "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")  # fmt: skip


def _with_type2(ds: Dataset) -> Dataset:
    """A shallow copy of a source header with the SR's Type 2 attributes present."""
    out = Dataset()
    out.update(ds)
    for keyword in _TYPE2:
        if keyword not in out:
            setattr(out, keyword, None)
    return out


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
