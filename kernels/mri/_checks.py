"""Input validation shared by the MRI kernels: every bad input is a clear ValueError."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

ComplexArray = npt.NDArray[np.complexfloating[Any, Any]]
FloatArray = npt.NDArray[np.floating[Any]]


def _check(x: npt.ArrayLike, name: str, ndims: tuple[int, ...]) -> npt.NDArray[Any]:
    a = np.asarray(x)
    if a.ndim not in ndims:
        want = " or ".join(str(n) for n in ndims)
        raise ValueError(f"{name} must have {want} dimensions, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def as_complex(x: npt.ArrayLike, name: str, ndims: tuple[int, ...]) -> npt.NDArray[np.complex64]:
    """Return ``x`` as a C-contiguous complex64 array after checking ndim, size and finiteness."""
    return np.ascontiguousarray(_check(x, name, ndims), dtype=np.complex64)


def as_real(x: npt.ArrayLike, name: str, ndims: tuple[int, ...]) -> npt.NDArray[np.float64]:
    """Return ``x`` as a C-contiguous float64 array after the same checks as :func:`as_complex`."""
    a = _check(x, name, ndims)
    if np.iscomplexobj(a):
        raise ValueError(f"{name} must be real, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float64)


def positive_int(value: int, name: str, minimum: int = 1) -> int:
    """Check an integer parameter is at least ``minimum``."""
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
