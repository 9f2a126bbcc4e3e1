"""CUDA variants of the MRI kernels (numba.cuda), built lazily on first use.

Nothing here touches CUDA at import time: the kernels module is imported (and each kernel
compiled) the first time a ``device="cuda"`` call reaches this module, which
:func:`kernels.device.resolve_device` only allows when a GPU is present. FFTs stay on the
host (numba.cuda has none; cuFFT would need CuPy); the GRAPPA and gridding loops run on
the GPU. Each kernel mirrors its CPU twin, so results agree to float32 rounding (the
atomic adds of the adjoint gridding sum in a different order).
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import numpy.typing as npt

C64 = npt.NDArray[np.complex64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
_THREADS = 128


def _cuda() -> Any:
    return importlib.import_module("numba.cuda")


def _kernels() -> Any:
    return importlib.import_module("kernels.mri._cuda_kernels")


def _blocks(n: int) -> int:
    return (n + _THREADS - 1) // _THREADS


def grappa_apply(k: C64, w: C64, missing: I64, phase: int, r: int, dy: I64, dx: I64) -> C64:
    """CUDA twin of ``grappa._apply_cpu``."""
    cuda = _cuda()
    kern = _kernels().grappa_fill
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
    _kernels().spread[_blocks(gx.size), _THREADS](*args, width, float(table_os), grid)
    g = grid.copy_to_host()
    return np.ascontiguousarray(g[..., 0] + 1j * g[..., 1], dtype=np.complex64)


def interp(grid: C64, gx: F32, gy: F32, table: F32, width: int, table_os: int) -> C64:
    """CUDA twin of ``nufft._interp_cpu``: a (coils, g0, g1) grid read at the samples."""
    cuda = _cuda()
    d_out = cuda.device_array((grid.shape[0], gx.size), dtype=np.complex64)
    args = (cuda.to_device(grid), cuda.to_device(gx), cuda.to_device(gy), cuda.to_device(table))
    _kernels().interp[_blocks(gx.size), _THREADS](*args, width, float(table_os), d_out)
    return np.asarray(d_out.copy_to_host(), dtype=np.complex64)
