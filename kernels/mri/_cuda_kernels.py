"""CUDA kernels of the MRI module; imported only by :mod:`kernels.mri._cuda` on first use.

``cuda`` is a module global (not a closure variable) so that numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) can swap it, which lets CI exercise these kernels on CPU.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

cuda: Any = importlib.import_module("numba.cuda")


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
