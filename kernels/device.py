"""Choosing where a kernel runs: ``auto`` picks CUDA when a usable GPU is present."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

Device = Literal["auto", "cpu", "cuda"]
Resolved = Literal["cpu", "cuda"]


@functools.cache
def cuda_available() -> bool:
    """True when numba can see a CUDA device; never raises."""
    try:
        from numba import cuda

        # numba ships py.typed but leaves is_available unannotated; a typed alias keeps
        # strict mypy quiet without an ignore that would be "unused" where it is typed
        probe: Callable[[], object] = cuda.is_available
        return bool(probe())
    except Exception:  # no driver, no numba-cuda, broken toolkit: all mean "no GPU"
        return False


def resolve_device(device: Device = "auto") -> Resolved:
    """Map a requested device to the one that will actually run.

    ``cuda`` without a GPU is an error rather than a silent CPU fallback, so a
    misconfigured box is noticed; ``auto`` falls back quietly.
    """
    if device == "cpu":
        return "cpu"
    if device == "cuda":
        if not cuda_available():
            raise RuntimeError("compute.device is 'cuda' but no CUDA device is available")
        return "cuda"
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    raise ValueError(f"unknown device {device!r}; expected auto, cpu or cuda")
