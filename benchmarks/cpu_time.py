"""Load-independent figures for the kernel benchmarks: process CPU time and the load.

On a shared machine a call's wall time grows with the other processes' load; the CPU
time it burns (all threads: numba's, BLAS's, pocketfft's) mostly does not, so a ratio of
CPU times says what the code costs, and the wall ratio what the user waited.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from typing import Any


def process_cpu() -> float:
    """CPU seconds (user + system) of this process so far, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def with_cpu(fn: Callable[[], Any], out: list[float]) -> Callable[[], Any]:
    """``fn`` that appends the process CPU seconds of each call to ``out``."""

    def run() -> Any:
        c = process_cpu()
        result = fn()
        out.append(process_cpu() - c)
        return result

    return run


def load() -> float:
    """The 1-minute load average (runnable threads, machine-wide, on ``os.cpu_count()``)."""
    return round(os.getloadavg()[0], 2)


def record_load(record: Callable[..., None], group: str, start: float) -> None:
    """Two figures: the 1-minute load average when the test began and now."""
    cores = os.cpu_count() or 1
    record(group, f"1-min load average at the start (on {cores} cores)", start, "")
    record(group, f"1-min load average at the end (on {cores} cores)", load(), "")
