"""The MRD listener end to end: ismrmrd's ProtocolSerializer sends analytic-phantom k-space
over real TCP to an in-process MrdServer; images come back through on_image (DICOM) and over
the connection (ismrmrd's ProtocolDeserializer)."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.mri import (
    ifftc,
    noise_covariance,
    prewhiten,
    remove_readout_oversampling,
    rss,
    whitening_matrix,
)
from tests.support.mrd_streams import (
    ACQ_IS_NOISE_MEASUREMENT,
    ACQ_LAST_IN_SLICE,
    FOV,
    acquisition,
    cartesian_slice,
    full_lines,
    grappa_lines,
    header,
    radial_kspace,
    running_server,
    send_stream,
)
from tests.support.mri_phantoms import (
    cartesian_multicoil,
    nrmse,
    phantom_image,
    phantom_kspace,
    phantom_kspace_256,
    phantom_support_256,
    pixel_grid,
)


@pytest.fixture(scope="module")
def server():  # type: ignore[no-untyped-def]
    with running_server() as pair:
        yield pair


def pixels(ds) -> np.ndarray:  # type: ignore[no-untyped-def]
    return ds.pixel_array.astype(np.float64)


def test_grappa_r2_stream_matches_fully_sampled(server) -> None:  # type: ignore[no-untyped-def]
    srv, got = server
    before = len(got.datasets)
    k = np.asarray(phantom_kspace_256())
    acqs = cartesian_slice(k, grappa_lines(256, 2, 24))
    images = send_stream(srv.port, header(256, 8, accel=2), acqs)
    ds = got.wait_for(before + 1)[-1]
    ref = rss(ifftc(k))
    mask = phantom_support_256()
    back = images[0].data[0, 0]
    assert back.shape == (256, 256)
    assert nrmse(back, ref) <= 0.03
    scaled = pixels(ds) / float(ds.ImageComments.split(" x ")[-1])
    assert nrmse(scaled, ref) <= 0.03
    assert nrmse(scaled, ref, mask) <= 0.03
    assert "GRAPPA R=2" in ds.DerivationDescription


def test_partial_fourier_stream_uses_homodyne(server) -> None:  # type: ignore[no-untyped-def]
    srv, got = server
    k = cartesian_multicoil(128, 8).astype(np.complex64)
    lines = [(ky, []) for ky in range(0, 88)]  # 88/128 = 11/16 partial Fourier
    hdr = header(128, 8, ky=(0, 87, 64))
    images = send_stream(srv.port, hdr, cartesian_slice(k, lines))
    assert len(images) == 1
    ref = rss(ifftc(k))
    xx, yy = pixel_grid(128)
    mask = phantom_image(xx, yy) > 0
    back = images[0].data[0, 0]
    assert nrmse(back, ref, mask) <= 0.08
    assert "homodyne" in got.datasets[-1].DerivationDescription


def test_radial_stream_is_gridded(server) -> None:  # type: ignore[no-untyped-def]
    srv, got = server
    n, spokes, readout = 128, 201, 256
    k = radial_kspace(n, 8, spokes, readout)
    hdr = header(n, 8, trajectory="radial", ky=(0, spokes - 1, 0), readout=readout)
    acqs = [
        acquisition(k[:, j], j, flags=[ACQ_LAST_IN_SLICE] if j == spokes - 1 else [])
        for j in range(spokes)
    ]
    images = send_stream(srv.port, hdr, acqs)
    assert len(images) == 1
    back = images[0].data[0, 0]
    ref = rss(ifftc(cartesian_multicoil(n, 8)))
    xx, yy = pixel_grid(n)
    mask = phantom_image(xx, yy) > 0
    assert back.shape == (n, n)
    assert nrmse(back, ref, mask) <= 0.15
    assert "radial" in got.datasets[-1].DerivationDescription


def test_noise_scan_prewhitens_and_oversampling_is_removed(server) -> None:  # type: ignore[no-untyped-def]
    srv, got = server
    n, coils = 64, 4
    rng = np.random.default_rng(1)
    mix = np.eye(coils) + 0.4 * rng.standard_normal((coils, coils))
    noise = mix @ (rng.standard_normal((coils, 4096)) + 1j * rng.standard_normal((coils, 4096)))
    kx = (np.arange(2 * n) - n) / 2  # readout oversampled 2x: half-integer cycles/FOV
    ky = np.arange(n) - n // 2
    obj = phantom_kspace(kx[None, :], ky[:, None])
    weights = np.exp(1j * np.arange(coils))[:, None, None] * (1 + np.arange(coils))[:, None, None]
    k = (weights * obj[None]).astype(np.complex64)
    acqs = [
        acquisition(noise[:, i : i + 2 * n], 0, flags=[ACQ_IS_NOISE_MEASUREMENT])
        for i in range(0, 4096, 2 * n)
    ]
    acqs += cartesian_slice(k, full_lines(n))
    images = send_stream(srv.port, header(n, coils, oversampled=True), acqs)
    assert len(images) == 1
    w = whitening_matrix(noise_covariance(noise.astype(np.complex64)))
    ref = rss(ifftc(remove_readout_oversampling(prewhiten(k, w))))
    back = images[0].data[0, 0]
    assert back.shape == (n, n)
    assert nrmse(back, ref) <= 1e-3
    ds = got.datasets[-1]
    assert "prewhitened" in ds.DerivationDescription
    assert float(ds.PixelSpacing[1]) == pytest.approx(FOV / n)
