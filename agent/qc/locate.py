"""Where on the image a QC metric saw its artifact, for the key image's outline.

The metrics (:mod:`kernels.qc`) return one number per image and store no location, so these
pure functions recompute it from the same image the same way: ndarray in, a region out (None
when there is nothing to point at). Coordinates are pixels of the image passed in, rows
``y``, columns ``x``.

- :func:`ring_circle`: the centre (within half a pixel of the image centre) and radius where
  ``ring_z`` peaks (:func:`kernels.qc.ct_ring.ring_peak`).
- :func:`streak_band`: ``motion_streak_hu`` reads the air outside the body; the band is the
  box around the air blocks whose means stray furthest from the air around them (their
  median within 50 mm, which follows a head holder's or cushion's flat plateau).
- :func:`truncation_arc`: the stretch of the reconstruction circle where tissue is cut.
- :func:`metal_circle`: the metal and the annulus ``metal_streak_hu`` reads.
- :func:`wrap_edges`: the two phase-encode edge bands with signal at both ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from kernels.qc._common import as_image, polar
from kernels.qc._ct_scene import BODY_HU, METAL_HU, N_THETA, _px, kernel_radius
from kernels.qc.ct import _mad_sd, air_residual, scene  # the blocks motion_streak_hu reads
from kernels.qc.ct_ring import R0, ring_peak
from kernels.qc.mr import otsu


@dataclass(frozen=True, slots=True)
class Circle:
    cy: float
    cx: float
    r: float


@dataclass(frozen=True, slots=True)
class Box:
    """Rows ``y0..y1`` and columns ``x0..x1``, inclusive."""

    y0: float
    x0: float
    y1: float
    x1: float


@dataclass(frozen=True, slots=True)
class Arc:
    """Part of a circle, angles in degrees (0 = +x, counter-clockwise in row-down images:
    the angle ``a`` is the point ``(cy + r sin a, cx + r cos a)``)."""

    cy: float
    cx: float
    r: float
    start: float
    end: float


Region = Circle | Box | Arc


def ring_circle(slice_hu: object, spacing: object) -> Circle | None:
    """The ring of largest ``ring_z``: its centre (the rotation axis) and the peak radius."""
    s = scene(slice_hu, spacing)
    peak = ring_peak(s)
    if peak is None:
        return None
    h, w = s.hu.shape
    cy, cx, r0 = peak.cy, peak.cx, R0
    r1 = int(min(s.fov_radius - 6.0, min(h, w) / 2.0 - 6.0))  # as ring_peak samples
    p = polar(np.clip(s.hu, -1100.0, 1500.0), cy, cx, r0, r1, N_THETA)
    radii = np.arange(p.shape[1]) + r0
    best = int(peak.radius) - r0
    # ring_z's high-pass turns FBP's side lobes beside a ring into peaks as tall as the ring's
    # own; the ring itself is 2-3 px of one sign: refine to the strongest 3-px run nearby
    q = p.astype(np.float64) - ndimage.median_filter(p, size=(1, 11), mode="nearest")
    lo = q.shape[0] // 4
    signed = np.sort(q.T, axis=1)[:, lo : q.shape[0] - lo].mean(axis=1)
    run = np.abs(np.convolve(signed, np.ones(3), mode="same"))
    near = slice(max(best - 4, 0), min(best + 5, len(run)))
    return Circle(cy, cx, float(radii[near][int(np.argmax(run[near]))]))


def streak_band(slice_hu: object, spacing: object) -> Box | None:
    """The box around the air blocks that stray most from the air around them (the streaks)."""
    s = scene(slice_hu, spacing)
    air, res = air_residual(s)  # air blocks against their local median, as the metric reads
    if int(air.sum()) < 8:
        return None
    dev = np.abs(res)
    # streaks cross most air blocks in a bad scan: the band is the top quarter of them,
    # above the quantum-noise floor (from adjacent blocks, as motion_streak_hu takes it)
    pairs = air[:, 1:] & air[:, :-1]
    noise = _mad_sd((res[:, 1:] - res[:, :-1])[pairs]) / math.sqrt(2.0) if pairs.any() else 0.0
    hot = air & (dev > max(3.0 * noise, float(np.percentile(dev[air], 75))))
    if not hot.any():
        return None
    return _box_of(hot, dev, s.block)


def _box_of(hot: NDArray[np.bool_], weight: NDArray[np.float64], block: int) -> Box:
    """Bounding box (pixels) of the hot blocks nearest their weighted centre: the band
    holding most of the deviation, not every stray block."""
    ys, xs = np.nonzero(hot)
    wts = weight[ys, xs]
    cy, cx = np.average(ys, weights=wts), np.average(xs, weights=wts)
    d = np.hypot(ys - cy, xs - cx)
    keep = d <= np.percentile(d, 80)
    ys, xs = ys[keep], xs[keep]
    return Box(float(ys.min() * block), float(xs.min() * block),
               float((ys.max() + 1) * block - 1), float((xs.max() + 1) * block - 1))  # fmt: skip


def truncation_arc(slice_hu: object, spacing: object) -> Arc | None:
    """The longest run of the FOV circle where ``truncation_fraction`` counts a cut."""
    s = scene(slice_hu, spacing)
    if not math.isfinite(s.fov_radius):
        return None
    h, w = s.hu.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    r = s.fov_radius - 3.0
    depth = _px(5.0, s.spacing, 3)
    a = 2.0 * np.pi * np.arange(720) / 720
    cut = np.ones(720, bool)
    for rr in (r, r - depth):
        y = np.clip(np.round(cy + rr * np.sin(a)), 0, h - 1).astype(int)
        x = np.clip(np.round(cx + rr * np.cos(a)), 0, w - 1).astype(int)
        cut &= s.hu[y, x] > BODY_HU
    if not cut.any():
        return None
    start, length = _longest_circular_run(cut)
    return Arc(cy, cx, float(s.fov_radius), start * 0.5, (start + length) * 0.5)


def _longest_circular_run(flags: NDArray[np.bool_]) -> tuple[int, int]:
    n = len(flags)
    if flags.all():
        return 0, n
    shift = int(np.argmin(flags))  # start the walk at a gap so no run wraps
    rolled = np.roll(flags, -shift)
    best, best_start, run = 0, 0, 0
    for i, f in enumerate(rolled):
        run = run + 1 if f else 0
        if run > best:
            best, best_start = run, i - run + 1
    return (best_start + shift) % n, best


def metal_circle(slice_hu: object, spacing: object) -> Circle | None:
    """The metal's centroid and the outer radius of the annulus its streaks are read in."""
    s = scene(slice_hu, spacing)
    h, w = s.hu.shape
    yy, xx = np.mgrid[:h, :w]
    fov_r = kernel_radius(s.hu, s.fov_radius)
    inside = (yy - (h - 1) / 2.0) ** 2 + (xx - (w - 1) / 2.0) ** 2 < fov_r**2
    metal = (s.hu > METAL_HU) & inside
    n = int(metal.sum())
    if n < 3:
        return None
    r = math.sqrt(n / math.pi) + _px(45.0, s.spacing, 13)
    return Circle(float(yy[metal].mean()), float(xx[metal].mean()), float(r))


