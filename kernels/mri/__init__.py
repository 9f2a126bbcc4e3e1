"""MRI reconstruction kernels: pure functions, ndarray in and ndarray out.

Layout: coils first, readout last; k = 0 at index ``n // 2`` (see :mod:`.cartesian`).
Modules: :mod:`.cartesian` (prewhitening, oversampling removal, centred FFT, RSS),
:mod:`.coils` (Walsh adaptive combine, ACS maps), :mod:`.grappa`, :mod:`.partial_fourier`
(homodyne, POCS), :mod:`.sense` (direct and CG-SENSE), :mod:`.nufft` (Kaiser-Bessel gridding).
Bad input raises ``ValueError``; ``device="cuda"`` without a GPU raises ``RuntimeError``.
The functions named like their modules (``grappa.grappa``, ``nufft.nufft``) are not
re-exported here, so ``kernels.mri.grappa`` stays the module.
"""

from __future__ import annotations

import numpy as np

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
from kernels.mri.coils import adaptive_combine, coil_maps_from_acs, coil_maps_walsh
from kernels.mri.grappa import grappa as _grappa
from kernels.mri.grappa import grappa_apply, grappa_calibrate
from kernels.mri.nufft import nufft as _nufft
from kernels.mri.nufft import (
    nufft_adjoint,
    pipe_density,
    radial_coords,
    ramp_density,
)
from kernels.mri.partial_fourier import homodyne, pocs
from kernels.mri.sense import acs_maps, cg_sense, sense_unfold

__all__ = [
    "acs_maps",
    "adaptive_combine",
    "cg_sense",
    "coil_images",
    "coil_maps_from_acs",
    "coil_maps_walsh",
    "fftc",
    "grappa_apply",
    "grappa_calibrate",
    "homodyne",
    "ifftc",
    "noise_covariance",
    "nufft_adjoint",
    "pipe_density",
    "pocs",
    "prewhiten",
    "radial_coords",
    "ramp_density",
    "remove_readout_oversampling",
    "rss",
    "sense_unfold",
    "warmup",
    "whitening_matrix",
]


def warmup() -> None:
    """Compile (or load from the Numba cache) every CPU kernel on tiny inputs, so the first
    real scan does not pay the JIT cost. Takes seconds cold, milliseconds when cached."""
    rng = np.random.default_rng(0)
    k = rng.standard_normal((2, 16, 16)) + 1j * rng.standard_normal((2, 16, 16))
    k = k.astype(np.complex64)
    us = k.copy()
    us[:, 1:6:2] = 0
    us[:, 11::2] = 0
    _grappa(us, 2, kernel=(2, 3), device="cpu")
    sense_unfold(us, k, 2)
    adaptive_combine(ifftc(k), window=3)
    coords = radial_coords(4, 16, 8)
    y = _nufft(k[:, :8, :8], coords, device="cpu")
    nufft_adjoint(y, coords, (8, 8), device="cpu")
    pipe_density(coords, (8, 8), iters=1)
