"""Helpers shared by the QC metric modules: input checks and small Numba kernels.

Everything here is pure: arrays in, arrays or numbers out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
from numba import njit
from numpy.typing import NDArray

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

_Fn = TypeVar("_Fn", bound=Callable[..., Any])


def kernel(fn: _Fn) -> _Fn:
    """``@njit(nogil=True, cache=True, fastmath=True)`` that keeps ``fn``'s type for mypy.

    nogil: the daemon runs QC in worker threads; cache: no compile at start-up
    once warmed; fastmath: inputs are checked finite before any kernel runs.
    """
    return cast(_Fn, njit(nogil=True, cache=True, fastmath=True)(fn))


def as_image(img: object, name: str = "image") -> F32:
    """Return ``img`` as a C-contiguous float32 2D array, or raise ValueError.

    Empty, non-2D and non-finite inputs are rejected here, once, so that the
    Numba kernels (compiled with fastmath, which assumes no NaN) never see them.
    """
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2D, got ndim={arr.ndim}")
    if arr.shape[0] < 8 or arr.shape[1] < 8:
        raise ValueError(f"{name} is too small or empty: shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be a real numeric array, got {arr.dtype}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return out


def as_spacing(spacing: object) -> tuple[float, float]:
    """Pixel spacing (row, column) in mm from a number or a pair; positive and finite."""
    vals = np.atleast_1d(np.asarray(spacing, dtype=np.float64)).ravel()
    if vals.size == 1:
        vals = np.repeat(vals, 2)
    if vals.size != 2 or not np.all(np.isfinite(vals)) or np.any(vals <= 0):
        raise ValueError(f"pixel spacing must be one or two positive numbers, got {spacing!r}")
    return float(vals[0]), float(vals[1])


@kernel
def bilinear(img: F32, y: float, x: float) -> float:  # pragma: no cover - compiled
    """Bilinear sample at (y, x); callers keep (y, x) inside the image."""
    y0 = int(y)
    x0 = int(x)
    y1 = min(y0 + 1, img.shape[0] - 1)
    x1 = min(x0 + 1, img.shape[1] - 1)
    fy = y - y0
    fx = x - x0
    top = img[y0, x0] * (1.0 - fx) + img[y0, x1] * fx
    bot = img[y1, x0] * (1.0 - fx) + img[y1, x1] * fx
    return float(top * (1.0 - fy) + bot * fy)


@kernel
def polar(
    img: F32, cy: float, cx: float, r0: int, r1: int, n_theta: int
) -> F32:  # pragma: no cover
    """Resample ``img`` on a (theta, r) grid about (cy, cx), radii r0..r1-1 in pixels.

    Samples that fall outside the image repeat the nearest edge pixel; callers
    choose r1 so that this does not happen for the radii they use.
    """
    out = np.empty((n_theta, r1 - r0), np.float32)
    h, w = img.shape
    for t in range(n_theta):
        ang = 2.0 * math.pi * t / n_theta
        c = math.cos(ang)
        s = math.sin(ang)
        for r in range(r0, r1):
            y = min(max(cy + r * s, 0.0), h - 1.0)
            x = min(max(cx + r * c, 0.0), w - 1.0)
            out[t, r - r0] = bilinear(img, y, x)
    return out


@kernel
def highpass_rows(a: F32, k: int, circular: bool) -> F32:  # pragma: no cover - compiled
    """``a`` minus its running mean of half-width ``k`` along axis 1.

    ``circular`` wraps around (angular profiles); otherwise the window is
    clipped at the ends.
    """
    n, m = a.shape
    out = np.empty_like(a)
    for i in range(n):
        for j in range(m):
            acc = 0.0
            cnt = 0
            for d in range(-k, k + 1):
                jj = j + d
                if circular:
                    jj %= m
                elif jj < 0 or jj >= m:
                    continue
                acc += a[i, jj]
                cnt += 1
            out[i, j] = a[i, j] - acc / cnt
    return out


def robust_z(values: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """(x - median) / (1.4826 * MAD): a z-score that outliers do not inflate."""
    v = np.asarray(values, dtype=np.float64)
    med = np.median(v)
    mad = 1.4826 * np.median(np.abs(v - med))
    out: NDArray[np.float64] = (v - med) / max(float(mad), 1e-12)
    return out
