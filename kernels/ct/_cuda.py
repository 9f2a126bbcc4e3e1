"""numba.cuda backprojectors, imported only when a CUDA device was resolved.

One thread per output pixel (voxel) looping over views, with the same float32
expressions as the CPU kernels so the two agree to float32 rounding (checked by
``benchmarks/gpu_ct_check.py``). Filtering stays on the host (scipy FFT); only the
filtered projections travel to the device. ``launch_*`` take device arrays so the
check script can time transfers and kernels separately.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import float32

from kernels.ct import _formulas

cuda: Any = importlib.import_module("numba.cuda")  # untyped; keep mypy off its internals

F32 = npt.NDArray[np.float32]
BLOCK_2D = (32, 8)  # x (columns, coalesced) by y
BLOCK_3D = (32, 4, 2)


def _grid(shape: tuple[int, ...], block: tuple[int, ...]) -> tuple[int, ...]:
    """Blocks covering ``shape`` given in (fastest, ...) order like ``block``."""
    return tuple(math.ceil(n / b) for n, b in zip(shape, block, strict=True))


@cuda.jit(cache=True)
def _parallel_kernel(q, lines, cos_t, sin_t, centre, circle, nearest, scale, out):  # type: ignore[no-untyped-def]
    col, row = cuda.grid(2)
    size = out.shape[0]
    if row >= size or col >= size:
        return
    r = size // 2
    if circle and (col - r) * (col - r) + (row - r) * (row - r) > r * r:
        out[row, col] = float32(0.0)
        return
    x = float32(col - r)
    y = float32(row - r)
    last = float32(q.shape[1] - 2)
    acc = float32(0.0)
    for v in range(q.shape[0]):
        u = (centre - y * sin_t[v]) + x * cos_t[v]
        if u >= float32(0.0) and u <= last:
            k = int(u)
            if nearest:
                acc += q[v, k + 1] if u - float32(k) > float32(0.5) else q[v, k]
            else:  # the CPU's line form of the lerp (see line_segments)
                acc += lines[v, k, 0] + lines[v, k, 1] * (u - centre)
    out[row, col] = acc * scale


def launch_parallel(
    q: Any,
    lines: Any,
    cos_t: Any,
    sin_t: Any,
    centre: float,
    circle: bool,
    nearest: bool,
    scale: float,
    out: Any,
) -> None:
    """Run the parallel-beam kernel on device arrays (``out`` is (size, size))."""
    size = out.shape[0]
    _parallel_kernel[_grid((size, size), BLOCK_2D), BLOCK_2D](
        q, lines, cos_t, sin_t, np.float32(centre), circle, nearest, np.float32(scale), out
    )


def backproject_parallel(
    q: F32,
    lines: F32,
    cos_t: F32,
    sin_t: F32,
    centre: float,
    circle: bool,
    nearest: bool,
    scale: float,
    size: int,
) -> F32:
    """Host-in, host-out wrapper of :func:`launch_parallel`."""
    out = cuda.device_array((size, size), dtype=np.float32)
    launch_parallel(
        cuda.to_device(q),
        cuda.to_device(lines),
        cuda.to_device(cos_t),
        cuda.to_device(sin_t),
        centre,
        circle,
        nearest,
        scale,
        out,
    )
    return np.asarray(out.copy_to_host(), dtype=np.float32)


_fan_sample = cuda.jit(device=True)(_formulas.fan_sample)
_cone_sample = cuda.jit(device=True)(_formulas.cone_sample)
_lerp = cuda.jit(device=True)(_formulas.lerp)
_bilerp = cuda.jit(device=True)(_formulas.bilerp)


@cuda.jit(cache=True)
def _fan_kernel(q, sin_b, cos_b, dist, mag, centre, equiangular, pixel, out):  # type: ignore[no-untyped-def]
    col, row = cuda.grid(2)
    size = out.shape[0]
    if row >= size or col >= size:
        return
    r = size // 2
    x = float32(col - r) * pixel
    y = float32(row - r) * pixel
    last = float32(q.shape[1] - 2)
    acc = out[row, col]
    for v in range(q.shape[0]):
        u, w = _fan_sample(x, y, sin_b[v], cos_b[v], dist, mag, centre, equiangular)
        acc += w * _lerp(q[v], u, last)
    out[row, col] = acc


def launch_fan(
    q: Any,
    sin_b: Any,
    cos_b: Any,
    dist: float,
    mag: float,
    centre: float,
    equiangular: bool,
    pixel: float,
    out: Any,
) -> None:
    """Run the fan-beam kernel on device arrays, adding into ``out`` (size, size)."""
    size = out.shape[0]
    f = np.float32
    _fan_kernel[_grid((size, size), BLOCK_2D), BLOCK_2D](
        q, sin_b, cos_b, f(dist), f(mag), f(centre), equiangular, f(pixel), out
    )


def backproject_fan(
    q: F32,
    sin_b: F32,
    cos_b: F32,
    dist: float,
    mag: float,
    centre: float,
    equiangular: bool,
    pixel: float,
    size: int,
) -> F32:
    """Host-in, host-out wrapper of :func:`launch_fan`."""
    out = cuda.to_device(np.zeros((size, size), dtype=np.float32))
    launch_fan(
        cuda.to_device(q),
        cuda.to_device(sin_b),
        cuda.to_device(cos_b),
        dist,
        mag,
        centre,
        equiangular,
        pixel,
        out,
    )
    return np.asarray(out.copy_to_host(), dtype=np.float32)


@cuda.jit(cache=True)
def _cone_kernel(q, sin_b, cos_b, dist, mu, mv, cu, cv, vz, vxy, z_first, out):  # type: ignore[no-untyped-def]
    col, row, k = cuda.grid(3)
    nz, ny, nx = out.shape
    if k >= nz or row >= ny or col >= nx:
        return
    z = float32(z_first + k) * vz
    y = float32(row - ny // 2) * vxy
    x = float32(col - nx // 2) * vxy
    ulast = float32(q.shape[2] - 2)
    vlast = float32(q.shape[1] - 2)
    acc = out[k, row, col]
    for v in range(q.shape[0]):
        u, vv, w = _cone_sample(x, y, z, sin_b[v], cos_b[v], dist, mu, mv, cu, cv)
        acc += w * _bilerp(q[v], u, vv, ulast, vlast)
    out[k, row, col] = acc


def launch_cone(
    q: Any,
    sin_b: Any,
    cos_b: Any,
    dist: float,
    mags: tuple[float, float],
    centres: tuple[float, float],
    voxel: tuple[float, float],
    z_first: int,
    out: Any,
) -> None:
    """Run the FDK kernel on device arrays, adding into the z-chunk ``out`` (nz, ny, nx)."""
    nz, ny, nx = out.shape
    f = np.float32
    _cone_kernel[_grid((nx, ny, nz), BLOCK_3D), BLOCK_3D](
        q,
        sin_b,
        cos_b,
        f(dist),
        f(mags[0]),
        f(mags[1]),
        f(centres[0]),
        f(centres[1]),
        f(voxel[0]),
        f(voxel[1]),
        z_first,
        out,
    )


def backproject_fdk(
    q: F32, sin_b: F32, cos_b: F32, cone: Any, row0: int, z0: int, out: F32
) -> None:
    """One FDK chunk: upload, accumulate on the device, copy back into ``out`` in place."""
    d_out = cuda.to_device(out)
    launch_cone(
        cuda.to_device(q),
        cuda.to_device(sin_b),
        cuda.to_device(cos_b),
        cone.dist,
        (cone.sdd / cone.du, cone.sdd / cone.dv),
        (cone.cu, cone.cv - row0),
        cone.voxel,
        z0 - cone.shape[0] // 2,
        d_out,
    )
    d_out.copy_to_host(out)
