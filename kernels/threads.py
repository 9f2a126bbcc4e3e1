"""Dynamic work sharing for the CPU kernels: many small pieces claimed by a few threads.

numba's ``prange`` hands each thread one fixed share of the iterations (the omp and
workqueue layers ignore ``set_parallel_chunksize`` here: measured), so on a machine where
other processes hold a core the call waits for the thread that got the least CPU. Here
the work is cut into many pieces that the threads claim one at a time, so a slowed thread
simply claims fewer. The pieces run in serial ``@njit(nogil=True)`` kernels, which release
the GIL; the claiming costs one Python call per piece (~10 us).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
from threadpoolctl import ThreadpoolController

PIECES_PER_THREAD = 16


def thread_count() -> int:
    """The threads a kernel may use: numba's setting (NUMBA_NUM_THREADS, set_num_threads)."""
    return int(numba.get_num_threads())


def ranges(total: int, threads: int, minimum: int = 1) -> Iterator[tuple[int, int]]:
    """[lo, hi) pieces covering range(total), about PIECES_PER_THREAD per thread and at
    least ``minimum`` long, as one iterator to share: next() on it is atomic under the
    GIL, so each piece goes to exactly one thread."""
    step = max(minimum, -(-total // (threads * PIECES_PER_THREAD)), 1)
    return iter([(lo, min(total, lo + step)) for lo in range(0, total, step)])


def on_threads(threads: int, work: Callable[[int], object]) -> None:
    """``work(t)`` for t in 0..threads-1 at once, t = 0 on the calling thread; re-raises
    the first failure after all have finished."""
    if threads <= 1:
        work(0)
        return
    with ThreadPoolExecutor(threads - 1) as pool:
        futures = [pool.submit(work, t) for t in range(1, threads)]
        try:
            work(0)
        finally:
            for f in futures:
                f.exception()  # wait for all before raising
        for f in futures:
            f.result()


class _SharedLimit:
    """One process-wide BLAS limit held for as long as any caller is inside."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.limiter: Any = None


_BLAS = _SharedLimit()


@functools.cache
def _controller() -> Any:
    return ThreadpoolController()  # scans the loaded BLAS libraries once


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS (OpenBLAS, for numpy and scipy) on one thread while inside.

    OpenBLAS's own threads spin while they wait; beside numba's threads and other
    processes on 2 busy cores a 160 x 160 x 4,800 complex Gram product took 90-125 ms
    on its threads against 12-26 ms on one (measured, load average 6). The limit is
    process-wide, so concurrent callers share one: the first sets it, the last restores.
    """
    with _BLAS.lock:
        if _BLAS.users == 0:
            _BLAS.limiter = _controller().limit(limits=1, user_api="blas")
        _BLAS.users += 1
    try:
        yield
    finally:
        with _BLAS.lock:
            _BLAS.users -= 1
            if _BLAS.users == 0:
                _BLAS.limiter.restore_original_limits()
                _BLAS.limiter = None
