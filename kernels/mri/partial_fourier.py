"""Partial Fourier reconstruction along the phase-encode axis (``ky``, axis -2).

Input is zero-filled ``(coils, ny, nx)`` k-space whose acquired lines are one contiguous
block containing k = 0 and reaching one edge. With ``c = ny // 2`` and ``h`` the largest
``|ky|`` acquired on the short side, lines ``|ky| <= h`` are the symmetric band, sampled
on both sides; it gives the low-resolution phase estimate.
Both methods return complex coil images, so the usual coil combination follows.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from kernels.mri._checks import as_complex, positive_int
from kernels.mri.cartesian import fftc, ifftc

C64 = npt.NDArray[np.complex64]
F64 = npt.NDArray[np.float64]


def _geometry(k: C64) -> tuple[int, bool]:
    """(h, high_missing): half-width of the symmetric band, and which side is missing."""
    ny = k.shape[-2]
    c = ny // 2
    lines = np.nonzero(np.any(k != 0, axis=(0, 2)))[0]
    if lines.size == 0:
        raise ValueError("k-space is all zero")
    if lines[-1] - lines[0] + 1 != lines.size or not lines[0] <= c <= lines[-1]:
        raise ValueError("partial Fourier needs one contiguous block of lines through k = 0")
    high_missing = bool(lines[-1] < ny - 1)
    if high_missing and lines[0] > 0:
        raise ValueError("acquired lines must reach one edge of k-space")
    h = int(lines[-1] - c) if high_missing else int(c - lines[0])
    if h < 1:
        raise ValueError("need at least one acquired line beyond k = 0 for the phase estimate")
    return h, high_missing


def _ky(ny: int) -> F64:
    return np.arange(ny, dtype=np.float64) - ny // 2


def _phase(k: C64, h: int) -> C64:
    """``exp(i phi)`` of the low-resolution image from the Hann-windowed symmetric band."""
    ky = _ky(k.shape[-2])
    win = np.where(np.abs(ky) <= h, 0.5 + 0.5 * np.cos(np.pi * ky / (h + 1)), 0.0)
    low = ifftc(k * win[None, :, None].astype(np.float32))
    return np.asarray(np.exp(1j * np.angle(low)), dtype=np.complex64)


def homodyne(kspace: npt.ArrayLike) -> C64:
    """Homodyne detection (Noll, Nishimura, Macovski, IEEE TMI 10:154, 1991).

    ``x = Re{ IFFT(H k) exp(-i phi) } exp(i phi)`` with the weighting ``H = 2 S``, where
    ``S(ky) = 1`` on the acquired-only side, ``0`` on the missing side and the linear ramp
    ``1/2 - ky / (2 (h + 1))`` across the symmetric band, so ``S(ky) + S(-ky) = 1`` and
    the conjugate-symmetric half is restored exactly for a real object times ``exp(i phi)``.
    """
    k = as_complex(kspace, "kspace", (3,))
    h, high_missing = _geometry(k)
    ky = _ky(k.shape[-2]) * (1 if high_missing else -1)
    step = np.clip(0.5 - ky / (2 * (h + 1)), 0.0, 1.0)
    phase = _phase(k, h)
    img = ifftc(k * (2 * step)[None, :, None].astype(np.float32))
    return np.asarray((img * np.conj(phase)).real * phase, dtype=np.complex64)


def pocs(kspace: npt.ArrayLike, iters: int = 10) -> C64:
    """Projection onto convex sets (Haacke, Lindskog, Lin, JMR 92:126, 1991).

    Alternates ``x <- |x| exp(i phi)`` (phase constraint from the symmetric band) with
    data consistency (measured lines put back), starting from the zero-filled image.
    """
    k = as_complex(kspace, "kspace", (3,))
    positive_int(iters, "iters")
    h, _ = _geometry(k)
    acquired = np.any(k != 0, axis=(0, 2))[None, :, None]
    phase = _phase(k, h)
    est = k.copy()
    for _ in range(iters):
        img = np.abs(ifftc(est)) * phase
        est = np.where(acquired, k, fftc(img))
    return ifftc(est)
