"""Whether an image is what a model was made for, before it is scored (the manifest's ``gate``).

A model scores only its own kind of input: a head-CT model must never put a chest, a
32x32 patch or a localizer at the top of the list because its tags say HEAD. Each check
gives a short reason, which becomes the series' triage ``not_applicable`` reason when no
image passes. Header checks come first (cheap), then the pixels, then, at completion, the
body-part model's call on the whole series.

All values read here come from the network: they are parsed defensively and a value that
cannot be read is a reason, never an exception.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.domain.verdicts import BodyPartCall
from agent.triage.models import GateSpec

F32 = NDArray[np.float32]
# Below this a pixel is padding outside the scan circle (-2048, -3024...), not air.
PADDING_HU = -1500.0
MIN_CONTENT = 0.05  # share of the image that must lie inside the scan circle


def header_reason(gate: GateSpec, ds: Any) -> str | None:
    """Why the header rules the image out (modality, matrix, field of view, image type)."""
    modality = str(getattr(ds, "Modality", "") or "").upper()
    if gate.modalities and modality not in {m.upper() for m in gate.modalities}:
        return f"modality {modality or '(missing)'} is not {'/'.join(gate.modalities)}"
    if _int(getattr(ds, "SamplesPerPixel", 1)) != 1:
        return "a colour image (a screen capture?), not a grey-scale slice"
    image_type = {str(v).strip().upper() for v in _values(getattr(ds, "ImageType", None))}
    excluded = sorted(image_type & {t.upper() for t in gate.exclude_image_types})
    if excluded:
        return f"image type {excluded[0]}: not an axial image"
    rows, cols = _int(getattr(ds, "Rows", 0)), _int(getattr(ds, "Columns", 0))
    if min(rows, cols) < gate.min_matrix:
        return f"matrix {rows}x{cols} below {gate.min_matrix}x{gate.min_matrix}"
    if gate.field_of_view_mm is not None:
        low, high = gate.field_of_view_mm
        spacing = _spacing(ds)
        if spacing is None:
            return "no usable PixelSpacing: the field of view is unknown"
        fov = cols * spacing
        if not low <= fov <= high:
            return f"field of view {fov:.0f} mm outside {low:.0f}..{high:.0f} mm"
    return None


def pixel_reason(gate: GateSpec, frame: F32) -> str | None:
    """Why the pixel values rule the frame out: no air where a head CT always shows some,
    or values beyond what a correct rescale gives."""
    if gate.air_hu_at_most is None and gate.top_hu_at_most is None:
        return None
    inside = frame[frame > PADDING_HU]
    if inside.size < MIN_CONTENT * frame.size or inside.size == 0:
        return "almost nothing inside the scan circle"
    low, high = np.percentile(inside, [1.0, 99.0])
    if gate.air_hu_at_most is not None and low > gate.air_hu_at_most:
        return f"no air: 1st percentile {low:.0f} HU above {gate.air_hu_at_most:.0f} (rescale?)"
    if gate.top_hu_at_most is not None and high > gate.top_hu_at_most:
        return f"99th percentile {high:.0f} HU above {gate.top_hu_at_most:.0f} (rescale?)"
    return None


def body_part_reason(gate: GateSpec, call: BodyPartCall | None) -> str | None:
    """Why the body-part model vetoes the series: a confident call of another part."""
    if gate.body_part is None or call is None or not call.predicted:
        return None
    if call.predicted.upper() == gate.body_part.upper():
        return None
    return (
        f"the body-part model calls the series {call.predicted} ({call.score:.2f}), "
        f"not {gate.body_part.upper()}"
    )


def _values(raw: Any) -> list[Any]:
    if raw is None:
        return []
    if isinstance(raw, str | bytes):
        return [raw]
    try:
        return list(raw)
    except TypeError:
        return [raw]


def _int(raw: Any) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return 0


def _spacing(ds: Any) -> float | None:
    """Column spacing in mm from PixelSpacing, or from the enhanced CT's shared groups."""
    raw = getattr(ds, "PixelSpacing", None)
    if raw is None:
        shared: Any = getattr(ds, "SharedFunctionalGroupsSequence", None) or ()
        try:
            raw = shared[0].PixelMeasuresSequence[0].PixelSpacing
        except (AttributeError, IndexError, KeyError, TypeError):
            return None
    try:
        value = float(_values(raw)[-1])
    except (IndexError, TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None
