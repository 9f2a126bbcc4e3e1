"""Numba kernels: pure functions, ndarray in and ndarray out.

No I/O, no asyncio. Each operation is one public function that dispatches to a
CPU variant (``@njit(parallel=True, nogil=True, cache=True)``, or serial ``nogil``
pieces shared out dynamically by :mod:`kernels.threads`) or a CUDA variant
(``numba.cuda``) according to ``device`` (see :mod:`kernels.device`).
"""
