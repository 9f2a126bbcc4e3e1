"""CT reconstruction benchmarks, timed against scikit-image's iradon in the same run.

Run (the figures in benchmarks/RESULTS.md came from exactly this):

    NUMBA_CACHE_DIR=.numba_cache python -m pytest benchmarks/bench_ct.py --benchmark-only \
        --benchmark-columns=min,median,max,rounds -s

Machines here are noisy, so the ratio to iradon (same process, interleaved call by call so
both see the same load) is the figure that matters; ``-s`` prints it with the update rate
and the fraction of the estimated arithmetic limit (see ``_scalar_limit``). The process
CPU time per call (all threads) and the load average are recorded too: CPU time is what
the kernel costs whatever the other processes on the machine do.
"""

from __future__ import annotations

import os
import statistics
from typing import Any

import numpy as np
import pytest
from skimage.transform import iradon

from benchmarks.conftest import interleaved, record, record_pair
from benchmarks.cpu_time import load, record_load, with_cpu
from kernels.ct import fbp_fan, fbp_parallel, fdk, warmup

SIZE, VIEWS = 512, 720
ROUNDS = 5  # interleaved pairs; iradon takes about a second a call
UPDATES = SIZE * SIZE * VIEWS


@pytest.fixture(scope="module", autouse=True)
def _compiled() -> None:
    warmup()


@pytest.fixture(scope="module")
def sinogram() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((SIZE, VIEWS)).astype(np.float32), np.linspace(0, 180, VIEWS, False)


def _cpu_ghz() -> float:
    """Current clock from /proc/cpuinfo (first core); 2.5 GHz if unreadable."""
    try:
        with open("/proc/cpuinfo") as f:
            mhz = [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]
        return mhz[0] / 1000
    except (OSError, IndexError, ValueError):
        return 2.5


def _scalar_limit() -> float:
    """Updates/s the CPU could do if the FP pipes were the only limit, scalar code.

    One linear-interpolation update is 6 FP-pipe operations in the compiled loop (FMA
    for the position u, the float32 column step, float->int of u, u - centre, FMA of
    the interval's line A + D (u - centre), the accumulate); a Zen-class core issues 4
    FP operations per cycle, so >= 1.5 cycles per update per core. The loop is scalar
    (LLVM declines AVX2 gathers for it); an 8-lane AVX2 loop with free gathers would
    have 8x this limit, also reported.
    """
    return (os.cpu_count() or 1) * _cpu_ghz() * 1e9 / 1.5


def test_fbp_parallel_512_720(benchmark: Any, sinogram: tuple[np.ndarray, np.ndarray]) -> None:
    """fbp_parallel and iradon interleaved (iradon, ours, iradon, ours...): same load."""
    sino, theta = sinogram
    benchmark.group = "ct-parallel-512x720"
    load_start = load()
    ours_cpu: list[float] = []
    anchor_cpu: list[float] = []
    ours_s, anchor_s = interleaved(
        benchmark, with_cpu(lambda: fbp_parallel(sino, theta, device="cpu"), ours_cpu),
        with_cpu(lambda: iradon(sino, theta), anchor_cpu), ROUNDS,
    )  # fmt: skip
    ours, anchor = statistics.median(ours_s), statistics.median(anchor_s)
    cpu = statistics.median(ours_cpu[1:])  # the first call is interleaved()'s warm-up
    anchor_cpu_s = statistics.median(anchor_cpu[1:])
    rate, cores = UPDATES / ours, os.cpu_count() or 1
    benchmark.extra_info.update(
        iradon_median_s=anchor,
        ratio=anchor / ours,
        g_updates_per_s=rate / 1e9,
        fraction_of_scalar_limit=rate / _scalar_limit(),
        fraction_of_avx2_limit=rate / (8 * _scalar_limit()),
        cpu_s_per_call=cpu,
    )
    record_pair("ct-parallel", "fbp_parallel", "skimage iradon", ours_s, anchor_s,
                goal="< 100 ms", met=ours < 0.1)  # fmt: skip
    record("ct-parallel", "G updates/s (512*512*720 / median)", rate / 1e9, "G/s")
    record("ct-parallel", f"fraction of the {cores}-core scalar ceiling (median)",
           rate / _scalar_limit(), "")  # fmt: skip
    record("ct-parallel", "CPU time per fbp_parallel call, all threads (median)", cpu * 1e3, "ms",
           ratio=None)  # fmt: skip
    record("ct-parallel", "CPU-time ratio: iradon / fbp_parallel (medians)", anchor_cpu_s / cpu,
           "x")  # fmt: skip
    record("ct-parallel", "fraction of the scalar ceiling per CPU-second (load-independent)",
           UPDATES / cpu / (_scalar_limit() / cores), "")  # fmt: skip
    record_load(record, "ct-parallel", load_start)
    print(
        f"\nfbp_parallel {ours * 1e3:.1f} ms, iradon {anchor * 1e3:.0f} ms (medians, "
        f"interleaved), ratio {anchor / ours:.1f}x, {rate / 1e9:.2f} G updates/s, "
        f"{rate / _scalar_limit():.0%} of scalar limit, {rate / (8 * _scalar_limit()):.1%} of AVX2, "
        f"CPU {cpu * 1e3:.0f} ms per call, load {load_start} -> {load()}"
    )


@pytest.mark.parametrize("detector", ["flat", "equiangular"])
def test_fbp_fan_256(benchmark: Any, detector: str) -> None:
    """256^2 image from 720 views over 360 degrees of a 768-element detector."""
    sino = np.random.default_rng(1).random((768, 720)).astype(np.float32)
    angles = np.linspace(0, 360, 720, endpoint=False)
    kwargs = {
        "source_isocenter": 500.0,
        "source_detector": 1000.0,
        "det_spacing": 1.0,
        "detector": detector,
        "output_size": 256,
        "device": "cpu",
    }
    benchmark.group = "ct-fan-256"
    benchmark.pedantic(fbp_fan, (sino, angles), kwargs, rounds=3, warmup_rounds=1)
    rate = 256 * 256 * 720 / benchmark.stats.stats.min
    benchmark.extra_info["g_updates_per_s"] = rate / 1e9
    print(f"\nfbp_fan {detector} {benchmark.stats.stats.min:.3f} s, {rate / 1e9:.3f} G updates/s")


def test_fdk_256_cubed(benchmark: Any) -> None:
    """256^3 volume from 180 views (half a usual 360) of a 256 x 384 panel, one round."""
    views = 180
    proj = np.random.default_rng(2).random((views, 256, 384)).astype(np.float32)
    angles = np.linspace(0, 360, views, endpoint=False)
    kwargs = {
        "source_isocenter": 500.0,
        "source_detector": 1000.0,
        "det_spacing": 1.0,
        "volume_shape": (256, 256, 256),
        "device": "cpu",
    }
    benchmark.group = "ct-fdk-256^3"
    benchmark.pedantic(fdk, (proj, angles), kwargs, rounds=1, warmup_rounds=0)
    rate = 256**3 * views / benchmark.stats.stats.min
    benchmark.extra_info["g_updates_per_s"] = rate / 1e9
    print(f"\nfdk 256^3 x {views} views {benchmark.stats.stats.min:.1f} s, {rate / 1e9:.3f} G/s")
