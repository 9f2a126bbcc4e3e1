"""The shared intermediates of the CT metrics: field of view, body mask, block tables.

Split from :mod:`kernels.qc.ct` (which re-exports :func:`scene` and :class:`CTScene`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kernels.qc._common import F32, F64, as_image, as_spacing, kernel

PAD_HU = -1500.0  # below any real tissue or air; scanners pad with -3024 or lower
BODY_HU = -500.0  # halfway between air and soft tissue
METAL_HU = 3000.0  # above cortical bone; standard 12-bit CT saturates at 3071
N_THETA = 180


@dataclass(frozen=True)
class CTScene:
    """Intermediates shared by the CT metrics of one slice.

    Window statistics come from non-overlapping blocks of about 3.5 mm: one
    pass over the slice fills four small tables, and every window metric reads
    those instead of the pixels. (Full-resolution summed-area tables cost more
    than all the metrics together at 512^2: they are memory-bound.)
    """

    hu: F32
    spacing: tuple[float, float]
    fov_radius: float  # pixels about the image centre; inf = square FOV (no padding)
    block: int  # block side in pixels
    bsum: F64  # per block: sum of HU clipped to [-1100, 3100]
    bsum2: F64  # per block: sum of squared clipped HU
    bbody: F64  # per block: body pixels (> -500 HU inside the FOV)
    bfov: F64  # per block: pixels inside the FOV


def scene(slice_hu: object, spacing: object) -> CTScene:
    """Validate one slice and compute the intermediates the metrics share."""
    hu = as_image(slice_hu, "slice_hu")
    sp = as_spacing(spacing)
    pad = _pad_level(hu)
    r = float(_fov_radius(hu, pad, pad > PAD_HU))
    r = r if r > 0 else math.inf
    b = _px(3.5, sp, 3)
    bsum, bsum2, bbody, bfov = _block_stats(hu, kernel_radius(hu, r), b)
    return CTScene(hu, sp, r, b, bsum, bsum2, bbody, bfov)


def _pad_level(hu: F32) -> float:
    """HU at or below which a pixel is outside the reconstruction circle.

    Scanners pad with -3024/-2048 (below PAD_HU), or write one constant air value
    (-1000, -1024) outside the circle. Reconstructed air is never exactly constant, so
    four identical corners below BODY_HU mark such padding; the level is then that value.
    """
    c = (hu[0, 0], hu[0, -1], hu[-1, 0], hu[-1, -1])
    if c[0] < BODY_HU and all(v == c[0] for v in c) and c[0] > PAD_HU:
        return float(c[0])
    return PAD_HU


def kernel_radius(hu: F32, fov_radius: float) -> float:
    """The FOV radius as the kernels take it: finite (past the image corners when square).

    The kernels are compiled with fastmath, which assumes no infinities: an infinite
    radius there silently breaks the circle tests (the cause of NaN noise, air and motion
    on slices without padding). Python code keeps ``inf`` to mean "square FOV".
    """
    return fov_radius if math.isfinite(fov_radius) else float(hu.shape[0] + hu.shape[1])


@kernel
def _fov_radius(hu: F32, pad: float, exact: bool) -> float:  # pragma: no cover - compiled
    """Radius of the reconstruction circle from where padding ends on each row.

    Padding is ``<= pad``, or ``== pad`` when ``exact`` (constant air padding). Each
    row with padding at its left end gives one estimate
    sqrt((x_first - cx)^2 + (y - cy)^2); the median ignores rows where a dark
    streak touches the padding. Fewer than 10% such rows: no circular FOV.
    """
    h, w = hu.shape
    cy = (h - 1) / 2.0
    cx = (w - 1) / 2.0
    est = np.empty(h, np.float64)
    n = 0
    for y in range(h):
        if not _is_pad(hu[y, 0], pad, exact):
            continue
        x = 0
        while x < w and _is_pad(hu[y, x], pad, exact):
            x += 1
        if x < w:
            est[n] = math.sqrt((x - cx) ** 2 + (y - cy) ** 2)
            n += 1
    if n < 0.1 * h:
        return -1.0  # no circular FOV (the caller turns this into inf)
    return float(np.median(est[:n]))


@kernel
def _is_pad(v: float, pad: float, exact: bool) -> bool:  # pragma: no cover - compiled
    return v == pad if exact else v <= pad


@kernel
def _block_stats(
    hu: F32, fov_r: float, b: int
) -> tuple[F64, F64, F64, F64]:  # pragma: no cover - compiled
    """Per-block sums of clipped HU, its square, body and FOV pixel counts.

    Clipping to [-1100, 3100] keeps padding and metal from swamping window
    statistics. Rows and columns past the last whole block are left out.
    """
    h, w = hu.shape
    nby = h // b
    nbx = w // b
    cy = (h - 1) / 2.0
    cx = (w - 1) / 2.0
    r2 = fov_r * fov_r
    s1 = np.zeros((nby, nbx), np.float64)
    s2 = np.zeros((nby, nbx), np.float64)
    body = np.zeros((nby, nbx), np.float64)
    fov = np.zeros((nby, nbx), np.float64)
    for y in range(nby * b):
        by = y // b
        # the FOV circle spans [x_lo, x_hi) on this row: one sqrt per row, not a test per pixel
        half = math.sqrt(max(r2 - (y - cy) ** 2, 0.0))
        x_lo = max(0, min(nbx * b, math.ceil(cx - half)))
        x_hi = max(x_lo, min(nbx * b, math.floor(cx + half) + 1))
        for bx in range(nbx):
            a1 = 0.0
            a2 = 0.0
            nb = 0.0
            for x in range(bx * b, bx * b + b):
                v = min(max(hu[y, x], -1100.0), 3100.0)
                a1 += v
                a2 += v * v
                if v > BODY_HU and x_lo <= x < x_hi:
                    nb += 1.0
            s1[by, bx] += a1
            s2[by, bx] += a2
            body[by, bx] += nb
            fov[by, bx] += max(0, min(x_hi, bx * b + b) - max(x_lo, bx * b))
    return s1, s2, body, fov


def _px(mm: float, sp: tuple[float, float], lo: int = 1) -> int:
    """Millimetres to whole pixels at the mean spacing, at least ``lo``."""
    return max(lo, round(mm / (0.5 * (sp[0] + sp[1]))))


def _get(sc: CTScene | None, slice_hu: object, spacing: object) -> CTScene:
    return sc if sc is not None else scene(slice_hu, spacing)
