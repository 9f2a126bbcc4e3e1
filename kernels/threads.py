"""Dynamic work sharing for the CPU kernels: many small pieces claimed by a few threads.

numba's ``prange`` hands each thread one fixed share of the iterations (the omp and
workqueue layers ignore ``set_parallel_chunksize`` here: measured), so on a machine where
other processes hold a core the call waits for the thread that got the least CPU. Here
the work is cut into many pieces that the threads claim one at a time, so a slowed thread
simply claims fewer. The pieces run in serial ``@njit(nogil=True)`` kernels, which release
the GIL; the claiming costs one Python call per piece (~10 us).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

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


@functools.cache
def single_thread_blas() -> None:
    """BLAS (the OpenBLAS of numpy and of scipy) on one thread, for the rest of the process.

    Called by the kernels that use BLAS (GRAPPA calibration); the first call sets it, later
    calls cost nothing. OpenBLAS's own threads spin while they wait: beside numba's threads
    and other processes on 2 busy cores a 160 x 160 x 4,800 complex Gram product took
    90-125 ms on its threads against 12-26 ms on one (load average 6). Setting one thread
    only around the calibration and restoring it after was worse still: the restored
    threads spun after each slice, and a streamed MRD slice took 191 ms instead of 55 ms
    (measured). The kernels' parallelism is numba's and :func:`on_threads`, never BLAS's.
    """
    ThreadpoolController().limit(limits=1, user_api="blas")  # kept: never restored
