"""The basic Cartesian chain: prewhitening, readout oversampling removal, centred FFTs, RSS.

Array layout everywhere in :mod:`kernels.mri`: coils first, readout last, i.e. k-space is
``(coils, ky, kx)`` in 2D and ``(coils, kz, ky, kx)`` in 3D, with k = 0 at index ``n // 2``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.fft

from kernels.mri._checks import as_complex

C64 = npt.NDArray[np.complex64]
F32 = npt.NDArray[np.float32]

_WORKERS = -1  # scipy.fft threads: all cores the process may use


def _spatial_axes(ndim: int) -> tuple[int, ...]:
    return tuple(range(1, ndim))


def ifftc(kspace: npt.ArrayLike, axes: tuple[int, ...] | None = None) -> C64:
    """Centred orthonormal inverse FFT: ``x = fftshift(ifftn(ifftshift(k), norm="ortho"))``.

    ``axes`` defaults to every axis but the first (the coil axis).
    """
    k = np.asarray(kspace)
    ax = _spatial_axes(k.ndim) if axes is None else axes
    x = scipy.fft.ifftshift(k, axes=ax)
    x = scipy.fft.ifftn(x, axes=ax, norm="ortho", workers=_WORKERS)
    return np.asarray(scipy.fft.fftshift(x, axes=ax), dtype=np.complex64)


def fftc(image: npt.ArrayLike, axes: tuple[int, ...] | None = None) -> C64:
    """Centred orthonormal forward FFT, the inverse of :func:`ifftc`."""
    x = np.asarray(image)
    ax = _spatial_axes(x.ndim) if axes is None else axes
    k = scipy.fft.ifftshift(x, axes=ax)
    k = scipy.fft.fftn(k, axes=ax, norm="ortho", workers=_WORKERS)
    return np.asarray(scipy.fft.fftshift(k, axes=ax), dtype=np.complex64)


def coil_images(kspace: npt.ArrayLike) -> C64:
    """Multi-coil centred inverse FFT of ``(coils, ky, kx)`` or ``(coils, kz, ky, kx)`` k-space."""
    return ifftc(as_complex(kspace, "kspace", (3, 4)))


def remove_readout_oversampling(kspace: npt.ArrayLike) -> C64:
    """Halve the readout (last axis) FOV: inverse FFT along x, keep the central half, FFT back.

    Unnormalised numpy conventions (``ifft`` carries 1/n, ``fft`` none) make the result
    equal the even-index samples ``k[..., ::2]`` whenever the object lies inside the central
    half of the readout FOV, so sample values keep their physical scale (Bernstein et al.,
    Handbook of MRI Pulse Sequences, 2004, ch. 11: oversampling avoids wrap-in, then crop).
    """
    k = as_complex(kspace, "kspace", (1, 2, 3, 4))
    nx = k.shape[-1]
    if nx % 2 or nx < 2:
        raise ValueError(f"readout length must be even to remove 2x oversampling, got {nx}")
    x = scipy.fft.fftshift(scipy.fft.ifft(scipy.fft.ifftshift(k, axes=-1), axis=-1), axes=-1)
    start = nx // 4
    x = x[..., start : start + nx // 2]
    out = scipy.fft.fftshift(scipy.fft.fft(scipy.fft.ifftshift(x, axes=-1), axis=-1), axes=-1)
    return np.ascontiguousarray(out, dtype=np.complex64)


def noise_covariance(noise: npt.ArrayLike) -> npt.NDArray[np.complex128]:
    """Coil noise covariance ``Psi = eta eta^H / N`` from noise-only samples ``(coils, ...)``.

    Noise is zero-mean thermal noise, so no mean is subtracted (Roemer et al., MRM 1990).
    """
    n = as_complex(noise, "noise", (2, 3, 4)).astype(np.complex128)
    eta = n.reshape(n.shape[0], -1)
    if eta.shape[1] < eta.shape[0]:
        raise ValueError(
            f"need at least as many noise samples as coils, got {eta.shape[1]} for {eta.shape[0]}"
        )
    return np.asarray(eta @ eta.conj().T / eta.shape[1])


def whitening_matrix(covariance: npt.ArrayLike, scale: float = 1.0) -> npt.NDArray[np.complex128]:
    """Return ``W = L^{-1} * sqrt(scale)`` with ``Psi = L L^H`` (Cholesky).

    Whitened data ``W d`` has identity noise covariance (Pruessmann et al., MRM 2001, App. A).
    ``scale`` corrects for a different receiver bandwidth between noise scan and imaging
    (noise bandwidth / acquisition bandwidth), as Gadgetron's noise adjust does.
    """
    psi = np.asarray(covariance, dtype=np.complex128)
    if psi.ndim != 2 or psi.shape[0] != psi.shape[1] or psi.shape[0] == 0:
        raise ValueError(f"covariance must be a square (coils, coils) matrix, got {psi.shape}")
    if not np.all(np.isfinite(psi)) or not scale > 0:
        raise ValueError("covariance must be finite and scale positive")
    try:
        chol = np.linalg.cholesky(psi)
    except np.linalg.LinAlgError as err:
        raise ValueError("noise covariance is not positive definite (dead coil?)") from err
    inv = scipy.linalg.solve_triangular(chol, np.eye(psi.shape[0]), lower=True)
    return np.asarray(inv * np.sqrt(scale))


def prewhiten(data: npt.ArrayLike, whitening: npt.ArrayLike) -> C64:
    """Apply a whitening matrix along the coil axis: ``out[c] = sum_d W[c, d] data[d]``."""
    d = as_complex(data, "data", (2, 3, 4))
    w = np.asarray(whitening, dtype=np.complex64)
    if w.shape != (d.shape[0], d.shape[0]):
        raise ValueError(f"whitening matrix {w.shape} does not match {d.shape[0]} coils")
    out = w @ d.reshape(d.shape[0], -1)
    return np.ascontiguousarray(out.reshape(d.shape), dtype=np.complex64)


def rss(images: npt.ArrayLike) -> F32:
    """Root-sum-of-squares combination ``sqrt(sum_c |x_c|^2)`` over the first (coil) axis
    (Roemer et al., MRM 1990)."""
    x = as_complex(images, "images", (2, 3, 4))
    return np.asarray(np.sqrt(np.sum(x.real**2 + x.imag**2, axis=0)), dtype=np.float32)
