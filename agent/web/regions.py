"""What the key image shows: which slice drove the verdict, which window, which outline.

Pure functions over what the journal holds (the latest Verdict dict, the per-image
measurements) and over pixel arrays; :mod:`agent.web.key_image` reads the journal and draws.

The slice that drove the verdict:

1. a triage finding at ``stat`` or ``urgent`` (active models only): its top slice;
2. else the QC reason at the worst level (``fail`` before ``warn``, then the one furthest
   beyond its level, as a ratio): the image whose metric value is the reason's worst value.
   A reason names its protocol entry (``ring_hu``), which may grade another metric
   (``ring_z``); the stored per-image metrics tell which, because the reason's value is
   exactly one image's value of that metric;
3. else the middle slice, with nothing outlined.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.qc.locate import Box, Region, locate

F32 = NDArray[np.float32]
URGENT = ("stat", "urgent")
HEAD_WORDS = ("HEAD", "BRAIN", "SKULL", "CRAN", "KOPF", "SCHAEDEL")
CHEST_WORDS = ("CHEST", "THORAX", "LUNG", "THOR")
_WINDOWS = {  # (centre, width) HU
    "brain": (40.0, 80.0),
    "lung": (-600.0, 1500.0),
    "soft tissue": (40.0, 400.0),
    "air": (-1000.0, 300.0),  # motion streaks in the air around the body: +-100 HU
}
AIR_METRICS = frozenset({"motion_streak_hu"})  # read in the air: shown there at the air window


@dataclass(frozen=True, slots=True)
class Image:
    """One stored image of the series, as the journal knows it."""

    instance_id: int
    sop_instance_uid: str
    path: str
    order: float  # slice position, else instance number, else arrival
    frames: tuple[Mapping[str, float], ...] = ()  # measured metrics per frame


@dataclass(frozen=True, slots=True)
class Driver:
    """The slice to show and why; ``metric`` None: nothing to outline (triage, or a pass)."""

    image: Image
    frame: int = 0
    kind: str = "none"  # qc | triage | none
    code: str = ""  # the reason's code or the finding's label
    metric: str | None = None
    value: float | None = None
    threshold: float | None = None
    flagged: frozenset[int] = field(default_factory=frozenset)  # instance ids to mark
    model: str = ""  # the finding's model, name@version

    def caption(self) -> str:
        if self.kind == "none" or self.value is None:
            return "no finding: middle slice"
        if self.kind == "triage":
            return f"{self.code} score {self.value:.3f} (urgent at {self.threshold or 0:.3f})"
        level = "" if self.threshold is None else f" (level {self.threshold:.4g})"
        return f"{self.code}: {self.value:.4g}{level}"


def choose(verdict: Mapping[str, Any] | None, images: Sequence[Image]) -> Driver | None:
    """The driver of ``verdict`` among ``images`` (in slice order); None without images."""
    if not images:
        return None
    doc = verdict or {}
    return (
        _triage_driver(doc, images) or _qc_driver(doc, images) or Driver(images[len(images) // 2])
    )


def _triage_driver(doc: Mapping[str, Any], images: Sequence[Image]) -> Driver | None:
    triage = doc.get("triage")
    findings = triage.get("findings") if isinstance(triage, Mapping) else None
    if not isinstance(findings, list):
        return None
    live = [f for f in findings if isinstance(f, Mapping) and f.get("priority") in URGENT
            and f.get("mode", "active") == "active"]  # fmt: skip
    if not live:
        return None
    best = max(live, key=lambda f: _num(f.get("score")) or 0.0)
    by_sop = {i.sop_instance_uid: i for i in images}
    slices = [by_sop[s] for s in best.get("slices") or [] if isinstance(s, str) and s in by_sop]
    if not slices:
        return None
    return Driver(slices[0], kind="triage", code=str(best.get("label", "")),
                  value=_num(best.get("score")), threshold=_num(best.get("threshold")),
                  flagged=frozenset(i.instance_id for i in slices),
                  model=str(best.get("model", "")))  # fmt: skip


def _qc_driver(doc: Mapping[str, Any], images: Sequence[Image]) -> Driver | None:
    qc = doc.get("qc")
    reasons = qc.get("reasons") if isinstance(qc, Mapping) else None
    if not isinstance(reasons, list):
        return None
    graded = [r for r in reasons if isinstance(r, Mapping) and _num(r.get("value")) is not None
              and r.get("code") != "measurement_error"]  # fmt: skip
    graded.sort(key=_severity)
    for reason in graded:
        found = _worst_image(reason, images)
        if found is not None:
            return found
    return None


def _severity(reason: Mapping[str, Any]) -> tuple[bool, float]:
    """Sort key: failing reasons first, then the furthest beyond its level (by ratio)."""
    fails = "fail level" in str(reason.get("message", ""))
    value, threshold = _num(reason.get("value")) or 0.0, _num(reason.get("threshold"))
    if not threshold or not value:
        return not fails, 0.0
    ratio = abs(value / threshold)
    return not fails, -max(ratio, 1.0 / ratio)


def _worst_image(reason: Mapping[str, Any], images: Sequence[Image]) -> Driver | None:
    """The image and frame whose value of some metric is the reason's worst value."""
    value = _num(reason.get("value"))
    code = str(reason.get("code", ""))
    assert value is not None
    for metric in _candidate_metrics(code, images):
        for image in images:
            for k, frame in enumerate(image.frames):
                v = frame.get(metric, math.nan)
                if math.isfinite(v) and math.isclose(round(v, 6), value, abs_tol=1e-6):
                    threshold = _num(reason.get("threshold"))
                    flagged = _beyond(images, metric, value, threshold)
                    return Driver(image, k, "qc", code, metric, value, threshold, flagged)
    return None


