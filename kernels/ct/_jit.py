"""Typed wrapper around numba's CPU decorator, so mypy --strict sees real signatures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba

F = TypeVar("F", bound=Callable[..., Any])


def cpu_kernel(fn: F) -> F:
    """``@njit(parallel, fastmath, nogil, cache)``: nogil so ingest threads keep running."""
    return cast(F, numba.njit(parallel=True, fastmath=True, nogil=True, cache=True)(fn))


def cpu_helper(fn: F) -> F:
    """Serial inlined helper called from the kernels."""
    return cast(F, numba.njit(fastmath=True, nogil=True, cache=True, inline="always")(fn))


def cpu_exact_kernel(fn: F) -> F:
    """As :func:`cpu_kernel` without fastmath: IEEE rounding, for results that must match
    a numpy reference bit for bit."""
    return cast(F, numba.njit(parallel=True, nogil=True, cache=True)(fn))


def cpu_serial(fn: F) -> F:
    """``@njit(fastmath, nogil, cache)``, one thread: a piece of work that
    :mod:`kernels.threads` hands to one of several threads."""
    return cast(F, numba.njit(fastmath=True, nogil=True, cache=True)(fn))
