"""Device selection for the CT kernels: CUDA only when present, a clear error otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kernels.device
from kernels.ct import fbp_fan, fbp_parallel, fdk
from kernels.device import cuda_available

SINO = np.random.default_rng(0).random((16, 12)).astype(np.float32)
THETA = np.linspace(0.0, 180.0, 12, endpoint=False)
FULL = np.linspace(0.0, 360.0, 12, endpoint=False)
GEOMETRY: dict[str, Any] = {"source_isocenter": 100.0, "source_detector": 150.0}


def _parallel(device: str) -> np.ndarray:
    return fbp_parallel(SINO, THETA, device=device)  # type: ignore[arg-type]


def _fan(device: str) -> np.ndarray:
    return fbp_fan(SINO, FULL, det_spacing=1.0, device=device, **GEOMETRY)  # type: ignore[arg-type]


def _fdk(device: str) -> np.ndarray:
    proj = np.repeat(SINO.T[:, None, :], 4, axis=1)
    return fdk(proj, FULL, det_spacing=1.0, volume_shape=(4, 8, 8), device=device, **GEOMETRY)  # type: ignore[arg-type]


CASES: dict[str, Callable[[str], np.ndarray]] = {
    "backproject_parallel": _parallel,
    "backproject_fan": _fan,
    "backproject_fdk": _fdk,
}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> tuple[str, Callable[[str], np.ndarray]]:
    return request.param, CASES[request.param]


def _fake_gpu(monkeypatch: pytest.MonkeyPatch, present: bool, name: str) -> list[str]:
    """Pretend a GPU is (not) there; record calls that reach the CUDA backprojector."""
    import kernels.ct._cuda as cuda_module

    calls: list[str] = []

    def fake(*args: Any, **kwargs: Any) -> None:
        calls.append(name)
        raise _Reached

    monkeypatch.setattr(kernels.device, "cuda_available", lambda: present)
    monkeypatch.setattr(cuda_module, name, fake)
    return calls


class _Reached(Exception):
    pass


def test_auto_uses_cuda_when_present(monkeypatch: pytest.MonkeyPatch, case) -> None:
    name, run = case
    calls = _fake_gpu(monkeypatch, True, name)
    with pytest.raises(_Reached):
        run("auto")
    assert calls == [name]


def test_auto_and_cpu_stay_on_cpu(monkeypatch: pytest.MonkeyPatch, case) -> None:
    name, run = case
    calls = _fake_gpu(monkeypatch, False, name)
    assert np.isfinite(run("auto")).all()
    monkeypatch.setattr(kernels.device, "cuda_available", lambda: True)
    assert np.isfinite(run("cpu")).all()
    assert calls == []


def test_cuda_without_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, case) -> None:
    _, run = case
    monkeypatch.setattr(kernels.device, "cuda_available", lambda: False)
    with pytest.raises(RuntimeError, match="no CUDA device is available"):
        run("cuda")


def test_real_device(case) -> None:
    """Here (no GPU) ``cuda`` must fail clearly; on a GPU box it must match the CPU."""
    _, run = case
    if not cuda_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            run("cuda")
        return
    cpu, gpu = run("cpu"), run("cuda")
    assert np.abs(gpu - cpu).max() <= 1e-5 * np.abs(cpu).max()


def test_bad_device_name() -> None:
    with pytest.raises(ValueError, match="unknown device"):
        fbp_parallel(SINO, THETA, device="tpu")  # type: ignore[arg-type]


def test_import_and_cpu_path_never_load_numba_cuda() -> None:
    code = (
        "import sys, numpy as np; import kernels.ct as ct; "
        "ct.fbp_parallel(np.ones((8, 4)), np.arange(4.0), device='cpu'); "
        "print('numba.cuda' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "False"


SIMULATED = """
import numpy as np
from kernels.ct import fbp_fan, fbp_parallel, fdk
rng = np.random.default_rng(0)
s = rng.random((12, 8)).astype(np.float32)
p = rng.random((8, 6, 12))
half, full = np.linspace(0, 180, 8, endpoint=False), np.linspace(0, 360, 8, endpoint=False)
geo = dict(source_isocenter=50.0, source_detector=80.0, det_spacing=2.0)
cases = [
    lambda d: fbp_parallel(s, half, device=d),
    lambda d: fbp_parallel(s, half, interpolation="nearest", circle=False, device=d),
    lambda d: fbp_fan(s, full, detector="flat", output_size=10, device=d, **geo),
    lambda d: fbp_fan(s, full, detector="equiangular", output_size=10, device=d, **geo),
    lambda d: fdk(p, full, volume_shape=(4, 6, 6), memory_budget=20000, device=d, **geo),
]
for run in cases:
    cpu, gpu = run("cpu"), run("cuda")
    print(float(np.abs(gpu - cpu).max() / np.abs(cpu).max()))
"""


def test_cuda_kernels_match_cpu_in_numba_simulator() -> None:
    """numba's CUDA simulator runs the real CUDA kernels here (no GPU), on tiny inputs.

    It checks indexing, launch shapes and the chunked FDK loop, not GPU rounding:
    ``benchmarks/gpu_ct_check.py`` does that on a GPU.
    """
    env = {
        **os.environ,
        "NUMBA_ENABLE_CUDASIM": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    out = subprocess.run(
        [sys.executable, "-c", SIMULATED], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    errors = [float(line) for line in out.stdout.split()]
    assert len(errors) == 5
    assert max(errors) <= 1e-5
