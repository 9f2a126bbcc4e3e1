"""Per-slice CT quality metrics on a 2D slice in Hounsfield units.

Each public metric takes ``(slice_hu, spacing)`` (spacing = (row, col) mm) and
returns a float. They share a :class:`CTScene` (field of view, body mask,
summed-area tables) which :func:`scene` builds once; :func:`kernels.qc.ct_metrics`
builds it once for all metrics, a standalone call builds its own.

Conventions, all measured from the image alone:
- Reconstruction field of view (FOV): pixels <= -1500 HU are scanner padding
  (-3024/-3040 outside the reconstruction circle). Without padding the FOV is
  the whole square image.
- Body: -500 HU < value, inside the FOV.
- A metric that cannot be measured on this slice (no soft tissue, no air)
  returns NaN rather than a made-up number.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from kernels.qc._common import F32, F64, highpass_rows, kernel, polar
from kernels.qc._ct_scene import (
    BODY_HU,
    METAL_HU,
    N_THETA,
    PAD_HU,
    CTScene,
    _get,
    _px,
    kernel_radius,
    scene,
)
from kernels.qc.ct_ring import ring_hu, ring_stats, ring_z

__all__ = ["PAD_HU", "CTScene", "ct_metrics", "ring_hu", "ring_z", "scene"]

# --- noise -----------------------------------------------------------------


def noise_hu(slice_hu: object, spacing: object, sc: CTScene | None = None) -> float:
    """Image noise (HU) in automatically found uniform soft tissue.

    Windows of ~7 mm side (stride half a window) that lie wholly in the body and
    have mean 0..100 HU are soft-tissue candidates; the noise is the 25th
    percentile of their standard deviations. Christianson et al., AJR 2015
    ("Automated technique to measure noise in clinical CT examinations") take
    the mode of the same local-SD histogram; a low percentile is close to the
    mode of this right-skewed distribution and steadier with few windows.
    Edges between tissues raise a window's SD, so they sit in the upper tail.
    """
    s = _get(sc, slice_hu, spacing)
    return float(_noise_kernel(s.bsum, s.bsum2, s.bbody, s.block))


@kernel
def _noise_kernel(s1: F64, s2: F64, body: F64, b: int) -> float:  # pragma: no cover
    """25th percentile SD of 2x2-block windows wholly in body with mean 0..100 HU."""
    nby, nbx = s1.shape
    area = 4.0 * b * b
    sds = np.empty(max((nby - 1) * (nbx - 1), 1), np.float64)
    n = 0
    for y in range(nby - 1):
        for x in range(nbx - 1):
            if body[y, x] + body[y + 1, x] + body[y, x + 1] + body[y + 1, x + 1] < area:
                continue
            m = (s1[y, x] + s1[y + 1, x] + s1[y, x + 1] + s1[y + 1, x + 1]) / area
            if m < 0.0 or m > 100.0:
                continue
            q = (s2[y, x] + s2[y + 1, x] + s2[y, x + 1] + s2[y + 1, x + 1]) / area
            sds[n] = math.sqrt(max(q - m * m, 0.0) * area / (area - 1.0))
            n += 1
    if n < 3:
        return np.nan
    return float(np.percentile(sds[:n], 25.0))


def noise_lf_hu(slice_hu: object, spacing: object, sc: CTScene | None = None) -> float:
    """Noise (HU) of 3.5 mm averages in flat soft tissue: the dose metric that QC grades.

    Pixel noise (:func:`noise_hu`) triples from a smooth 128^2 to a sharp 512^2
    reconstruction of the same dose, so no one threshold fits it. FBP noise power falls
    towards low frequencies the same way whatever the matrix and kernel, so the noise of
    ~3.5 mm block means tracks dose instead (scaled by (block mm / 3.5)^1.5, the
    ramp-filter noise law, to the nominal 3.5 mm where the block is larger).

    At that scale real anatomy (organ borders, fat strands, bowel) is as strong as the
    noise: on a real abdomen, differences of adjacent block means read 14-21 HU at a
    normal dose and rose only a third at a twelfth of it. So only flat blocks are used,
    found by what is measurable at the pixel scale, where noise dominates: soft-tissue
    blocks (mean -100..200 HU, wholly in body) whose pixel SD is at most 1.5x the 25th
    percentile of those SDs (a border inside a block raises its SD). Three flat blocks in
    a row give a second difference m0 - 2 m1 + m2, blind to smooth gradients (cupping,
    beam hardening); sigma = 1.4826 MAD / sqrt(6). NaN with fewer than 8 such triples.
    """
    s = _get(sc, slice_hu, spacing)
    flat, means = _flat_blocks(s)
    if flat is None:
        return float("nan")
    rows = flat[:, 2:] & flat[:, 1:-1] & flat[:, :-2]
    cols = flat[2:, :] & flat[1:-1, :] & flat[:-2, :]
    d2 = np.concatenate(
        [
            (means[:, 2:] - 2.0 * means[:, 1:-1] + means[:, :-2])[rows],
            (means[2:, :] - 2.0 * means[1:-1, :] + means[:-2, :])[cols],
        ]
    )
    if d2.size < 8:
        return float("nan")
    block_mm = s.block * 0.5 * (s.spacing[0] + s.spacing[1])
    return float(_mad_sd(d2) / math.sqrt(6.0) * (block_mm / 3.5) ** 1.5)


def _flat_blocks(s: CTScene) -> tuple[NDArray[np.bool_] | None, F64]:
    """(flat soft-tissue blocks, block means); None when under 8 soft-tissue blocks."""
    area = float(s.block * s.block)
    means: F64 = s.bsum / area
    soft = (s.bbody >= area) & (means > -100.0) & (means < 200.0)
    if int(soft.sum()) < 8:
        return None, means
    sd = np.sqrt(np.maximum(s.bsum2 / area - means * means, 0.0) * area / (area - 1.0))
    flat = soft & (sd <= 1.5 * float(np.percentile(sd[soft], 25.0)))
    return flat, means


# --- air: HU calibration and motion proxy -----------------------------------


def air_hu(slice_hu: object, spacing: object, sc: CTScene | None = None) -> float:
    """Median HU of air inside the FOV at least 5 mm from any body pixel.

    Air is -1000 HU by definition of the HU scale; a well-calibrated scanner
    reads within a few HU of it (ACR CT accreditation phantom manual: air
    -1005..-970 HU). NaN when the slice has no such air.
    """
    return float(_air_stats(_get(sc, slice_hu, spacing))[0])


def air_hu_error(slice_hu: object, spacing: object, sc: CTScene | None = None) -> float:
    """|median air HU + 1000|: the HU calibration error (see :func:`air_hu`)."""
    return abs(air_hu(slice_hu, spacing, sc) + 1000.0)


def motion_streak_hu(slice_hu: object, spacing: object, sc: CTScene | None = None) -> float:
    """Motion proxy: robust SD (HU) of narrow structure in ~3.5 mm air block means.

    Motion makes the projections inconsistent; filtered back-projection turns
    the inconsistency at high-contrast edges (skull, ribs, the body outline)
    into streaks and doubled edges that run beyond the object into the
    surrounding air, where a consistent scan is flat. This is the data-consistency
    idea behind autofocus metrics (Rohkohl et al., Med Phys 2013, "MAM"),
    measured where anatomy cannot contribute; see :func:`_air_stats` for how noise and
    static air structure (head holders, cushions) are kept out. It also rises with
    metal streaks; read it together with metal_area_mm2.
    """
    return float(_air_stats(_get(sc, slice_hu, spacing))[1])


BACKGROUND_MM = 50.0  # side of the local-median window that follows flat air plateaus


def _air_stats(s: CTScene) -> tuple[float, float]:
    """(median air HU, streak SD of air block means); NaN, NaN with under 8 air blocks.

    Clean air is piecewise flat: air, and a head holder's or cushion's plateau (on the
    real head CT, foam at -950..-965 HU). Each block is compared with the median of the
    air blocks within 50 mm, which follows a plateau up to its edge; a streak a few mm
    wide stands out. The robust SD (1.4826 MAD) of that residual holds streaks and
    noise; half the variance of adjacent-block differences, along rows or columns,
    whichever is smaller (a streak runs along one), is the noise part, subtracted.
    Without the median the real head read 10 HU clean, 14 at a low dose.
    """
    air, res = air_residual(s)
    if int(air.sum()) < 8:
        return float("nan"), float("nan")
    total = _mad_sd(res[air]) ** 2
    noise = [
        0.5 * _mad_sd(d[pairs]) ** 2
        for d, pairs in (
            (res[:, 1:] - res[:, :-1], air[:, 1:] & air[:, :-1]),
            (res[1:, :] - res[:-1, :], air[1:, :] & air[:-1, :]),
        )
        if int(pairs.sum()) >= 8
    ]
    streak = math.sqrt(max(total - min(noise, default=0.0), 0.0))
    return float(_air_median(s.hu, air, s.block)), streak


def air_residual(s: CTScene) -> tuple[NDArray[np.bool_], F64]:
    """(air blocks, block mean minus the median of the air blocks within 50 mm; 0 off air)."""
    reach = max(1, math.ceil(5.0 / (s.block * min(s.spacing))))  # blocks covering >= 5 mm
    air = _air_blocks(s.bbody, s.bfov, s.block, reach)
    means = s.bsum / (s.block * s.block)
    k = max(1, round(BACKGROUND_MM / (2.0 * s.block * min(s.spacing))))
    res: F64 = np.where(air, means - _local_air_median(means, air, k), 0.0)
    return air, res


@kernel
def _local_air_median(means: F64, air: NDArray[np.bool_], k: int) -> F64:  # pragma: no cover
    """Per air block, the median of the air block means within k blocks (0 elsewhere)."""
    nby, nbx = means.shape
    out = np.zeros((nby, nbx), np.float64)
    buf = np.empty((2 * k + 1) * (2 * k + 1), np.float64)
    for y in range(nby):
        for x in range(nbx):
            if not air[y, x]:
                continue
            n = 0
            for yy in range(max(0, y - k), min(nby, y + k + 1)):
                for xx in range(max(0, x - k), min(nbx, x + k + 1)):
                    if air[yy, xx]:
                        buf[n] = means[yy, xx]
                        n += 1
            out[y, x] = np.median(buf[:n])
    return out


def _mad_sd(v: F64) -> float:
    """1.4826 * MAD: the SD of the bulk, blind to a minority of outliers (table, cushions)."""
    return 1.4826 * float(np.median(np.abs(v - np.median(v))))


@kernel
def _air_blocks(body: F64, fov: F64, b: int, reach: int) -> NDArray[np.bool_]:  # pragma: no cover
    """Blocks wholly inside the FOV with no body pixel within ``reach`` blocks."""
    nby, nbx = body.shape
    out = np.zeros((nby, nbx), np.bool_)
    full = float(b * b)
    for y in range(reach, nby - reach):
        for x in range(reach, nbx - reach):
            if fov[y, x] < full:
                continue
            clear = True
            for yy in range(y - reach, y + reach + 1):
                for xx in range(x - reach, x + reach + 1):
                    if body[yy, xx] > 0.0 or fov[yy, xx] < full:
                        clear = False
            out[y, x] = clear
    return out


@kernel
def _air_median(hu: F32, air: NDArray[np.bool_], b: int) -> float:  # pragma: no cover
    """Median HU of the pixels of air blocks, to 1 HU, via a -2000..0 histogram."""
    hist = np.zeros(2001, np.int64)
    n = 0
    for by in range(air.shape[0]):
        for bx in range(air.shape[1]):
            if not air[by, bx]:
                continue
            for y in range(by * b, by * b + b):
                for x in range(bx * b, bx * b + b):
                    v = round(hu[y, x]) + 2000
                    if 0 <= v <= 2000:
                        hist[v] += 1
                        n += 1
    c = 0
    for i in range(2001):
        c += hist[i]
        if 2 * c >= n and n > 0:
            return i - 2000.0
    return np.nan


# --- metal -----------------------------------------------------------------


def metal_area_mm2(slice_hu: object, spacing: object, sc: CTScene | None = None) -> float:
    """Area (mm^2) above 3000 HU inside the FOV: metal (bone stays below it)."""
    s = _get(sc, slice_hu, spacing)
    n, _, _ = _metal_centroid(s.hu, kernel_radius(s.hu, s.fov_radius))
    return float(n * s.spacing[0] * s.spacing[1])


def metal_streak_hu(slice_hu: object, spacing: object, sc: CTScene | None = None) -> float:
    """Streak energy (HU RMS) of angular profiles about the metal; 0 without metal.

    Metal streaks are lines through the metal: in polar coordinates about its
    centroid they are narrow in theta and the same over a range of r. Over an
    annulus from 5 to 45 mm beyond the metal's equivalent radius we high-pass
    each angular profile (minus a 15-degree circular running mean), average
    over r (noise and anatomy are not radially coherent and shrink; streaks
    add up), and return the RMS over theta. Yazdi et al., Med Phys 2011 use the
    same angular signature to find streaks.
    """
    s = _get(sc, slice_hu, spacing)
    n, cy, cx = _metal_centroid(s.hu, kernel_radius(s.hu, s.fov_radius))
    if n < 3:
        return 0.0
    r_eq = math.sqrt(n / math.pi)
    r0 = int(r_eq) + _px(5.0, s.spacing, 3)
    r1 = r0 + _px(40.0, s.spacing, 10)
    clipped = np.clip(s.hu, -1100.0, 1500.0)
    p = polar(clipped, cy, cx, r0, r1, 2 * N_THETA)
    prof = highpass_rows(p.T.copy(), N_THETA // 12, True).mean(axis=0)
    return float(np.sqrt(np.mean(prof.astype(np.float64) ** 2)))


@kernel
def _metal_centroid(hu: F32, fov_r: float) -> tuple[int, float, float]:  # pragma: no cover
    h, w = hu.shape
    cy0 = (h - 1) / 2.0
    cx0 = (w - 1) / 2.0
    n = 0
    sy = 0.0
    sx = 0.0
    for y in range(h):
        for x in range(w):
            if hu[y, x] > METAL_HU and (y - cy0) ** 2 + (x - cx0) ** 2 < fov_r * fov_r:
                n += 1
                sy += y
                sx += x
    if n == 0:
        return 0, cy0, cx0
    return n, sy / n, sx / n


# --- truncation ------------------------------------------------------------


def truncation_fraction(slice_hu: object, spacing: object, sc: CTScene | None = None) -> float:
    """Fraction of the FOV boundary where the body is cut by it (0..1).

    A patient who extends beyond the scan FOV is cut at the reconstruction
    circle (or the image edge when the FOV is square). We sample the boundary
    3 pixels inside it, and count a sample as cut when tissue (> -500 HU) is
    there and also 5 mm further in, so a thin table shell crossing the circle
    counts only where it crosses.
    """
    s = _get(sc, slice_hu, spacing)
    depth = _px(5.0, s.spacing, 3)
    if math.isfinite(s.fov_radius):
        return float(_trunc_circle(s.hu, s.fov_radius - 3.0, depth))
    # No reconstruction circle in the image: a targeted (zoomed) reconstruction or a
    # crop, whose edge is not the scan field's. Tissue at the image edge says nothing
    # about truncation there (CT_small, a neck crop, read 0.64): not measurable.
    return float("nan")


@kernel
def _trunc_circle(hu: F32, r: float, depth: int) -> float:  # pragma: no cover - compiled
    h, w = hu.shape
    cy = (h - 1) / 2.0
    cx = (w - 1) / 2.0
    n = 720
    cut = 0
    for t in range(n):
        a = 2.0 * math.pi * t / n
        ok = True
        for rr in (r, r - depth):
            y = min(max(round(cy + rr * math.sin(a)), 0), h - 1)
            x = min(max(round(cx + rr * math.cos(a)), 0), w - 1)
            ok = ok and hu[y, x] > BODY_HU
        cut += 1 if ok else 0
    return cut / n


# --- all at once -----------------------------------------------------------


def ct_metrics(slice_hu: object, spacing: object) -> dict[str, float]:
    """All CT metrics of one slice, sharing one :class:`CTScene`."""
    s = scene(slice_hu, spacing)
    air, streak = _air_stats(s)
    ring = ring_stats(s)
    return {
        "noise_hu": noise_hu(s.hu, s.spacing, s),
        "noise_lf_hu": noise_lf_hu(s.hu, s.spacing, s),
        "ring_hu": ring[0],
        "ring_z": ring[1],
        "metal_area_mm2": metal_area_mm2(s.hu, s.spacing, s),
        "metal_streak_hu": metal_streak_hu(s.hu, s.spacing, s),
        "truncation_fraction": truncation_fraction(s.hu, s.spacing, s),
        "motion_streak_hu": float(streak),
        "air_hu": float(air),
        "air_hu_error": abs(float(air) + 1000.0),
    }
