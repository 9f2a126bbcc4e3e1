"""Numba CPU backprojectors for fan-beam FBP and FDK (divergent beams).

Rows (fan) or (slice, row) pairs (cone) run in parallel; each accumulates over the
views into its own output row, so threads never share a cache line they write.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import prange

from kernels.ct import _formulas
from kernels.ct._jit import cpu_helper, cpu_kernel

F32 = npt.NDArray[np.float32]

fan_sample = cpu_helper(_formulas.fan_sample)
cone_sample = cpu_helper(_formulas.cone_sample)
lerp = cpu_helper(_formulas.lerp)
bilerp = cpu_helper(_formulas.bilerp)


@cpu_kernel
def backproject_fan(
    q: F32,
    sin_b: F32,
    cos_b: F32,
    dist: float,
    mag: float,
    centre: float,
    equiangular: bool,
    pixel: float,
    out: F32,
) -> None:
    """out[row, col] += sum_v w_v(x, y) q_v(u_v(x, y)), x = (col - N//2) pixel, y likewise.

    ``q`` (views, detectors + 1) is already weighted, filtered and scaled by d(beta).
    """
    size = out.shape[0]
    r = size // 2
    last = np.float32(q.shape[1] - 2)
    d, m, cen, px = np.float32(dist), np.float32(mag), np.float32(centre), np.float32(pixel)
    for row in prange(size):
        y = np.float32(row - r) * px
        acc = out[row]
        for v in range(q.shape[0]):
            qv, s, c = q[v], sin_b[v], cos_b[v]
            for col in range(size):
                u, w = fan_sample(np.float32(col - r) * px, y, s, c, d, m, cen, equiangular)
                acc[col] += w * lerp(qv, u, last)


@cpu_kernel
def backproject_cone(
    q: F32,
    sin_b: F32,
    cos_b: F32,
    dist: float,
    mags: tuple[float, float],
    centres: tuple[float, float],
    voxel: tuple[float, float],
    z_first: int,
    out: F32,
) -> None:
    """out[k, row, col] += sum_v w_v q_v(v_v, u_v) for one z-chunk of the volume.

    ``q`` is (views, rows + 1, cols + 1) for the detector rows of this chunk, with
    ``centres`` = (column centre, row centre minus the chunk's first row); slice k of
    ``out`` sits at z = (z_first + k) * voxel[0], x and y step by voxel[1].
    """
    nz, ny, nx = out.shape
    ulast = np.float32(q.shape[2] - 2)
    vlast = np.float32(q.shape[1] - 2)
    d = np.float32(dist)
    mu, mv = np.float32(mags[0]), np.float32(mags[1])
    cu, cv = np.float32(centres[0]), np.float32(centres[1])
    vz, vxy = np.float32(voxel[0]), np.float32(voxel[1])
    for zy in prange(nz * ny):
        k, row = zy // ny, zy % ny
        z = np.float32(z_first + k) * vz
        y = np.float32(row - ny // 2) * vxy
        acc = out[k, row]
        for v in range(q.shape[0]):
            q2, s, c = q[v], sin_b[v], cos_b[v]
            for col in range(nx):
                x = np.float32(col - nx // 2) * vxy
                u, vv, w = cone_sample(x, y, z, s, c, d, mu, mv, cu, cv)
                acc[col] += w * bilerp(q2, u, vv, ulast, vlast)
