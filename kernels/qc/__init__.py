"""Per-image QC metrics for CT, MR and DX/CR: pure functions, ndarray in, numbers out.

``ct_metrics``, ``mr_metrics`` and ``dx_metrics`` compute every metric of one
image as a flat ``dict[str, float]`` (NaN where a metric cannot be measured on
that image). The individual metrics live in :mod:`kernels.qc.ct` (rings in
:mod:`kernels.qc.ct_ring`), :mod:`kernels.qc.mr` and :mod:`kernels.qc.dx`; each docstring gives the
formula and its source. Thresholds are data, in ``config/qc-protocols.yaml``.
"""

from __future__ import annotations

import numpy as np

from kernels.qc.ct import ct_metrics
from kernels.qc.dx import dx_metrics
from kernels.qc.mr import mr_metrics

__all__ = ["ct_metrics", "dx_metrics", "mr_metrics", "warmup"]


def warmup() -> None:
    """Compile (or load from the Numba cache) every kernel, so the first image is fast."""
    yy, xx = np.mgrid[:64, :64]
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < 20**2).astype(np.float32)
    ct_metrics(np.where(disc > 0, 40.0, -1000.0).astype(np.float32), 0.5)
