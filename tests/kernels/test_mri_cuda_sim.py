"""The CUDA kernels, run in numba's CUDA simulator on tiny inputs (no GPU needed).

The simulator executes the kernel bodies as Python threads, so this checks their
indexing, atomics and agreement with the CPU path, not GPU compilation or speed;
``benchmarks/gpu_mri_check.py`` without ``--small`` does that on a GPU machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_kernels_does_not_touch_cuda() -> None:
    code = "import sys, kernels.mri; print(any('cuda' in m for m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.stdout.strip() == "False"


def test_cuda_kernels_match_cpu_in_simulator() -> None:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_mri_check.py"), "--small"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith("OK")
    assert out.stdout.count("nrmse=") == 3
