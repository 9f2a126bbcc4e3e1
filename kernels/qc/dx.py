"""Per-image DX/CR quality metrics: exposure indices from tags, and image checks.

``tags`` maps DICOM keywords (``"ExposureIndex"``), integer tags
(``0x00181411``) or (group, element) pairs to values; a pydicom Dataset
converted with ``{e.keyword: e.value for e in ds}`` works as is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy import ndimage

from kernels.qc._common import F32, as_image

SHARPNESS_SIZE = 256  # working size (long side, pixels) of the sharpness metric
EI = ("ExposureIndex", 0x00181411)
EI_T = ("TargetExposureIndex", 0x00181412)
DI = ("DeviationIndex", 0x00181413)


def _tag(tags: Mapping[object, object], key: tuple[str, int]) -> float:
    """A numeric tag by keyword, int tag or (group, element); NaN when absent or bad."""
    kw, num = key
    for k in (kw, num, (num >> 16, num & 0xFFFF), f"{num:08X}"):
        if k in tags and tags[k] is not None:
            try:
                return float(tags[k])  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return float("nan")
    return float("nan")


def deviation_index(tags: Mapping[object, object]) -> float:
    """DI from (0018,1413), else DI = 10 * log10(EI / EI_T) (IEC 62494-1).

    EI is (0018,1411), the target EI_T (0018,1412). DI = 0 is on target; +1 is
    26% more dose, +3 double; AAPM TG-116 treats |DI| > 1 as needing review.
    """
    di = _tag(tags, DI)
    if math.isfinite(di):
        return di
    ei, eit = _tag(tags, EI), _tag(tags, EI_T)
    if not (ei > 0 and eit > 0):
        return float("nan")
    return 10.0 * math.log10(ei / eit)


def saturation_fraction(pixels: object) -> float:
    """Fraction of pixels on the top value of the image (detector saturation / clipping).

    A saturating detector or a clipped processing stage piles pixels onto one
    top value; an unclipped image has a handful there.
    """
    x = as_image(pixels, "pixels")
    return float(np.mean(x >= x.max()))


def clipping_fraction(pixels: object) -> float:
    """Fraction of pixels on the bottom value of the image (underflow / clipping)."""
    x = as_image(pixels, "pixels")
    return float(np.mean(x <= x.min()))


def collimation_fraction(pixels: object) -> float:
    """Fraction of the image area covered by collimator shutters.

    A shuttered border line (row or column counted in from each edge) has a
    median below 25% of the way from the 1st percentile to the image median:
    the collimator leaves only scatter there. Tight collimation that cuts
    anatomy shows up as a large fraction.
    """
    x = as_image(pixels, "pixels")
    lo, med = np.percentile(x, [1, 50])
    cut = lo + 0.25 * (med - lo)
    rows = np.median(x, axis=1) < cut
    cols = np.median(x, axis=0) < cut
    top, bottom = _run(rows), _run(rows[::-1])
    left, right = _run(cols), _run(cols[::-1])
    h, w = x.shape
    field = max(h - top - bottom, 0) * max(w - left - right, 0)
    return float(1.0 - field / (h * w))


def _run(flags: np.ndarray) -> int:
    """Length of the leading run of True."""
    idx = np.flatnonzero(~flags)
    return int(idx[0]) if idx.size else int(flags.size)


def sharpness(pixels: object) -> float:
    """Variance of the Laplacian over the image variance, at a ~256-pixel working size.

    Motion blur removes high spatial frequencies; the variance of the
    Laplacian (Pech-Pacheco et al., ICPR 2000) measures what is left. Block means
    that bring the long side to about 256 pixels first drop quantum noise (pixel
    scale), so anatomy edges dominate, and make the value independent of the matrix
    (a detector at 3000 or 1000 pixels per side sees the same anatomy at 256);
    dividing by the variance makes it independent of dose and gain.
    """
    x = as_image(pixels, "pixels")
    f = max(1, round(max(x.shape) / SHARPNESS_SIZE))
    h, w = (x.shape[0] // f) * f, (x.shape[1] // f) * f
    if h // f < 16 or w // f < 16:
        return float("nan")  # too small to hold anatomy edges: not measurable
    small = x[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))
    v = float(small.var())
    # a flat image (v ~ 0) has no edges to be sharp or blurred: not measurable
    flat = v <= 1e-12 * (1.0 + float(np.abs(small).max()) ** 2)
    return float("nan") if flat else float(ndimage.laplace(small).var() / v)


def dx_metrics(pixels: object, tags: Mapping[object, object]) -> dict[str, float]:
    """All DX/CR metrics of one image."""
    x: F32 = as_image(pixels, "pixels")
    di = deviation_index(tags)
    return {
        "exposure_index": _tag(tags, EI),
        "target_exposure_index": _tag(tags, EI_T),
        "deviation_index": di,
        "deviation_index_abs": abs(di),
        "saturation_fraction": saturation_fraction(x),
        "clipping_fraction": clipping_fraction(x),
        "collimation_fraction": collimation_fraction(x),
        "sharpness": sharpness(x),
    }
