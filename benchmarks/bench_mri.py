"""MRI kernel benchmarks, each beside its anchor in the same run (ratios, not absolutes).

- GRAPPA, 8 coils, 256x256, R=2, 24 ACS lines, calibration + application:
  ours (4x5 kernel: 4 acquired lines x 5 readout points) vs ``pygrappa.mdgrappa``
  (its default 5x5 kernel over the full grid, i.e. 3 acquired lines x 5 at R=2).
- Adjoint NUFFT, 8 coils, 256x256, 402 spokes x 512 samples (205,824 per coil):
  ours vs ``sigpy.nufft_adjoint``, both at SigPy's default oversampling 1.25, width 4.

Each pair runs interleaved in one test (anchor, ours, anchor, ours...), so both see the same
load; the ratio of the medians is the figure. The process CPU time of each call (all
threads) and the load average are recorded beside it. Run: ``NUMBA_CACHE_DIR=.numba_cache python -m
pytest benchmarks/bench_mri.py --benchmark-only -s
--benchmark-json=benchmarks/json/bench_mri.json``. Anchors come from the ``bench`` extra
(``pip install pygrappa sigpy``); a missing anchor fails its pair with the install command.
"""

from __future__ import annotations

import importlib
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from benchmarks.conftest import interleaved, record
from benchmarks.cpu_time import load, record_load, with_cpu
from kernels.mri import nufft_adjoint, radial_coords, warmup
from kernels.mri.cartesian import ifftc, rss
from kernels.mri.grappa import grappa
from tests.support.mri_phantoms import cartesian_multicoil, nrmse

N, COILS, ACS = 256, 8, 24
ROUNDS = 7  # each round: one anchor call, then one of ours


@pytest.fixture(scope="module", autouse=True)
def _compiled() -> None:
    warmup()


@pytest.fixture(scope="module")
def grappa_data() -> tuple[np.ndarray, np.ndarray]:
    full = cartesian_multicoil(N, COILS).astype(np.complex64)
    us = np.zeros_like(full)
    us[:, ::2] = full[:, ::2]
    acs = slice(N // 2 - ACS // 2, N // 2 + ACS // 2)
    us[:, acs] = full[:, acs]
    return full, us


@pytest.fixture(scope="module")
def radial_data() -> tuple[np.ndarray, np.ndarray]:
    coords = radial_coords(402, 512, N)
    rng = np.random.default_rng(0)
    shape = (COILS, coords.shape[0])
    y = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    return coords, y


@pytest.mark.benchmark(group="grappa 8x256^2 R=2")
def test_grappa_vs_pygrappa(benchmark: Any, grappa_data: tuple[np.ndarray, np.ndarray]) -> None:
    pygrappa = _anchor("pygrappa")
    full, us = grappa_data
    acs = slice(N // 2 - ACS // 2, N // 2 + ACS // 2)
    k = np.moveaxis(us, 0, -1)
    calib = np.moveaxis(full[:, acs], 0, -1)
    out: dict[str, np.ndarray] = {}

    def ours() -> None:
        out["ours"] = grappa(us, 2, (4, 5), 0.01, "cpu")

    def anchor() -> None:
        out["anchor"] = pygrappa.mdgrappa(k, calib, coil_axis=-1, lamda=0.01)

    ratio = _pair(benchmark, "grappa", ("grappa (ours, 4x5 kernel)", ours),
                  ("pygrappa.mdgrappa (5x5)", anchor), goal=5)  # fmt: skip
    benchmark.extra_info["ratio"] = ratio
    truth = rss(ifftc(full))
    assert nrmse(rss(ifftc(out["ours"])), truth) < 0.03
    assert nrmse(rss(ifftc(np.moveaxis(out["anchor"], -1, 0))), truth) < 0.05


@pytest.mark.benchmark(group="nufft adjoint 8x256^2 402x512")
def test_nufft_adjoint_vs_sigpy(benchmark: Any, radial_data: tuple[np.ndarray, np.ndarray]) -> None:
    sigpy = _anchor("sigpy")
    coords, y = radial_data
    sp_coords = np.ascontiguousarray(coords[:, ::-1])  # SigPy orders coords like the axes
    out: dict[str, np.ndarray] = {}

    def ours() -> None:
        out["ours"] = nufft_adjoint(y, coords, (N, N), 1.25, 4, "cpu")

    def anchor() -> None:
        out["anchor"] = sigpy.nufft_adjoint(y, sp_coords, (COILS, N, N), 1.25, 4)

    ratio = _pair(benchmark, "nufft-adjoint", ("nufft_adjoint (ours)", ours),
                  ("sigpy.nufft_adjoint", anchor), goal=7)  # fmt: skip
    benchmark.extra_info["ratio"] = ratio
    assert out["ours"].shape == (COILS, N, N)
    # same operator up to SigPy's orthonormal scaling: compare after a least-squares scale
    scale = np.vdot(out["anchor"], out["ours"]) / np.vdot(out["anchor"], out["anchor"])
    assert nrmse(scale * out["anchor"], out["ours"]) < 1e-2


def _pair(
    benchmark: Any, group: str, ours: tuple[str, Callable[[], None]],
    anchor: tuple[str, Callable[[], None]], goal: float,
) -> float:  # fmt: skip
    """Time the pair interleaved; record both medians, the speed-up (anchor / ours, against
    ``goal``), the CPU time of each call (all threads) and the load average."""
    start = load()
    ours_cpu: list[float] = []
    anchor_cpu: list[float] = []
    ours_s, anchor_s = interleaved(
        benchmark, with_cpu(ours[1], ours_cpu), with_cpu(anchor[1], anchor_cpu), ROUNDS
    )
    o, a = statistics.median(ours_s), statistics.median(anchor_s)
    record(group, f"{anchor[0]}, median of {len(anchor_s)} (interleaved)", a * 1e3, "ms",
           anchor=True)  # fmt: skip
    record(group, f"{ours[0]}, median of {len(ours_s)} (interleaved)", o * 1e3, "ms", ratio=o / a)
    record(group, f"speed-up: {anchor[0]} / {ours[0]} (medians)", a / o, "x",
           goal=f">= {goal:g}x", met=a / o >= goal)  # fmt: skip
    oc, ac = statistics.median(ours_cpu[1:]), statistics.median(anchor_cpu[1:])  # [0]: warm-up
    for name, cpu in ((ours[0], oc), (anchor[0], ac)):  # no ratio to the anchor's wall time
        record(group, f"CPU time per call, {name}, all threads (median)", cpu * 1e3, "ms",
               ratio=None)  # fmt: skip
    record(group, "CPU-time ratio: anchor / ours (medians)", ac / oc, "x")
    record_load(record, group, start)
    print(f"\n{group}: speed-up {a / o:.2f}x (wall medians), CPU {ac / oc:.2f}x, "
          f"load {start} -> {load()}")  # fmt: skip
    return a / o


def _anchor(name: str) -> Any:
    """The anchor library; a missing one fails the benchmark with the install command."""
    try:
        return importlib.import_module(name)
    except ImportError:
        pytest.fail(f"anchor {name} is not installed: pip install -e '.[bench]'")
