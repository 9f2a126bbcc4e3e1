"""Series QC: per-image measurements plus a protocol give one pass | warn | fail.

The rule (``aggregation`` in ``config/qc-protocols.yaml``; defaults in brackets):

- Each measured image (each measured frame of a multi-frame image) is graded per metric
  exactly as ``benchmarks/eval_qc.py`` graded its corpus when it chose the thresholds: a
  value at or beyond ``fail`` (``>=`` for direction high, ``<=`` for low) is a failing image,
  at or beyond ``warn`` a warning image.
- A metric **fails** the series when at least ``fail_fraction`` [10%] of the images where it
  could be measured fail it. A single-image series (DX, a scout) therefore fails on its one
  image, which is the per-image decision the thresholds were tuned for; a 300-slice CT
  needs 30 failing slices, so one odd slice at the vertex does not hold a study.
- A metric **warns** when at least ``warn_fraction`` [10%] of measured images reach warn,
  or when any image reaches fail but too few to fail the series.
- NaN means "not measurable on this image" (no air, no soft tissue, a constant
  background): such images are left out of that metric's fractions; eval_qc.py grades its
  held-out series through this same function. A metric measurable on no image gives no reason.
- Images that could not be measured at all (unreadable, undecodable) give a warning
  reason ``measurement_error``: QC fails open, it never holds a series it could not read.
- The series status is the worst over its metrics.

Reasons carry the metric's entry name as ``code`` (``ring_hu``,
``deviation_index_underexposure``), the worst value and the threshold it reached.
``metrics`` holds, per protocol metric, ``<name>.median``, ``<name>.worst`` and
``<name>.fail_fraction``, plus ``images_measured`` and ``images_failed_measurement``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from agent.domain.verdicts import QC, QCStatus, Reason
from agent.qc.image_qc import ImageMeasurement
from agent.qc.protocols import Aggregation, Protocol, Threshold

_STATUS: tuple[QCStatus, ...] = ("pass", "warn", "fail")


@dataclass(frozen=True, slots=True)
class SeriesFacts:
    """What the series says about itself: the journal's series row, or the files' headers."""

    study_uid: str
    series_uid: str
    modality: str = ""
    body_part: str = ""
    series_description: str = ""
    accession_number: str = ""
    station_name: str = ""
    last_image_at: float | None = None


def evaluate_series(
    measurements: Iterable[ImageMeasurement],
    protocol: Protocol | None,
    facts: SeriesFacts,
    aggregation: Aggregation | None = None,
) -> QC:
    """The series' QC from its images' measurements under ``protocol`` (None: no QC)."""
    ms = list(measurements)
    errors = [m for m in ms if m.error]
    frames = [f for m in ms if not m.error for f in m.frames]
    metrics: dict[str, float] = {
        "images_measured": float(len(ms) - len(errors)),
        "images_failed_measurement": float(len(errors)),
    }
    levels: list[int] = []
    reasons: list[Reason] = []
    if protocol is not None and frames:
        for name, thr in protocol.metrics.items():
            values = np.array(
                [f.get(protocol.metric_key(name), math.nan) for f in frames], dtype=np.float64
            )
            level, reason = _grade(name, thr, values, aggregation or Aggregation(), metrics)
            levels.append(level)
            if reason is not None:
                reasons.append(reason)
    if errors:
        levels.append(1)
        reasons.append(_error_reason(errors, len(ms)))
    reasons.sort(key=lambda r: r.code)
    status = _STATUS[max(levels, default=0)]
    return QC(status=status, reasons=tuple(reasons), metrics=metrics)


def _grade(
    name: str,
    thr: Threshold,
    values: NDArray[np.float64],
    agg: Aggregation,
    out: dict[str, float],
) -> tuple[int, Reason | None]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0, None
    sign = 1.0 if thr.direction == "high" else -1.0
    signed = sign * v
    worst = float(sign * signed.max())
    n_fail = 0 if thr.fail is None else int(np.count_nonzero(signed >= sign * thr.fail))
    n_warn = int(np.count_nonzero(signed >= sign * thr.warn))
    out[f"{name}.median"] = float(np.median(v))
    out[f"{name}.worst"] = worst
    out[f"{name}.fail_fraction"] = n_fail / v.size
    if n_fail and n_fail >= agg.fail_fraction * v.size:
        level, threshold, hit = 2, float(thr.fail or 0.0), n_fail
    elif n_fail or (n_warn and n_warn >= agg.warn_fraction * v.size):
        level, threshold, hit = 1, thr.warn, n_warn
    else:
        return 0, None
    op = ">=" if thr.direction == "high" else "<="
    word = "fail" if level == 2 else "warn"
    message = (
        f"{name}: {hit} of {v.size} images {op} {word} level {threshold:g} (worst {worst:.4g})"
    )
    return level, Reason(name, message, round(worst, 6), threshold)


def _error_reason(errors: list[ImageMeasurement], total: int) -> Reason:
    first = errors[0].error or ""
    return Reason(
        "measurement_error",
        f"{len(errors)} of {total} images could not be measured; first: {first[:200]}",
        len(errors),
        None,
    )


def facts_from_row(row: Mapping[str, object]) -> SeriesFacts:
    """SeriesFacts from the journal's ``series`` row."""

    def text(key: str) -> str:
        value = row.get(key)
        return str(value) if value is not None else ""

    last = row.get("last_received_at")
    return SeriesFacts(
        study_uid=text("study_uid"),
        series_uid=text("series_uid"),
        modality=text("modality"),
        body_part=text("body_part"),
        series_description=text("series_description"),
        accession_number=text("accession_number"),
        station_name=text("station_name"),
        last_image_at=float(last) if isinstance(last, int | float) else None,
    )
