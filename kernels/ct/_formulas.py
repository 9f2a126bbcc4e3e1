"""Per-sample formulas shared verbatim by the CPU (njit) and CUDA (device) kernels.

Plain Python on float32 scalars, compiled twice (see _cpu_fan.py and _cuda.py) so
both back ends evaluate the same expressions and agree to rounding. numba's on-disk
cache keys on the kernel's own file only: after editing this file, clear
NUMBA_CACHE_DIR (an installed upgrade rewrites every file, so it is safe there). Geometry as in
:mod:`kernels.ct._geometry`: for a point (x, y[, z]) and view beta,

    L   = D + x sin(beta) + y cos(beta)     distance from the source along the central ray
    lat = x cos(beta) - y sin(beta)         distance from the central ray

Flat detector (Kak & Slaney sec. 3.4.2 and 3.6; Feldkamp, Davis & Kress, JOSA A 1(6), 1984):
the ray through the point meets the detector at u = SDD lat / L (and v = SDD z / L) and
the backprojection weight is 1/U^2 = (D / L)^2. Equiangular detector (K & S sec. 3.4.1):
fan angle gamma = atan(lat / L), weight 1 / (lat^2 + L^2). Callers keep every point
inside the source orbit, so L > 0.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
from numba import float32

F32 = npt.NDArray[np.float32]
Num: TypeAlias = Any  # a float32 scalar inside the kernels, a float when tested from Python

# atan(t) ~ t (A0 + A1 t^2 + ... + A7 t^14) on [-1, 1]: near-minimax fit by iteratively
# reweighted least squares on Chebyshev nodes in float64 (max error 3.7e-8 rad; 1.8e-7 rad
# evaluated in float32, measured on [-50, 50]). A libm atan call per pixel and view made
# the equiangular backprojector 5x slower than the flat one; this is a few FMAs.
A0, A1, A2, A3 = 0.9999993356, -0.3332986083, 0.1994656588, -0.1390862989
A4, A5, A6, A7 = 0.09642196914, -0.05591230921, 0.0218629399, -0.004054561083
HALF_PI = 1.5707963267948966


def fan_sample(
    x: Num,
    y: Num,
    s: Num,
    c: Num,
    dist: Num,
    mag: Num,
    centre: Num,
    equiangular: bool,
) -> tuple[Num, Num]:
    """(detector index, weight) of point (x, y) at a view with sin s and cos c.

    ``mag`` converts to detector samples: SDD / du (flat) or SDD / du per radian.
    """
    big_l = dist + x * s + y * c
    lat = x * c - y * s
    if equiangular:  # L > 0 (checked by the caller), so atan(lat / L) is the fan angle
        # Inlined arctangent (a jitted helper could not be shared with CUDA): for |z| > 1,
        # atan(z) = sign(z) pi/2 - atan(1/z).
        z = lat / big_l
        big = abs(z) > float32(1.0)
        t = float32(1.0) / z if big else z
        t2 = t * t
        p = float32(A7) * t2 + float32(A6)
        p = p * t2 + float32(A5)
        p = p * t2 + float32(A4)
        p = p * t2 + float32(A3)
        p = p * t2 + float32(A2)
        p = p * t2 + float32(A1)
        p = (p * t2 + float32(A0)) * t
        if big:
            p = (float32(HALF_PI) if z > float32(0.0) else float32(-HALF_PI)) - p
        return p * mag + centre, float32(1.0) / (lat * lat + big_l * big_l)
    inv = float32(1.0) / big_l
    return lat * inv * mag + centre, (dist * inv) * (dist * inv)


def lerp(qv: F32, u: Num, last: Num) -> Num:
    """Linear interpolation of qv at u, 0 outside [0, last]; qv has a zero guard after last."""
    if u < float32(0.0) or u > last:
        return float32(0.0)
    k = int(u)
    w = u - float32(k)
    return qv[k] + w * (qv[k + 1] - qv[k])


def bilerp(q2: F32, u: Num, v: Num, ulast: Num, vlast: Num) -> Num:
    """Bilinear interpolation of q2[v, u], 0 outside; q2 has a zero guard row and column."""
    if u < float32(0.0) or u > ulast or v < float32(0.0) or v > vlast:
        return float32(0.0)
    i = int(v)
    k = int(u)
    wv = v - float32(i)
    wu = u - float32(k)
    top = q2[i, k] + wu * (q2[i, k + 1] - q2[i, k])
    bottom = q2[i + 1, k] + wu * (q2[i + 1, k + 1] - q2[i + 1, k])
    return top + wv * (bottom - top)


def cone_sample(
    x: Num,
    y: Num,
    z: Num,
    s: Num,
    c: Num,
    dist: Num,
    mag_u: Num,
    mag_v: Num,
    cu: Num,
    cv: Num,
) -> tuple[Num, Num, Num]:
    """(column index, row index, weight) of voxel (x, y, z) on a flat panel."""
    inv = float32(1.0) / (dist + x * s + y * c)
    lat = x * c - y * s
    return lat * inv * mag_u + cu, z * inv * mag_v + cv, (dist * inv) * (dist * inv)