def _candidate_metrics(code: str, images: Sequence[Image]) -> list[str]:
    """The reason's own name first, then every other measured metric."""
    names = sorted({k for i in images for f in i.frames for k in f})
    return [code, *(n for n in names if n != code)] if code in names else names


def _beyond(
    images: Sequence[Image], metric: str, worst: float, threshold: float | None
) -> frozenset[int]:
    """Images at or beyond ``threshold`` on the side of it where ``worst`` lies."""
    if threshold is None:
        return frozenset()
    sign = 1.0 if worst >= threshold else -1.0
    return frozenset(
        i.instance_id for i in images for f in i.frames
        if math.isfinite(v := f.get(metric, math.nan)) and sign * v >= sign * threshold
    )  # fmt: skip


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


# -- windows ---------------------------------------------------------------------------------


def window_name(modality: str, body_part: str, description: str) -> str:
    """``brain`` for head CT, ``lung`` for a chest CT named for the lungs, ``soft tissue`` for
    other CT, ``percentile`` for MR, DX and the rest."""
    if modality.upper() != "CT":
        return "percentile"
    words = f"{body_part} {description}".upper()
    if any(w in words for w in HEAD_WORDS):
        return "brain"
    if any(w in words for w in CHEST_WORDS):
        return "lung" if "LUNG" in words else "soft tissue"
    return "soft tissue"


def apply_window(pixels: F32, name: str) -> NDArray[np.uint8]:
    """Grey levels 0..255: a fixed HU window, or the 1st..99th percentile."""
    if name in _WINDOWS:
        centre, width = _WINDOWS[name]
        lo, hi = centre - width / 2.0, centre + width / 2.0
    else:
        finite = pixels[np.isfinite(pixels)]
        if finite.size == 0:
            return np.zeros(pixels.shape, np.uint8)
        lo, hi = (float(v) for v in np.percentile(finite, [1.0, 99.0]))
    span = max(hi - lo, 1e-6)
    out = np.clip((pixels - lo) / span, 0.0, 1.0) * 255.0
    grey: NDArray[np.uint8] = np.nan_to_num(out).astype(np.uint8)
    return grey


# -- outlines --------------------------------------------------------------------------------


def outline(
    driver: Driver, pixels: F32, spacing: tuple[float, float] | None, pe_axis: int | None
) -> list[Region]:
    """The regions to draw on the driver's slice (pixel coordinates of ``pixels``)."""
    if driver.kind == "triage":
        return [score_box(pixels)]
    if driver.metric is None or (spacing is None and driver.metric != "wrap_fraction"):
        return []
    try:
        return locate(driver.metric, pixels, spacing or (1.0, 1.0), pe_axis)
    except ValueError:  # an image the metric could not read (too small, not finite)
        return []


def score_box(pixels: F32) -> Box:
    """The model scores the whole slice and names no place on it: the box is the scored
    anatomy (tissue above -500 HU), which the caption labels with the slice's score."""
    body = np.isfinite(pixels) & (pixels > -500.0)
    if not body.any():
        h, w = pixels.shape
        return Box(0.0, 0.0, float(h - 1), float(w - 1))
    ys, xs = np.nonzero(body)
    return Box(float(ys.min()), float(xs.min()), float(ys.max()), float(xs.max()))
