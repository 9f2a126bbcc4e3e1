"""kernels.threads: pieces cover the work once, failures surface, the BLAS limit is shared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kernels import threads

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("total", "count", "minimum"), [(1, 2, 1), (511, 2, 1), (10, 4, 3)])
def test_ranges_cover_once(total: int, count: int, minimum: int) -> None:
    pieces = list(threads.ranges(total, count, minimum))
    covered = np.concatenate([np.arange(lo, hi) for lo, hi in pieces])
    np.testing.assert_array_equal(covered, np.arange(total))
    assert all(hi - lo >= minimum for lo, hi in pieces[:-1])


def test_shared_pieces_go_to_one_thread_each() -> None:
    pieces = threads.ranges(10_000, 4, 1)
    seen: list[list[int]] = [[] for _ in range(4)]
    threads.on_threads(4, lambda t: seen[t].extend(lo for lo, _ in pieces))
    starts = sorted(s for part in seen for s in part)
    assert starts == [lo for lo, _ in threads.ranges(10_000, 4, 1)]


def test_a_failing_piece_is_raised_after_all_finish() -> None:
    done: list[int] = []

    def work(t: int) -> None:
        if t == 1:
            raise ValueError("boom")
        done.append(t)

    with pytest.raises(ValueError, match="boom"):
        threads.on_threads(3, work)
    assert sorted(done) == [0, 2]


_PROBE = """
import json, numpy as np
from threadpoolctl import threadpool_info
from kernels.mri.grappa import grappa_calibrate
count = lambda: [int(i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]
before = count()
acs = np.random.default_rng(0).standard_normal((2, 12, 16)).astype(np.complex64)
grappa_calibrate(acs, 2, (2, 3))
after = count()
grappa_calibrate(acs, 2, (2, 3))
print(json.dumps([before, after, count()]))
"""


def test_blas_stays_on_one_thread_after_a_calibration() -> None:
    """In a fresh process: BLAS (every library numpy and scipy loaded) has its default
    threads until grappa_calibrate, then one, and keeps one."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OPENBLAS_NUM_THREADS", None)
    run = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         cwd=ROOT, env=env, check=True, timeout=600)  # fmt: skip
    before, after, later = json.loads(run.stdout)
    assert before and after and later
    if (os.cpu_count() or 1) > 1:
        assert max(before) > 1, "BLAS started on one thread: nothing would be tested"
    assert set(after) == set(later) == {1}
