"""Dynamic chunking of the adjoint gridding: any thread count and chunking gives the
grid of one thread spreading every sample in order, to float32 summation rounding."""

from __future__ import annotations

import numpy as np
import pytest

from kernels import threads
from kernels.mri.nufft import _Plan, _spread_cpu, radial_coords


@pytest.fixture(scope="module")
def problem() -> tuple[np.ndarray, _Plan]:
    coords = radial_coords(64, 256, 96)  # 16,384 samples: 32 chunks at 2 threads
    rng = np.random.default_rng(7)
    y = rng.standard_normal((3, coords.shape[0])) + 1j * rng.standard_normal((3, 16384))
    return y.astype(np.complex64), _Plan(coords, (96, 96), 1.25, 4)


def _grid(y: np.ndarray, plan: _Plan, count: int) -> np.ndarray:
    return _spread_cpu(y, plan.gx, plan.gy, plan.table, plan.width, *plan.grid, count)


@pytest.mark.parametrize("count", [2, 3, 5])
def test_many_threads_match_one(problem: tuple[np.ndarray, _Plan], count: int) -> None:
    y, plan = problem
    one, many = _grid(y, plan, 1), _grid(y, plan, count)
    assert many.shape == (3, *plan.grid)
    scale = np.abs(one).max()
    assert np.abs(many - one).max() <= 1e-5 * scale  # a lost or doubled chunk is ~1e-2


def test_small_chunks_cover_every_sample(
    problem: tuple[np.ndarray, _Plan], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of 512 samples (the minimum) and single-row reduction bands."""
    y, plan = problem
    one = _grid(y, plan, 1)
    monkeypatch.setattr(threads, "PIECES_PER_THREAD", 10_000)
    many = _grid(y, plan, 4)
    assert np.abs(many - one).max() <= 1e-5 * np.abs(one).max()


def test_coils_shared_out_match_one_coil_at_a_time(problem: tuple[np.ndarray, _Plan]) -> None:
    """Per-coil FFTs claimed by threads (3 coils, 2 threads) against the single-coil path
    (pocketfft's own workers), coil by coil."""
    y, plan = problem
    grid = _grid(y, plan, 2)
    shared = plan.image(grid.copy(), 2)
    for c in range(3):
        alone = plan.image(grid[c : c + 1].copy(), 2)[0]
        np.testing.assert_allclose(shared[c], alone, rtol=0, atol=1e-5 * np.abs(alone).max())
