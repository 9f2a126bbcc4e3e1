"""Cartesian chain: FFTs, readout oversampling, prewhitening, RSS and adaptive combine."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.mri.cartesian import (
    coil_images,
    fftc,
    ifftc,
    noise_covariance,
    prewhiten,
    remove_readout_oversampling,
    rss,
    whitening_matrix,
)
from kernels.mri.coils import adaptive_combine, coil_maps_walsh
from tests.support.mri_phantoms import (
    coil_coefficients,
    coil_maps,
    nrmse,
    phantom_kspace_256,
    phantom_support_256,
    pixel_grid,
)

RNG = np.random.default_rng(7)


def test_centred_fft_round_trip_and_dc_at_centre() -> None:
    x = (RNG.standard_normal((2, 16, 12)) + 1j * RNG.standard_normal((2, 16, 12))).astype(
        np.complex64
    )
    assert np.allclose(ifftc(fftc(x)), x, atol=1e-5)
    const = np.ones((1, 8, 8), dtype=np.complex64)
    k = fftc(const)
    assert abs(k[0, 4, 4]) == pytest.approx(8.0, rel=1e-6)  # orthonormal: sqrt(64) at k=0
    assert np.abs(k).sum() == pytest.approx(8.0, rel=1e-5)


def test_coil_images_handles_3d() -> None:
    k = np.zeros((2, 4, 8, 8), dtype=np.complex64)
    k[:, 2, 4, 4] = 1.0
    img = coil_images(k)
    assert img.shape == (2, 4, 8, 8)
    assert np.allclose(np.abs(img), 1 / np.sqrt(4 * 8 * 8), atol=1e-7)


def test_readout_oversampling_removal_matches_native_acquisition() -> None:
    # object confined to the central half of a 2x-oversampled readout FOV
    img = np.zeros((3, 16, 64), dtype=np.complex64)
    img[:, 4:12, 20:44] = RNG.standard_normal((3, 8, 24))
    k_os = np.fft.fftshift(np.fft.fft(np.fft.ifftshift(img, axes=-1), axis=-1), axes=-1)
    out = remove_readout_oversampling(k_os)
    native = np.fft.fftshift(
        np.fft.fft(np.fft.ifftshift(img[..., 16:48], axes=-1), axis=-1), axes=-1
    )
    assert out.shape == (3, 16, 32)
    assert np.allclose(out, native, atol=1e-4)
    assert np.allclose(out, k_os[..., ::2], atol=1e-4)  # equals decimation by 2


def test_readout_oversampling_rejects_odd_length() -> None:
    with pytest.raises(ValueError, match="even"):
        remove_readout_oversampling(np.ones((2, 4, 7), dtype=np.complex64))


def _correlated_noise(nc: int, ns: int) -> tuple[np.ndarray, np.ndarray]:
    mix = RNG.standard_normal((nc, nc)) + 1j * RNG.standard_normal((nc, nc))
    mix = np.eye(nc) + 0.4 * mix
    white = (RNG.standard_normal((nc, ns)) + 1j * RNG.standard_normal((nc, ns))) / np.sqrt(2)
    return mix, mix @ white


def test_prewhitening_gives_identity_noise_covariance() -> None:
    _, noise = _correlated_noise(8, 20000)
    w = whitening_matrix(noise_covariance(noise))
    # on the calibration samples themselves the result is exact
    assert np.allclose(noise_covariance(prewhiten(noise, w)), np.eye(8), atol=1e-5)


def test_prewhitening_generalises_to_fresh_noise() -> None:
    mix, noise = _correlated_noise(8, 20000)
    w = whitening_matrix(noise_covariance(noise))
    fresh = mix @ (RNG.standard_normal((8, 20000)) + 1j * RNG.standard_normal((8, 20000)))
    cov = noise_covariance(prewhiten(fresh / np.sqrt(2), w))
    # sampling error of a covariance from N samples ~ 1/sqrt(N) = 0.007
    assert np.abs(cov - np.eye(8)).max() < 0.05


def test_whitening_scale_and_bad_covariance() -> None:
    psi = np.diag([4.0, 1.0]).astype(np.complex128)
    assert np.allclose(whitening_matrix(psi, scale=4.0), np.diag([1.0, 2.0]))
    with pytest.raises(ValueError, match="positive definite"):
        whitening_matrix(np.diag([1.0, -1.0]))
    with pytest.raises(ValueError, match="square"):
        whitening_matrix(np.ones((2, 3)))
    with pytest.raises(ValueError, match="noise samples"):
        noise_covariance(np.ones((8, 4), dtype=np.complex64))
    with pytest.raises(ValueError, match="coils"):
        prewhiten(np.ones((3, 4, 4)), np.eye(2))


def test_rss_of_single_coil_is_magnitude() -> None:
    x = (RNG.standard_normal((1, 8, 8)) + 1j * RNG.standard_normal((1, 8, 8))).astype(np.complex64)
    assert np.allclose(rss(x), np.abs(x[0]), rtol=1e-6)


def test_adaptive_combine_recovers_maps_and_rss_magnitude() -> None:
    kspace_256 = phantom_kspace_256()
    support_256 = phantom_support_256()
    images = ifftc(kspace_256)
    combined, maps = adaptive_combine(images)
    ref = rss(images)
    err = nrmse(np.abs(combined), ref, support_256)
    assert err < 0.01, err
    xx, yy = pixel_grid(256)
    truth = coil_maps(coil_coefficients(8), xx, yy)
    truth /= np.sqrt(np.sum(np.abs(truth) ** 2, axis=0))
    # maps agree with the true normalised maps up to one global phase per pixel
    corr = np.abs(np.sum(np.conj(truth) * maps, axis=0))[support_256]
    assert np.median(corr) > 0.99, np.median(corr)
    assert maps.shape == images.shape


def test_walsh_maps_work_in_3d() -> None:
    x = RNG.standard_normal((4, 4, 8, 8)) + 1j * RNG.standard_normal((4, 4, 8, 8))
    maps = coil_maps_walsh(x, window=3)
    assert maps.shape == (4, 4, 8, 8)
    assert np.allclose(np.sum(np.abs(maps) ** 2, axis=0), 1.0, atol=1e-4)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.ones((8, 8)), "dimensions"),
        (np.ones((2, 0, 8)), "empty"),
        (np.full((2, 4, 4), np.nan), "NaN"),
        (np.array([[["a"]]]), "numeric"),
    ],
)
def test_bad_inputs_raise_value_error(bad: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        rss(bad if bad.ndim != 2 else bad[None, None, None, None])
    with pytest.raises(ValueError, match=match):
        coil_images(bad)
