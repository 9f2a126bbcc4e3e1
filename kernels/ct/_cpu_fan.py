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


@cpu_helper
def _column(
    acc: F32,
    c0: F32,
    c1: F32,
    wu: np.float32,
    w: np.float32,
    inv: np.float32,
    consts: tuple[np.float32, np.float32, np.float32, np.float32],
    z_first: int,
) -> None:
    """acc[k] += w * bilerp at (u, v(z_k)) for every slice k along one detector column pair.

    c0, c1 are detector columns floor(u) and floor(u) + 1, contiguous in rows; the
    arithmetic is _formulas.bilerp's, in the same order, so CUDA agrees to rounding.
    """
    vz, mv, cv, vlast = consts
    for iz in range(acc.shape[0]):
        v = np.float32(z_first + iz) * vz * inv * mv + cv
        if v >= 0 and v <= vlast:
            i = int(v)
            wv = v - np.float32(i)
            ui = np.uintp(i)
            top = c0[ui] + wu * (c1[ui] - c0[ui])
            bottom = c0[ui + 1] + wu * (c1[ui + 1] - c0[ui + 1])
            acc[iz] += w * (top + wv * (bottom - top))


@cpu_kernel
def backproject_cone(
    qt: F32,
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

    ``qt`` is (views, cols + 1, rows + 1), detector columns contiguous, for the rows of
    this chunk, with ``centres`` = (column centre, row centre minus the chunk's first
    row); slice k of ``out`` sits at z = (z_first + k) * voxel[0], x and y step by
    voxel[1]. For a voxel column (x, y) and a view, u, L and the weight do not depend
    on z, so they are computed once and the slices walk down one detector column pair
    into a (x, z) accumulator that stays in L2.
    """
    nz, ny, nx = out.shape
    ulast = np.float32(qt.shape[1] - 2)
    d = np.float32(dist)
    mu, cu = np.float32(mags[0]), np.float32(centres[0])
    consts = (
        np.float32(voxel[0]),
        np.float32(mags[1]),
        np.float32(centres[1]),
        np.float32(qt.shape[2] - 2),
    )
    vxy = np.float32(voxel[1])
    for row in prange(ny):
        y = np.float32(row - ny // 2) * vxy
        acc = np.zeros((nx, nz), dtype=np.float32)
        for v in range(qt.shape[0]):
            s, c = sin_b[v], cos_b[v]
            for col in range(nx):
                x = np.float32(col - nx // 2) * vxy
                inv = np.float32(1.0) / (d + x * s + y * c)
                u = (x * c - y * s) * inv * mu + cu
                if u >= 0 and u <= ulast:
                    k = int(u)
                    w = (d * inv) * (d * inv)
                    cols = qt[v, k : k + 2]
                    _column(acc[col], cols[0], cols[1], u - np.float32(k), w, inv, consts, z_first)
        for k in range(nz):
            for col in range(nx):
                out[k, row, col] += acc[col, k]
