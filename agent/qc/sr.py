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
object is built from :func:`agent.domain.headers.sanitised_header` copies, never from the headers as received.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from agent.domain.headers import sanitised_header, sanitised_headers
from agent.domain.verdicts import QC

__all__ = ["SERIES_DESCRIPTION", "content_tree", "qc_sr", "sanitised_header"]

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
    evidence = sanitised_headers([_with_type2(ds) for ds in sources], "QC SR")
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
