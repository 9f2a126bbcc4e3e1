"""warmup() compiles every CPU kernel variant the agent will use."""

from __future__ import annotations

import numpy as np

from kernels.ct import _cpu_fan, _cpu_parallel, warmup


def test_warmup_compiles_every_cpu_kernel() -> None:
    seconds = warmup()
    assert np.isfinite(seconds) and seconds >= 0.0
    kernels = (
        _cpu_parallel.backproject_rows,
        _cpu_parallel.guarded_lines,
        _cpu_fan.backproject_fan,
        _cpu_fan.backproject_cone,
    )
    for kernel in kernels:
        assert len(kernel.signatures) >= 1, kernel
