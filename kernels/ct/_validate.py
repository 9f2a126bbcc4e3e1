"""Input checks run before any kernel: bad input is a ValueError here, never a crash inside."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from kernels.ct._filters import FILTERS

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def data_array(data: Any, ndim: int, name: str) -> F32:
    """``data`` as a C-contiguous float32 array of ``ndim`` dims, non-empty and finite."""
    arr = np.asarray(data)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real, got dtype {arr.dtype}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not _all_finite(out.reshape(-1)):
        raise ValueError(f"{name} contains NaN or inf (or values beyond float32 range)")
    return out


def _all_finite(flat: F32, block: int = 1 << 22) -> bool:
    """np.isfinite over blocks, so checking a large input needs no input-sized mask."""
    return all(np.isfinite(flat[i : i + block]).all() for i in range(0, flat.shape[0], block))


def angles(theta: Any, count: int, name: str = "theta") -> F64:
    """Projection angles in degrees as float64 radians; one per view, finite."""
    arr = np.asarray(theta, dtype=np.float64) if theta is not None else None
    if arr is None or arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of angles in degrees")
    if arr.shape[0] != count:
        raise ValueError(f"{name} has {arr.shape[0]} angles but the data has {count} views")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return np.deg2rad(arr)


def filter_name(name: Any) -> str:
    """One of the iradon filter names."""
    if name not in FILTERS:
        raise ValueError(f"unknown filter {name!r}; expected one of {', '.join(FILTERS)}")
    return str(name)


def positive_int(value: Any, name: str) -> int:
    """A strictly positive integer (numpy integers accepted, bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def positive_float(value: Any, name: str) -> float:
    """A strictly positive finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not np.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return number


def choice(value: Any, options: tuple[str, ...], name: str) -> str:
    """One of ``options``."""
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(options)}")
    return str(value)
