"""Parallel-beam FBP against scikit-image's iradon on the Shepp-Logan phantom."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from skimage.data import shepp_logan_phantom
from skimage.transform import iradon, radon, rescale

from kernels.ct import fbp_parallel
from tests.support.ct_phantoms import Ellipsoid, parallel_sinogram

FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")
SIZE = 128


@pytest.fixture(scope="module")
def phantom() -> npt.NDArray[np.float64]:
    return np.asarray(rescale(shepp_logan_phantom(), SIZE / 400, anti_aliasing=True))


@pytest.fixture(scope="module")
def theta() -> npt.NDArray[np.float64]:
    return np.linspace(0.0, 180.0, 180, endpoint=False)


@pytest.fixture(scope="module")
def sinogram(phantom: npt.NDArray[np.float64], theta: npt.NDArray[np.float64]) -> np.ndarray:
    return np.asarray(radon(phantom, theta))


def _mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def test_ramp_accuracy_beats_threshold_and_iradon(phantom, theta, sinogram) -> None:
    ours = _mae(fbp_parallel(sinogram, theta, device="cpu"), phantom)
    theirs = _mae(iradon(sinogram, theta), phantom)
    assert ours < 0.025
    assert ours <= theirs * 1.02 + 1e-4


@pytest.mark.parametrize("name", FILTERS)
def test_every_filter_within_iradon_error(phantom, theta, sinogram, name: str) -> None:
    ours = fbp_parallel(sinogram, theta, filter=name, device="cpu")
    ref = iradon(sinogram, theta, filter_name=name)
    assert _mae(ours, phantom) <= _mae(ref, phantom) * 1.02 + 1e-4
    # Same formula in float32 rather than float64: agreement to float32 rounding.
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("circle", [True, False])
@pytest.mark.parametrize("output_size", [None, 97, 160])
def test_matches_iradon_geometry(theta, sinogram, circle: bool, output_size) -> None:
    ours = fbp_parallel(sinogram, theta, output_size=output_size, circle=circle, device="cpu")
    ref = iradon(sinogram.astype(np.float32), theta, output_size=output_size, circle=circle)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    diff = np.abs(ours - ref) / np.abs(ref).max()
    # Pixels whose ray lands exactly on the detector's last sample (image larger than
    # the detector) can be in or out by float32 rounding: one view's sample, < 1%.
    assert np.quantile(diff, 0.999) <= 1e-4
    assert diff.max() <= 1e-2


def test_nearest_interpolation_matches_iradon_on_average(theta, sinogram) -> None:
    ours = fbp_parallel(sinogram, theta, interpolation="nearest", device="cpu")
    ref = iradon(sinogram, theta, interpolation="nearest")
    # A float32 position next to a half-sample may round to the other neighbour than
    # iradon's float64 one, so single pixels can differ by a sample step; the mean can't.
    assert np.abs(ours - ref).mean() <= 1e-4 * np.abs(ref).max()


def test_unsorted_and_wide_angles_match_iradon(sinogram, theta) -> None:
    order = np.random.default_rng(1).permutation(theta.shape[0])
    shifted = theta[order] + 360.0
    ours = fbp_parallel(sinogram[:, order], shifted, device="cpu")
    ref = iradon(sinogram[:, order], shifted)
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()


def test_many_angles_and_wide_detector() -> None:
    """2050 views (> 2047) of a 4101-pixel (> 4096) detector, reconstructed at 64^2.

    A centred uniform disc of radius 1500 px has p(t) = 2 sqrt(R^2 - t^2) at every angle,
    so the exact image is 1 everywhere in the 64-pixel field; FBP of an edge this far
    away leaves < 1% bias.
    """
    disc = [Ellipsoid(1.0, (1500.0, 1500.0, 1e9), (0.0, 0.0, 0.0))]
    theta = np.linspace(0.0, 180.0, 2050, endpoint=False)
    sino = parallel_sinogram(disc, 4101, theta[:1])
    image = fbp_parallel(np.repeat(sino, theta.shape[0], axis=1), theta, output_size=64)
    inside = image[np.hypot(*np.mgrid[-32:32, -32:32]) < 30]
    assert np.abs(inside - 1.0).max() < 0.01


@pytest.mark.parametrize(
    ("sino", "theta", "kwargs", "match"),
    [
        (np.zeros((8, 4)), np.arange(5.0), {}, "5 angles but the data has 4 views"),
        (np.zeros((8, 4, 2)), np.arange(4.0), {}, "must be 2-D"),
        (np.zeros((0, 4)), np.arange(4.0), {}, "empty"),
        (np.zeros((8, 0)), np.arange(0.0), {}, "empty"),
        (np.full((8, 4), np.nan), np.arange(4.0), {}, "NaN or inf"),
        (np.full((8, 4), np.inf), np.arange(4.0), {}, "NaN or inf"),
        (np.zeros((8, 4)), [0.0, np.nan, 1.0, 2.0], {}, "theta_deg contains NaN"),
        (np.zeros((8, 4)), np.zeros((2, 2)), {}, "1-D"),
        (np.zeros((8, 4)), np.arange(4.0), {"filter": "ram-lak"}, "unknown filter"),
        (np.zeros((8, 4)), np.arange(4.0), {"interpolation": "cubic"}, "interpolation"),
        (np.zeros((8, 4)), np.arange(4.0), {"output_size": 0}, "output_size"),
        (np.zeros((8, 4), dtype=complex), np.arange(4.0), {}, "real"),
        (np.array([["a"]]), np.arange(1.0), {}, "numeric"),
    ],
)
def test_bad_input_is_a_value_error(sino, theta, kwargs, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fbp_parallel(sino, theta, device="cpu", **kwargs)
