"""Ring artifact metrics of a CT slice: ``ring_hu`` (HU) and ``ring_z`` (graded, noise units).

Split from :mod:`kernels.qc.ct` (which re-exports both). Pure: a slice in HU in, floats out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kernels.qc._common import F32, F64, bilinear, kernel
from kernels.qc._ct_scene import N_THETA, CTScene, _get

R0 = 4  # first radius (px) sampled; the first graded one is R0 + 8 (see _ring_profile)
# Ring centres tried about the image centre (px, each axis): a 3 x 3 grid of half pixels
CENTRE_OFFSETS = (-0.5, 0.0, 0.5)


@dataclass(frozen=True)
class RingPeak:
    """Where ``ring_z`` peaks: the ring centre (row, col px), radius (px) and both values."""

    cy: float
    cx: float
    radius: float
    amp_hu: float  # ring_hu: the largest |interquartile mean| over radii about that centre
    z: float  # ring_z: the peak amplitude in units of its standard error


def ring_hu(slice_hu: object, spacing: object, sc: CTScene | None = None) -> float:
    """Largest ring amplitude (HU) about the ring centre; see :func:`ring_z`."""
    return ring_stats(_get(sc, slice_hu, spacing))[0]


def ring_z(slice_hu: object, spacing: object, sc: CTScene | None = None) -> float:
    """Largest ring amplitude in units of its own noise (the graded ring metric).

    Rings come from a detector channel with a gain error: every view is wrong
    at the same detector position, so back-projection draws a circle about the
    rotation centre. In polar coordinates (theta, r) a ring is a narrow feature
    in r at every theta. We high-pass each radial profile (minus its 7-pixel
    running mean) and take per radius the interquartile mean over 180 angles:
    anatomy is not the same at all angles and cancels, noise averages out, a
    ring survives (the ring detection step of Sijbers & Postnov, Phys Med Biol
    2004). ``ring_z`` divides each radius' mean by its standard error, robust
    spread over angles (IQR / 1.349) / sqrt(n_eff), with n_eff the independent
    samples on that circle (at most the 2 pi r / 2 pixels it spans, halved by
    the interquartile trim). NaN when the FOV is under 24 pixels in radius.

    The rotation centre lies within a pixel of the image centre, not always on
    it: with an even matrix it is often half a pixel off ((N - 1) / 2 against
    N / 2), and a channel and its mirror draw the two halves of one ring a pixel
    apart. Sampled about the wrong centre, a ring 2-3 px wide drifts across its
    own width with angle, so half the angles miss it: its mean halves and its
    spread over angles doubles. On the real abdomen at 192^2 that left moderate
    rings at 3.7-3.9 noise units, among clean slices (up to 4.4). So the centre
    is searched on a half-pixel grid within +-0.5 px, and the largest ``ring_z``
    over the nine centres is kept (clean slices gain about 0.2 from the search).
    """
    return ring_stats(_get(sc, slice_hu, spacing))[1]


def ring_stats(s: CTScene) -> tuple[float, float]:
    """(ring_hu, ring_z) of one slice; NaN, NaN when the FOV is too small to look for rings."""
    peak = ring_peak(s)
    return (math.nan, math.nan) if peak is None else (peak.amp_hu, peak.z)


def ring_peak(s: CTScene) -> RingPeak | None:
    """The ring of largest ``ring_z`` over the centre grid; None when the FOV is too small."""
    h, w = s.hu.shape
    # a 6 px margin inside the FOV also covers the half-pixel centre offsets
    r1 = int(min(s.fov_radius - 6.0, min(h, w) / 2.0 - 6.0))
    if r1 < 24:
        return None
    clipped = np.clip(s.hu, -1100.0, 1500.0)  # bone edges must not dominate the median
    best: RingPeak | None = None
    for dy in CENTRE_OFFSETS:
        for dx in CENTRE_OFFSETS:
            cy, cx = (h - 1) / 2.0 + dy, (w - 1) / 2.0 + dx
            amp, z = _ring_profile(_highpassed_polar(clipped, cy, cx, R0, r1, N_THETA), R0)
            i = int(np.argmax(z))
            if best is None or z[i] > best.z:
                best = RingPeak(cy, cx, float(R0 + i), float(amp.max()), float(z[i]))
    return best


@kernel
def _highpassed_polar(
    img: F32, cy: float, cx: float, r0: int, r1: int, n_theta: int
) -> F32:  # pragma: no cover
    """(radius, theta) samples about (cy, cx), each radial profile minus its 7-px running mean.

    ``kernels.qc._common.polar`` then ``highpass_rows(.., 3, False)``, transposed, fused in
    one pass: nine centres per slice made the copies between them a third of the cost.
    """
    h, w = img.shape
    n_r = r1 - r0
    prof = np.empty(n_r, np.float64)
    out = np.empty((n_r, n_theta), np.float32)
    for t in range(n_theta):
        ang = 2.0 * math.pi * t / n_theta
        c = math.cos(ang)
        s = math.sin(ang)
        for i in range(n_r):
            y = min(max(cy + (r0 + i) * s, 0.0), h - 1.0)
            x = min(max(cx + (r0 + i) * c, 0.0), w - 1.0)
            prof[i] = bilinear(img, y, x)
        for i in range(n_r):
            lo = max(0, i - 3)
            hi = min(n_r, i + 4)
            acc = 0.0
            for j in range(lo, hi):
                acc += prof[j]
            out[i, t] = prof[i] - acc / (hi - lo)
    return out


@kernel
def _ring_profile(hp_r_theta: F32, r0: int) -> tuple[F64, F64]:  # pragma: no cover
    """Per radius (index r = radius - r0): (|interquartile mean over angles|, |mean| / SE).

    A ring shifts every angle; the interquartile mean keeps that shift and
    averages the noise down, while anatomy that is present at fewer than a
    quarter of the angles on either side (an off-centre circular edge such as
    the skull) falls into the discarded tails. A median would keep more of it.
    The first 8 and last 4 radii, where the running mean is clipped, read 0.
    """
    n_r, n_t = hp_r_theta.shape
    lo = n_t // 4
    hi = n_t - lo
    amp = np.zeros(n_r, np.float64)
    z = np.zeros(n_r, np.float64)
    for r in range(8, n_r - 4):
        v = np.sort(hp_r_theta[r])
        m = abs(v[lo:hi].mean())
        # IQR / 1.349 = SD of a normal; floored at 1 HU, about the rounding noise of stored
        # integers, so a noise-free image cannot turn a 0.01 HU residue into a ring
        spread = max((v[hi] - v[lo]) / 1.349, 1.0)
        n_eff = 0.5 * min(float(n_t), math.pi * (r + r0))
        amp[r] = m
        z[r] = m / (spread / math.sqrt(n_eff))
    return amp, z
