"""Per-sample formulas shared verbatim by the CPU (njit) and CUDA (device) kernels.

Plain Python on float32 scalars, compiled twice (see _cpu_fan.py and _cuda.py) so
both back ends evaluate the same expressions and agree to rounding. Geometry as in
:mod:`kernels.ct._geometry`: for a point (x, y[, z]) and view beta,

    L   = D + x sin(beta) + y cos(beta)     distance from the source along the central ray
    lat = x cos(beta) - y sin(beta)         distance from the central ray

Flat detector (Kak & Slaney eq. 3.118-3.120; Feldkamp, Davis & Kress, JOSA A 1(6), 1984):
the ray through the point meets the detector at u = SDD lat / L (and v = SDD z / L) and
the backprojection weight is 1/U^2 = (D / L)^2. Equiangular detector (K & S eq. 3.86):
fan angle gamma = atan2(lat, L), weight 1 / (lat^2 + L^2).
"""

from __future__ import annotations

import math
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
from numba import float32

F32 = npt.NDArray[np.float32]
Num: TypeAlias = Any  # a float32 scalar inside the kernels, a float when tested from Python


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
    if equiangular:
        return math.atan2(lat, big_l) * mag + centre, float32(1.0) / (lat * lat + big_l * big_l)
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
