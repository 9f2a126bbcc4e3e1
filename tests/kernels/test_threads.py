"""kernels.threads: pieces cover the work once, failures surface, the BLAS limit is shared."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from kernels import threads


def _blas_threads() -> list[int]:
    return [int(lib["num_threads"]) for lib in threadpool_info() if lib["user_api"] == "blas"]


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


def test_one_blas_thread_is_shared_and_restored() -> None:
    before = _blas_threads()
    assert before, "numpy's BLAS is not visible to threadpoolctl"
    inside = threading.Event()
    release = threading.Event()

    def other_caller() -> None:
        with threads.one_blas_thread():
            inside.set()
            release.wait(30)

    helper = threading.Thread(target=other_caller)
    helper.start()
    assert inside.wait(30)
    with threads.one_blas_thread():
        assert set(_blas_threads()) == {1}
    assert set(_blas_threads()) == {1}, "restored while another caller was still inside"
    release.set()
    helper.join(30)
    assert _blas_threads() == before
