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
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from kernels.qc._common import (
    F32,
    F64,
    as_image,
    as_spacing,
    highpass_rows,
    kernel,
    polar,
)

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
    r = float(_fov_radius(hu, PAD_HU))
    b = _px(3.5, sp, 3)
    bsum, bsum2, bbody, bfov = _block_stats(hu, r, b)
    return CTScene(hu, sp, r, b, bsum, bsum2, bbody, bfov)


@kernel
def _fov_radius(hu: F32, pad: float) -> float:  # pragma: no cover - compiled
    """Radius of the reconstruction circle from where padding ends on each row.

    Each row with padding at its left end gives one estimate
    sqrt((x_first - cx)^2 + (y - cy)^2); the median ignores rows where a dark
    streak touches the padding. Fewer than 10% such rows: no circular FOV.
    """
    h, w = hu.shape
    cy = (h - 1) / 2.0
    cx = (w - 1) / 2.0
    est = np.empty(h, np.float64)
    n = 0
    for y in range(h):
        if hu[y, 0] > pad:
            continue
        x = 0
        while x < w and hu[y, x] <= pad:
            x += 1
        if x < w:
            est[n] = math.sqrt((x - cx) ** 2 + (y - cy) ** 2)
            n += 1
    if n < 0.1 * h:
        return np.inf
    return float(np.median(est[:n]))


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
        half = math.sqrt(max(r2 - (y - cy) ** 2, 0.0)) if r2 < np.inf else 1e9
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
    """Motion proxy: SD (HU) of ~3 mm local means in air outside the body.

    Motion makes the projections inconsistent; filtered back-projection turns
    the inconsistency at high-contrast edges (skull, ribs, the body outline)
    into streaks and doubled edges that run beyond the object into the
    surrounding air, where a consistent scan is flat at -1000 HU. Averaging over
    3.5 mm suppresses quantum noise (SD falls with the box side) but keeps
    streaks, which are coherent over centimetres. This is the data-consistency
    idea behind autofocus metrics (Rohkohl et al., Med Phys 2013, "MAM"),
    measured where anatomy cannot contribute. It also rises with metal streaks
    and extreme noise; read it together with metal_area_mm2 and noise_hu.
    """
    return float(_air_stats(_get(sc, slice_hu, spacing))[1])


def _air_stats(s: CTScene) -> tuple[float, float]:
    reach = max(1, math.ceil(5.0 / (s.block * min(s.spacing))))  # blocks covering >= 5 mm
    air = _air_blocks(s.bbody, s.bfov, s.block, reach)
    if int(air.sum()) < 8:
        return float("nan"), float("nan")
    means = s.bsum[air] / (s.block * s.block)
    return float(_air_median(s.hu, air, s.block)), float(np.std(means))


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


# --- rings -----------------------------------------------------------------


def ring_hu(slice_hu: object, spacing: object, sc: CTScene | None = None) -> float:
    """Largest ring amplitude (HU) about the image centre.

    Rings come from a detector channel with a gain error: every view is wrong
    at the same detector position, so back-projection draws a circle about the
    rotation centre (the image centre). In polar coordinates (theta, r) a ring
    is a narrow feature in r at every theta. We high-pass each radial profile
    (minus its 7-pixel running mean) and take per radius the interquartile
    mean over 180 angles (see :func:`_ring_profile_max`):
    anatomy is not the same at all angles and cancels, noise averages out,
    a ring survives. Metric = max over r of that amplitude. This is the ring
    detection step of Sijbers & Postnov, Phys Med Biol 2004 ("Reduction of ring
    artefacts in high resolution micro-CT reconstructions").
    """
    s = _get(sc, slice_hu, spacing)
    h, w = s.hu.shape
    r1 = int(min(s.fov_radius - 6.0, min(h, w) / 2.0 - 6.0))
    if r1 < 24:
        return float("nan")
    clipped = np.clip(s.hu, -1100.0, 1500.0)  # bone edges must not dominate the median
    p = polar(clipped, (h - 1) / 2.0, (w - 1) / 2.0, 4, r1, N_THETA)
    return float(_ring_profile_max(highpass_rows(p, 3, False).T.copy()))


@kernel
def _ring_profile_max(hp_r_theta: F32) -> float:  # pragma: no cover - compiled
    """Largest |interquartile mean over angles| of the radial high-pass, over radii.

    A ring shifts every angle; the interquartile mean keeps that shift and
    averages the noise down, while anatomy that is present at fewer than a
    quarter of the angles on either side (an off-centre circular edge such as
    the skull) falls into the discarded tails. A median would keep more of it.
    """
    n_r, n_t = hp_r_theta.shape
    lo = n_t // 4
    hi = n_t - lo
    best = 0.0
    for r in range(8, n_r - 4):  # skip ends where the mean window is clipped
        v = np.sort(hp_r_theta[r])
        best = max(best, abs(v[lo:hi].mean()))
    return best


# --- metal -----------------------------------------------------------------


def metal_area_mm2(slice_hu: object, spacing: object, sc: CTScene | None = None) -> float:
    """Area (mm^2) above 3000 HU inside the FOV: metal (bone stays below it)."""
    s = _get(sc, slice_hu, spacing)
    n, _, _ = _metal_centroid(s.hu, s.fov_radius)
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
    n, cy, cx = _metal_centroid(s.hu, s.fov_radius)
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
    return float(_trunc_square(s.hu, 3, depth))


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


@kernel
def _trunc_square(hu: F32, inset: int, depth: int) -> float:  # pragma: no cover - compiled
    h, w = hu.shape
    cut = 0
    n = 0
    for x in range(inset, w - inset):
        for y, yd in ((inset, inset + depth), (h - 1 - inset, h - 1 - inset - depth)):
            n += 1
            cut += 1 if hu[y, x] > BODY_HU and hu[yd, x] > BODY_HU else 0
    for y in range(inset, h - inset):
        for x, xd in ((inset, inset + depth), (w - 1 - inset, w - 1 - inset - depth)):
            n += 1
            cut += 1 if hu[y, x] > BODY_HU and hu[y, xd] > BODY_HU else 0
    return cut / max(n, 1)


# --- all at once -----------------------------------------------------------


def ct_metrics(slice_hu: object, spacing: object) -> dict[str, float]:
    """All CT metrics of one slice, sharing one :class:`CTScene`."""
    s = scene(slice_hu, spacing)
    air, streak = _air_stats(s)
    return {
        "noise_hu": noise_hu(s.hu, s.spacing, s),
        "ring_hu": ring_hu(s.hu, s.spacing, s),
        "metal_area_mm2": metal_area_mm2(s.hu, s.spacing, s),
        "metal_streak_hu": metal_streak_hu(s.hu, s.spacing, s),
        "truncation_fraction": truncation_fraction(s.hu, s.spacing, s),
        "motion_streak_hu": float(streak),
        "air_hu": float(air),
        "air_hu_error": abs(float(air) + 1000.0),
    }