def wrap_edges(img: object, pe_axis: int) -> tuple[Box, Box] | None:
    """The edge bands (2% of the phase-encode lines at each end) over the readout positions
    with signal at both ends, as ``wrap_fraction`` counts them."""
    x = as_image(img)
    ax = 0 if pe_axis == 0 else 1
    k = max(2, x.shape[ax] // 50)
    t = 0.5 * otsu(x)
    lo = np.take(x, np.arange(k), axis=ax).mean(axis=ax)
    hi = np.take(x, np.arange(x.shape[ax] - k, x.shape[ax]), axis=ax).mean(axis=ax)
    both = np.nonzero((lo > t) & (hi > t))[0]
    if both.size == 0:
        return None
    a, b = float(both.min()), float(both.max())
    n = x.shape[ax]
    if ax == 0:  # phase encode along rows: bands at the top and bottom
        return Box(0, a, k - 1, b), Box(n - k, a, n - 1, b)
    return Box(a, 0, b, k - 1), Box(a, n - k, b, n - 1)


def locate(metric: str, image: object, spacing: object, pe_axis: int | None = None) -> list[Region]:
    """The regions for a graded metric (``metric`` as the protocol's ``metric_key``); [] when
    the metric has no location (noise, air calibration, DX exposure) or none is found."""
    if metric in ("ring_z", "ring_hu"):
        found: Region | tuple[Box, Box] | None = ring_circle(image, spacing)
    elif metric == "motion_streak_hu":
        found = streak_band(image, spacing)
    elif metric == "truncation_fraction":
        found = truncation_arc(image, spacing)
    elif metric in ("metal_streak_hu", "metal_area_mm2"):
        found = metal_circle(image, spacing)
    elif metric == "wrap_fraction" and pe_axis is not None:
        found = wrap_edges(image, pe_axis)
    else:
        found = None
    if found is None:
        return []
    return list(found) if isinstance(found, tuple) else [found]
