"""A series' QC result as a TID 1500 Measurement Report (highdicom), for the PACS beside
the images, and the worst images for the key-image KOS.

The report belongs to the source study (patient and study attributes from
:func:`agent.domain.results.study_context`), in a new series, and references every source
image in its evidence, its image library (TID 1600) and its series group. Content::

    CONTAINER  Imaging Measurement Report (126000, DCM)                       TID 1500
      CODE       Procedure reported = the modality's imaging procedure (SCT),
                                      Image quality analysis (133887000, SCT)
      CONTAINER  Image Library -> every source image
      CONTAINER  Imaging Measurements
        CONTAINER  Measurement Group "QC of the series"                       TID 1501
          Finding type         = Image Quality (111101, DCM)
          Algorithm            = scanner-agent QC <version> [protocol=<name>]
          CODE  Imaging Series Quality (130550, DCM) = Diagnostic | Limited |
                Non-diagnostic quality (RadLex RID12 | RID13 | RID14)  (QC pass | warn | fail)
          NUM   <metric> (ring_hu.worst, ...; 99SCANAGT) in UCUM       one per aggregated metric
          (no IMAGE items: a group without them applies to every image in the evidence)
        CONTAINER  Measurement Group "QC reason <code>"                     one per reason
          Finding type         = the artifact (RadLex where one fits, else 99SCANAGT <code>)
          NUM   <code> = the worst value; NUM Threshold = the level it reached (when numeric)
          TEXT  Comment = the reason's message
          IMAGE Source of Measurement -> the worst image (when per-image values are known)

highdicom validates the patient and study attributes it copies and raises on values
scanners do write (StudyTime ``14:04:38``): every result object is built from
:func:`agent.domain.headers.sanitised_header` copies, never from the headers as received.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from agent import __version__
from agent.domain.headers import sanitised_header
from agent.domain.results import (
    COMMENT,
    RATIO,
    UNITLESS,
    evidence,
    measurement_report,
    private,
    procedure,
    study_context,
    text,
    with_texts,
)  # fmt: skip
from agent.domain.verdicts import QC, Reason
from agent.qc.image_qc import ImageMeasurement
from agent.qc.protocols import Protocol

__all__ = ["SERIES_DESCRIPTION", "qc_sr", "sanitised_header", "worst_images"]

SERIES_DESCRIPTION = "QC report (scanner-agent)"
IMAGE_QUALITY = hd.sr.CodedConcept("111101", "DCM", "Image Quality")
QUALITY_ANALYSIS = hd.sr.CodedConcept("133887000", "SCT", "Image quality analysis")
SERIES_QUALITY = hd.sr.CodedConcept("130550", "DCM", "Imaging Series Quality")
STATUS_CODES = {  # RadLex CID 7036 grades for the three QC outcomes
    "pass": hd.sr.CodedConcept("RID12", "RADLEX", "Diagnostic quality"),
    "warn": hd.sr.CodedConcept("RID13", "RADLEX", "Limited quality"),
    "fail": hd.sr.CodedConcept("RID14", "RADLEX", "Non-diagnostic quality"),
}
ARTIFACTS = {  # the metrics whose artifact has a RadLex or DCM concept
    "motion_streak_hu": hd.sr.CodedConcept("RID11423", "RADLEX", "Motion related artifact"),
    "wrap_fraction": hd.sr.CodedConcept("RID11395", "RADLEX", "Phase wraparound artifact"),
    "snr": hd.sr.CodedConcept("111787", "DCM", "Signal to Noise Ratio"),
}
THRESHOLD = private("THRESHOLD", "Threshold")
UNITS = {"_mm2": hd.sr.CodedConcept("mm2", "UCUM", "mm2"),
         "_hu": hd.sr.CodedConcept("[hnsf'U]", "UCUM", "Hounsfield unit")}  # fmt: skip


def _unit(name: str) -> hd.sr.CodedConcept:
    stem = name.split(".")[0]
    if name.endswith(".fail_fraction"):
        return RATIO
    return next((u for part, u in UNITS.items() if part in stem), UNITLESS)


def _finite(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    return None


def _num(name: hd.sr.CodedConcept, value: float, unit: hd.sr.CodedConcept) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=value, unit=unit)


def _refs(
    uids: Iterable[str], classes: Mapping[str, str]
) -> list[hd.sr.SourceImageForMeasurementGroup]:
    return [hd.sr.SourceImageForMeasurementGroup(classes[u], u) for u in uids if u in classes]


def _tracking(series_uid: str, what: str) -> hd.sr.TrackingIdentifier:
    uid = generate_uid(entropy_srcs=["qc-group", series_uid, what])
    return hd.sr.TrackingIdentifier(uid=uid, identifier=what[:64])


def _series_group(
    qc: QC, classes: Mapping[str, str], series_uid: str, protocol: str | None
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    measurements = [
        _num(private(name, name), v, _unit(name))
        for name, raw in qc.metrics.items()
        if (v := _finite(raw)) is not None
    ]
    params = [f"protocol={protocol}"] if protocol else None
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(series_uid, "QC of the series"), finding_type=IMAGE_QUALITY,
        algorithm_id=hd.sr.AlgorithmIdentification("scanner-agent QC", __version__, params),
        measurements=measurements or None,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(SERIES_QUALITY, STATUS_CODES[qc.status])],
    )  # fmt: skip


def _reason_group(
    r: Reason, classes: Mapping[str, str], series_uid: str, worst: Sequence[str]
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    concept = ARTIFACTS.get(r.code) or private(r.code, r.code)
    unit = _unit(r.code)
    measurements = []
    for name, raw in ((private(r.code, r.code), r.value), (THRESHOLD, r.threshold)):
        if (v := _finite(raw)) is not None:
            measurements.append(_num(name, v, unit))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(series_uid, f"QC reason {r.code}"), finding_type=concept,
        measurements=measurements or None, source_images=_refs(worst, classes) or None,
    )  # fmt: skip
    return with_texts(group, [text(COMMENT, r.message)])


def qc_sr(
    qc: QC,
    header: Dataset,
    instances: Sequence[tuple[str, str]],
    *,
    protocol: str | None = None,
    series_number: int = 9901,
    series_instance_uid: str | None = None,
    worst: Mapping[str, Sequence[str]] | None = None,
) -> hd.sr.ComprehensiveSR:
    """The TID 1500 report of ``qc`` for one series. ``header`` is any instance of it
    (pixels not needed: the patient, study and series attributes are all it reads);
    ``instances`` are its ``(SOPClassUID, SOPInstanceUID)`` pairs, from the journal, so the
    series is never re-read. ``worst`` maps a reason code to its worst images' SOP instance
    UIDs (:func:`worst_images`). A new series UID is generated unless given.
    """
    if not instances:
        raise ValueError("a QC SR needs at least one source image")
    ctx = study_context(header, "QC SR")
    classes = {inst: cls for cls, inst in instances}
    series_uid = str(header.SeriesInstanceUID)
    groups = [_series_group(qc, classes, series_uid, protocol)]
    groups += [_reason_group(r, classes, series_uid, (worst or {}).get(r.code, ()))
               for r in qc.reasons]  # fmt: skip
    return measurement_report(
        ctx, evidence(ctx, header, instances), groups, [], role="QC",
        procedures=[procedure(str(header.get("Modality", ""))), QUALITY_ANALYSIS],
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=series_number, series_description=SERIES_DESCRIPTION,
    )  # fmt: skip


def worst_images(
    qc: QC, measurements: Iterable[ImageMeasurement], protocol: Protocol | None
) -> dict[str, list[str]]:
    """Per numeric reason, the image whose value of that metric (the protocol's key for it)
    is the series' worst, i.e. the reason's value: the key image to look at first."""
    best: dict[str, tuple[float, str]] = {}
    wanted = {r.code: v for r in qc.reasons if (v := _finite(r.value)) is not None}
    keys = {c: protocol.metric_key(c) if protocol and c in protocol.metrics else c for c in wanted}
    for m in measurements:
        for frame in m.frames:
            for code, target in wanted.items():
                value = frame.get(keys[code], math.nan)
                if math.isfinite(value):
                    gap = abs(value - target)
                    if code not in best or gap < best[code][0]:
                        best[code] = (gap, m.sop_instance_uid)
    return {code: [uid] for code, (_, uid) in best.items()}
