"""The FBP tail (filtering, guard column, interval lines) against the plain numpy
reference it replaced: the same samples, bit for bit, so the images are the same too."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from kernels.ct import _filters, fbp_parallel
from kernels.ct._cpu_parallel import backproject_parallel, guarded_lines, line_segments
from kernels.ct.parallel import _filtered_views

F32 = npt.NDArray[np.float32]


def _reference(sino: F32, name: str, circle: bool) -> tuple[F32, F32, int]:
    """The numpy path as it was: transpose, np.pad to the diagonal, filter_rows, guard
    column by copy, line_segments in float64."""
    views = np.ascontiguousarray(sino.T)
    if circle:
        n = views.shape[1]
        diagonal = int(np.ceil(np.sqrt(2) * n))
        before = diagonal // 2 - n // 2
        views = np.pad(views, ((0, 0), (before, diagonal - n - before)))
    n = views.shape[1]
    kernel = 2.0 * _filters.ramp_kernel(_filters.padded_size(n))
    filtered = _filters.filter_rows(views, _filters.frequency_response(kernel, name))
    q = np.zeros((filtered.shape[0], n + 1), dtype=np.float32)
    q[:, :n] = filtered
    return q, line_segments(q, n // 2), n // 2


@pytest.mark.parametrize("detectors", [64, 77])
@pytest.mark.parametrize("circle", [True, False])
@pytest.mark.parametrize("name", ["ramp", "hann"])
def test_tail_equals_numpy_reference(detectors: int, circle: bool, name: str) -> None:
    sino = np.random.default_rng(detectors).random((detectors, 90)).astype(np.float32)
    q, lines, centre = _filtered_views(sino, name, circle)
    q_ref, lines_ref, centre_ref = _reference(sino, name, circle)
    assert centre == centre_ref
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(lines, lines_ref)


def test_guarded_lines_reads_a_strided_view() -> None:
    wide = np.random.default_rng(3).standard_normal((12, 40)).astype(np.float32)
    q, lines = guarded_lines(wide[:, :29], 14)
    ref = np.zeros((12, 30), dtype=np.float32)
    ref[:, :29] = wide[:, :29]
    np.testing.assert_array_equal(q, ref)
    np.testing.assert_array_equal(lines, line_segments(ref, 14))


def test_image_equals_reference_backprojection() -> None:
    sino = np.random.default_rng(5).random((96, 120)).astype(np.float32)
    theta = np.linspace(0.0, 180.0, 120, endpoint=False)
    q, lines, centre = _reference(sino, "ramp", True)
    rad = np.deg2rad(theta)
    ref = np.zeros((96, 96), dtype=np.float32)
    cos_t, sin_t = np.cos(rad).astype(np.float32), np.sin(rad).astype(np.float32)
    backproject_parallel(q, lines, cos_t, sin_t, centre, True, False, np.pi / 240, ref)
    np.testing.assert_array_equal(fbp_parallel(sino, theta, device="cpu"), ref)


@pytest.mark.parametrize(("views", "circle"), [(45, True), (60, False), (1, True)])
def test_paired_views_match_np_interp_backprojection(views: int, circle: bool) -> None:
    """The kernel (views two at a time, odd counts and detector ends included) against
    np.interp per view in float64, as iradon reads the filtered projections."""
    size = 64
    sino = np.random.default_rng(views).standard_normal((size, views)).astype(np.float32)
    theta = np.random.default_rng(1).uniform(0.0, 180.0, views)
    q, _, centre = _filtered_views(sino, "ramp", circle)
    rad = np.deg2rad(theta)
    x = np.arange(size) - size // 2
    xx, yy = np.meshgrid(x, x)  # (row, col): y = row - N//2, x = col - N//2
    ref = np.zeros((size, size))
    grid = np.arange(q.shape[1] - 1)
    for v in range(views):
        t = xx * np.cos(rad[v]) - yy * np.sin(rad[v]) + centre
        ref += np.interp(t, grid, q[v, :-1].astype(np.float64), left=0, right=0)
    ref *= np.pi / (2 * views)
    if circle:
        ref[xx**2 + yy**2 > (size // 2) ** 2] = 0
    out = fbp_parallel(sino, theta, output_size=size, circle=circle, device="cpu")
    assert np.abs(out - ref).max() <= 2e-5 * np.abs(ref).max()
