"""GPU check for the CT kernels: CUDA agrees with CPU, and where the time goes.

Run on a machine with a CUDA GPU (exit 2 without one, 1 if a check fails):

    NUMBA_CACHE_DIR=.numba_cache python benchmarks/gpu_ct_check.py

For each operation it prints max|cuda - cpu| / max|cpu| (must be <= 1e-5) for the public
function, then best-of-5 times of the host-to-device copy of the filtered data, the
kernel alone, and the device-to-host copy of the result, each bracketed by
cuda.synchronize(). ``--small`` runs tiny sizes (a smoke test, also under numba's
CUDA simulator: NUMBA_ENABLE_CUDASIM=1).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import cuda

from kernels.ct import _cuda, cone, fan, fbp_fan, fbp_parallel, fdk, parallel, warmup

TOLERANCE = 1e-5
GEOMETRY = {"source_isocenter": 500.0, "source_detector": 1000.0, "det_spacing": 1.0}


def best(fn: Callable[[], Any], rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        cuda.synchronize()
        start = time.perf_counter()
        fn()
        cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def report(
    name: str, cpu: np.ndarray, gpu: np.ndarray, q: np.ndarray, kernel: Callable[[], None], out: Any
) -> bool:
    rel = float(np.abs(gpu - cpu).max() / np.abs(cpu).max())
    ok = rel <= TOLERANCE
    print(
        f"{name:34s} rel {rel:.1e} {'ok  ' if ok else 'FAIL'} "
        f"h2d {best(lambda: cuda.to_device(q)) * 1e3:8.2f} ms  "
        f"kernel {best(kernel) * 1e3:8.2f} ms  "
        f"d2h {best(lambda: out.copy_to_host()) * 1e3:7.2f} ms"
    )
    return ok


def trig(deg: np.ndarray) -> tuple[Any, Any]:
    rad = np.deg2rad(deg)
    return cuda.to_device(np.sin(rad).astype(np.float32)), cuda.to_device(
        np.cos(rad).astype(np.float32)
    )


def check_parallel(n: int, views: int) -> bool:
    sino = np.random.default_rng(0).random((n, views)).astype(np.float32)
    theta = np.linspace(0.0, 180.0, views, endpoint=False)
    cpu, gpu = fbp_parallel(sino, theta, device="cpu"), fbp_parallel(sino, theta, device="cuda")
    q, lines, centre = parallel._filtered_views(sino, "ramp", True)
    d_q, d_lines, (d_sin, d_cos) = cuda.to_device(q), cuda.to_device(lines), trig(theta)
    out = cuda.device_array((n, n), np.float32)
    return report(
        f"fbp_parallel {n}^2 x {views}",
        cpu,
        gpu,
        lines,
        lambda: _cuda.launch_parallel(
            d_q, d_lines, d_cos, d_sin, centre, True, False, np.pi / (2 * views), out
        ),
        out,
    )


def check_fan(n: int, views: int, detector: str) -> bool:
    sino = np.random.default_rng(1).random((3 * n // 2, views)).astype(np.float32)
    angles = np.linspace(0.0, 360.0, views, endpoint=False)
    kw = {**GEOMETRY, "detector": detector, "output_size": n}
    cpu, gpu = fbp_fan(sino, angles, device="cpu", **kw), fbp_fan(sino, angles, device="cuda", **kw)
    geo = fan._fan_geometry(sino.shape[0], 500.0, 1000.0, 1.0, detector, None)
    q = fan._filtered(np.ascontiguousarray(sino.T), np.deg2rad(angles), geo, "ramp")
    pixel = fan._pixel_size(geo, sino.shape[0], n, None)
    d_q, (d_sin, d_cos), out = (
        cuda.to_device(q),
        trig(angles),
        cuda.device_array((n, n), np.float32),
    )
    return report(
        f"fbp_fan {detector} {n}^2 x {views}",
        cpu,
        gpu,
        q,
        lambda: _cuda.launch_fan(
            d_q, d_sin, d_cos, geo.dist, geo.mag(), geo.centre, geo.equiangular, pixel, out
        ),
        out,
    )


def check_fdk(n: int, views: int) -> bool:
    proj = np.random.default_rng(2).random((views, n, 3 * n // 2)).astype(np.float32)
    angles = np.linspace(0.0, 360.0, views, endpoint=False)
    kw = {**GEOMETRY, "volume_shape": (n, n, n)}
    cpu, gpu = fdk(proj, angles, device="cpu", **kw), fdk(proj, angles, device="cuda", **kw)
    geo = cone._cone(proj.shape, 500.0, 1000.0, 1.0, (n, n, n), None, None)
    weights = cone._view_weights(np.deg2rad(angles), geo, proj.shape[2])
    response = fan.fan_response(proj.shape[2], geo.fan(), "ramp")
    q = cone._filtered(proj, weights, geo, (0, n), slice(None), response)
    d_q, (d_sin, d_cos) = cuda.to_device(q), trig(angles)
    out = cuda.to_device(np.zeros((n, n, n), np.float32))  # the FDK kernel adds into out
    mags = (geo.sdd / geo.du, geo.sdd / geo.dv)
    return report(
        f"fdk {n}^3 x {views} (one chunk)",
        cpu,
        gpu,
        q,
        lambda: _cuda.launch_cone(
            d_q, d_sin, d_cos, geo.dist, mags, (geo.cu, geo.cv), geo.voxel, -(n // 2), out
        ),
        out,
    )


def device_name() -> str:
    try:
        name = cuda.get_current_device().name
    except AttributeError:  # numba's CUDA simulator has no device
        return "numba CUDA simulator"
    return name.decode() if isinstance(name, bytes) else str(name)


def main(small: bool) -> int:
    if not cuda.is_available():
        print("no CUDA device: nothing to check")
        return 2
    print(f"device: {device_name()}")
    warmup()
    n, views, n3, views3 = (16, 12, 8, 8) if small else (512, 720, 256, 180)
    results = [
        check_parallel(n, views),
        check_fan(n, views, "flat"),
        check_fan(n, views, "equiangular"),
        check_fdk(n3, views3),
    ]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main("--small" in sys.argv))
