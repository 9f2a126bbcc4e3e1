"""Check the CUDA MRI kernels against the CPU ones, and time both (for RESULTS.md).

On a GPU machine:
    NUMBA_CACHE_DIR=.numba_cache python benchmarks/gpu_mri_check.py
Without a GPU, the same logic runs on tiny inputs in numba's CUDA simulator:
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/gpu_mri_check.py --small
Each CUDA result must match the CPU result to NRMSE <= 1e-5; exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels.device import resolve_device
from kernels.mri.grappa import grappa_apply, grappa_calibrate
from kernels.mri.nufft import nufft, nufft_adjoint, radial_coords

TOL = 1e-5


def _nrmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    out = fn()  # compile / warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def _cases(small: bool) -> dict[str, Callable[[str], np.ndarray]]:
    rng = np.random.default_rng(0)
    nc, n = (2, 16) if small else (8, 256)
    k = rng.standard_normal((nc, n, n)) + 1j * rng.standard_normal((nc, n, n))
    k = k.astype(np.complex64)
    us = k.copy()
    us[:, 1::2] = 0
    acs = slice(n // 2 - 4, n // 2 + 4) if small else slice(n // 2 - 12, n // 2 + 12)
    us[:, acs] = k[:, acs]
    kernel = (2, 3) if small else (4, 5)
    w = grappa_calibrate(k[:, acs], 2, kernel)
    coords = radial_coords(6, 2 * n, n) if small else radial_coords(402, 512, n)
    y = (rng.standard_normal((nc, coords.shape[0])) * (1 + 1j)).astype(np.complex64)
    return {
        "grappa_apply R=2": lambda dev: grappa_apply(us, w, 2, device=dev),  # type: ignore[arg-type]
        "nufft_adjoint": lambda dev: nufft_adjoint(y, coords, (n, n), 1.25, 4, device=dev),  # type: ignore[arg-type]
        "nufft forward": lambda dev: nufft(k, coords, 1.25, 4, device=dev),  # type: ignore[arg-type]
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="tiny inputs (CUDA simulator)")
    args = parser.parse_args()
    resolve_device("cuda")  # a clear error when there is no GPU
    repeats = 1 if args.small else 5
    failed = False
    for name, run in _cases(args.small).items():
        cpu, t_cpu = _timed(lambda run=run: run("cpu"), repeats)
        gpu, t_gpu = _timed(lambda run=run: run("cuda"), repeats)
        err = _nrmse(gpu, cpu)
        failed |= not err <= TOL
        print(f"{name:18s} nrmse={err:.2e} cpu={t_cpu * 1e3:8.2f} ms cuda={t_gpu * 1e3:8.2f} ms")
    print("FAIL" if failed else "OK")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
