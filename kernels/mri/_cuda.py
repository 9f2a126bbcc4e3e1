"""CUDA variants of the MRI kernels (numba.cuda), built lazily on first use.

Nothing here touches CUDA at import time: kernels are compiled inside :func:`_kernels`
the first time a ``device="cuda"`` call reaches this module, which
:func:`kernels.device.resolve_device` only allows when a GPU is present. FFTs stay on the
host (numba.cuda has none; cuFFT would need CuPy); the GRAPPA and gridding loops run on
the GPU. Each kernel mirrors its CPU twin, so results agree to float32 rounding (the
atomic adds of the adjoint gridding sum in a different order).
"""

from __future__ import annotations

import functools
import importlib
import math
from typing import Any

import numpy as np
import numpy.typing as npt

C64 = npt.NDArray[np.complex64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
_THREADS = 128


def _cuda() -> Any:
    return importlib.import_module("numba.cuda")


@functools.cache
def _kernels() -> dict[str, Any]:
    cuda = _cuda()

    @cuda.jit(device=True)  # type: ignore[untyped-decorator]
    def kb_weight(d: Any, table: Any, table_os: Any) -> Any:
        # linear interpolation in the kernel table, as nufft._weights
        pos = abs(d) * table_os
        j = int(pos)
        f = pos - j
        return table[j] * (1 - f) + table[j + 1] * f

    @cuda.jit  # type: ignore[untyped-decorator]
    def grappa_fill(k: Any, w: Any, lines: Any, t: Any, dy: Any, dx: Any, out: Any) -> None:
        # one thread per (output coil, line, x); sources outside the matrix count as zero
        p = cuda.grid(1)
        nc, ny, nx = k.shape
        if p >= nc * lines.size * nx:
            return
        co, rem = p // (lines.size * nx), p % (lines.size * nx)
        i, x = rem // nx, rem % nx
        base = lines[i] - t
        acc = 0j
        for c in range(nc):
            for jy in range(dy.size):
                yy = base + dy[jy]
                if yy >= 0 and yy < ny:
                    for jx in range(dx.size):
                        xx = x + dx[jx]
                        if xx >= 0 and xx < nx:
                            acc += w[co, c, jy, jx] * k[c, yy, xx]
        out[co, i, x] = acc

    @cuda.jit  # type: ignore[untyped-decorator]
    def spread(y: Any, gx: Any, gy: Any, table: Any, width: Any, tos: Any, grid: Any) -> None:
        # one thread per sample; float32 atomics on the (coil, g0, g1, re/im) grid
        s = cuda.grid(1)
        nc, g0, g1, _ = grid.shape
        if s >= gx.size:
            return
        x0 = math.ceil(gx[s] - width / 2)
        y0 = math.ceil(gy[s] - width / 2)
        for iy in range(width):
            wy = kb_weight(y0 + iy - gy[s], table, tos)
            for ix in range(width):
                wgt = wy * kb_weight(x0 + ix - gx[s], table, tos)
                yw, xw = (y0 + iy) % g0, (x0 + ix) % g1
                for c in range(nc):
                    cuda.atomic.add(grid, (c, yw, xw, 0), wgt * y[c, s].real)
                    cuda.atomic.add(grid, (c, yw, xw, 1), wgt * y[c, s].imag)

    @cuda.jit  # type: ignore[untyped-decorator]
    def interp(grid: Any, gx: Any, gy: Any, table: Any, width: Any, tos: Any, out: Any) -> None:
        # one thread per sample; no write conflicts
        s = cuda.grid(1)
        nc, g0, g1 = grid.shape
        if s >= gx.size:
            return
        x0 = math.ceil(gx[s] - width / 2)
        y0 = math.ceil(gy[s] - width / 2)
        for c in range(nc):
            acc = 0j
            for iy in range(width):
                wy = kb_weight(y0 + iy - gy[s], table, tos)
                for ix in range(width):
                    wgt = wy * kb_weight(x0 + ix - gx[s], table, tos)
                    acc += wgt * grid[c, (y0 + iy) % g0, (x0 + ix) % g1]
            out[c, s] = acc

    return {"grappa_fill": grappa_fill, "spread": spread, "interp": interp}


def _blocks(n: int) -> int:
    return (n + _THREADS - 1) // _THREADS


def grappa_apply(k: C64, w: C64, missing: I64, phase: int, r: int, dy: I64, dx: I64) -> C64:
    """CUDA twin of ``grappa._apply_cpu``."""
    cuda = _cuda()
    kern = _kernels()["grappa_fill"]
    out = k.copy()
    d_k, d_dy, d_dx = cuda.to_device(k), cuda.to_device(dy), cuda.to_device(dx)
    offset = (missing - phase) % r
    for t in range(1, r):
        lines = np.ascontiguousarray(missing[offset == t])
        if lines.size == 0:
            continue
        d_out = cuda.device_array((k.shape[0], lines.size, k.shape[2]), dtype=np.complex64)
        w_t = cuda.to_device(np.ascontiguousarray(w[t - 1]))
        kern[_blocks(d_out.size), _THREADS](d_k, w_t, cuda.to_device(lines), t, d_dy, d_dx, d_out)
        out[:, lines, :] = d_out.copy_to_host()
    return out


def spread(
    y: C64, gx: F32, gy: F32, table: F32, width: int, table_os: int, shape: tuple[int, int]
) -> C64:
    """CUDA twin of ``nufft._spread_cpu``: (coils, samples) onto a (coils, *shape) grid."""
    cuda = _cuda()
    grid = cuda.to_device(np.zeros((y.shape[0], *shape, 2), dtype=np.float32))
    args = (cuda.to_device(y), cuda.to_device(gx), cuda.to_device(gy), cuda.to_device(table))
    _kernels()["spread"][_blocks(gx.size), _THREADS](*args, width, float(table_os), grid)
    g = grid.copy_to_host()
    return np.ascontiguousarray(g[..., 0] + 1j * g[..., 1], dtype=np.complex64)


def interp(grid: C64, gx: F32, gy: F32, table: F32, width: int, table_os: int) -> C64:
    """CUDA twin of ``nufft._interp_cpu``: a (coils, g0, g1) grid read at the samples."""
    cuda = _cuda()
    d_out = cuda.device_array((grid.shape[0], gx.size), dtype=np.complex64)
    args = (cuda.to_device(grid), cuda.to_device(gx), cuda.to_device(gy), cuda.to_device(table))
    _kernels()["interp"][_blocks(gx.size), _THREADS](*args, width, float(table_os), d_out)
    return np.asarray(d_out.copy_to_host(), dtype=np.complex64)
