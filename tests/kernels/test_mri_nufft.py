"""NUFFT: accuracy against a direct NUDFT, the adjoint inner-product test, density
compensation, and a radial reconstruction of the analytic phantom."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from kernels.mri.cartesian import ifftc
from kernels.mri.nufft import (
    nudft_adjoint,
    nufft,
    nufft_adjoint,
    pipe_density,
    radial_coords,
    ramp_density,
)
from tests.support.mri_phantoms import nrmse, phantom_image, phantom_kspace, pixel_grid

RNG = np.random.default_rng(3)
N, M = 32, 2000


@pytest.fixture(scope="module")
def problem() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    coords = RNG.uniform(-N / 2, N / 2, (M, 2))
    y = (RNG.standard_normal((2, M)) + 1j * RNG.standard_normal((2, M))).astype(np.complex64)
    x = (RNG.standard_normal((2, N, N)) + 1j * RNG.standard_normal((2, N, N))).astype(np.complex64)
    return coords, y, x


@pytest.mark.parametrize(
    ("osf", "width", "limit"),
    # measured: 6.8e-6 (accuracy gate), 6.0e-4, 7.0e-3 (SigPy's default geometry)
    [(2.0, 6, 2e-5), (2.0, 4, 1e-3), (1.25, 4, 1e-2)],
)
def test_adjoint_matches_direct_nudft(problem, osf: float, width: int, limit: float) -> None:
    coords, y, _ = problem
    err = nrmse(
        nufft_adjoint(y, coords, (N, N), osf, width, device="cpu"), nudft_adjoint(y, coords, (N, N))
    )
    print(f"adjoint NUFFT osf={osf} W={width} NRMSE {err:.2e}")
    assert err <= limit


@pytest.mark.parametrize(("osf", "width"), [(2.0, 6), (1.25, 4)])
def test_inner_product_adjoint_test(problem, osf: float, width: int) -> None:
    coords, y, x = problem
    lhs = np.vdot(x, nufft_adjoint(y, coords, (N, N), osf, width, device="cpu"))
    rhs = np.vdot(nufft(x, coords, osf, width, device="cpu"), y)
    assert abs(lhs - rhs) / abs(lhs) < 1e-5


def test_forward_matches_direct_nudft(problem) -> None:
    coords, _, x = problem
    p = (np.arange(N) - N // 2) / N
    e = np.exp(
        -2j
        * np.pi
        * (np.outer(coords[:, 1], p)[:, :, None] + np.outer(coords[:, 0], p)[:, None, :])
    )
    ref = np.einsum("cyx,myx->cm", x.astype(np.complex128), e)
    assert nrmse(nufft(x, coords, 2.0, 6, device="cpu"), ref) < 2e-5


def test_pipe_density_agrees_with_analytic_radial_weights() -> None:
    n, spokes, readout = 64, 101, 128
    coords = radial_coords(spokes, readout, n)
    ratio = pipe_density(coords, (n, n)) / ramp_density(coords, spokes, n / readout)
    assert abs(np.median(ratio) - 1) < 0.01
    assert np.percentile(np.abs(ratio - 1), 90) < 0.1


def test_radial_phantom_reconstruction() -> None:
    # 128^2, 202 spokes (~ pi/2 * 128, Nyquist), 2x readout oversampling, Pipe weights.
    # Reference: Cartesian IDFT of the same analytic k-space on [-64, 64)^2; the radial
    # disc of k-space loses the square's corners, so the two differ at edges. Measured
    # NRMSE 0.075 over the support eroded by 3 px.
    n = 128
    coords = radial_coords(202, 256, n)
    y = phantom_kspace(coords[:, 0], coords[:, 1])
    img = nufft_adjoint(y * pipe_density(coords, (n, n)), coords, (n, n), device="cpu")
    k = np.arange(-n // 2, n // 2)
    cart = (ifftc(phantom_kspace(k[None, :], k[:, None])[None])[0] * n).real
    xx, yy = pixel_grid(n)
    support = scipy.ndimage.binary_erosion(phantom_image(xx, yy) > 0, iterations=3)
    assert nrmse(img.real, cart, support) < 0.1
    assert np.abs(img.imag).max() < 0.02  # real object, Hermitian-symmetric sampling


def test_nufft_input_validation(problem) -> None:
    coords, y, x = problem
    with pytest.raises(ValueError, match="samples per coil"):
        nufft_adjoint(y[:, :10], coords, (N, N))
    with pytest.raises(ValueError, match=r"\(samples, 2\)"):
        nufft_adjoint(y, coords[:, :1], (N, N))
    with pytest.raises(ValueError, match="within"):
        nufft_adjoint(y, coords * 3, (N, N))
    with pytest.raises(ValueError, match="oversampling"):
        nufft(x, coords, osf=1.0)
    with pytest.raises(ValueError, match="NaN"):
        nufft(np.full_like(x, np.nan), coords)
