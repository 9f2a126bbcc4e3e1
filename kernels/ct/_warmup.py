"""Compile (or load from numba's cache) every CPU kernel before the first study arrives."""

from __future__ import annotations

import time

import numpy as np

from kernels.ct.cone import fdk
from kernels.ct.fan import fbp_fan
from kernels.ct.parallel import fbp_parallel


def warmup() -> float:
    """Run each CPU kernel variant once on tiny inputs; returns the seconds it took.

    Agent start-up calls this so the first scan does not pay JIT compilation (seconds
    per kernel without a warm ``NUMBA_CACHE_DIR``).
    """
    start = time.perf_counter()
    sino = np.ones((8, 4), dtype=np.float32)
    half, full = np.linspace(0.0, 180.0, 4, endpoint=False), np.linspace(0.0, 360.0, 4, False)
    for interpolation in ("linear", "nearest"):
        fbp_parallel(sino, half, interpolation=interpolation, device="cpu")
    dist, sdd = 100.0, 150.0
    for detector in ("equiangular", "flat"):
        fbp_fan(
            sino,
            full,
            source_isocenter=dist,
            source_detector=sdd,
            det_spacing=1.0,
            detector=detector,
            output_size=4,
            device="cpu",
        )
    fdk(
        np.ones((4, 4, 8), np.float32),
        full,
        source_isocenter=dist,
        source_detector=sdd,
        det_spacing=1.0,
        volume_shape=(2, 4, 4),
        device="cpu",
    )
    return time.perf_counter() - start
