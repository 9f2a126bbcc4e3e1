"""SENSE reconstruction by conjugate gradients (Pruessmann et al., MRM 46:638, 2001).

The encoding operator of Cartesian data is ``E x = M F (S_c x)`` with coil maps ``S``,
the centred orthonormal FFT ``F`` and the sampling mask ``M``. CG solves the normal
equations ``(E^H E + lam I) x = E^H y``; with RSS-normalised maps (``sum_c |S_c|^2 = 1``
in the object) ``E^H E`` has eigenvalues in [0, 1], so ``lam`` needs no data scaling.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from kernels.mri._checks import as_complex, positive_int
from kernels.mri.cartesian import fftc, ifftc
from kernels.mri.coils import coil_maps_from_acs
from kernels.mri.grappa import acs_region, sampled_lines

C64 = npt.NDArray[np.complex64]


def conjugate_gradient(
    normal: Callable[[C64], C64], rhs: C64, iters: int, tol: float
) -> tuple[C64, int]:
    """Plain CG for a Hermitian positive semi-definite operator (Hestenes and Stiefel, 1952);
    stops when ``||r|| <= tol ||rhs||``. Returns ``(x, iterations)``."""
    x = np.zeros_like(rhs)
    r = rhs.copy()
    p = r.copy()
    rr = float(np.vdot(r, r).real)
    stop = tol**2 * rr
    for i in range(iters):
        if rr <= stop:
            return x, i
        q = normal(p)
        alpha = rr / float(np.vdot(p, q).real)
        x += alpha * p
        r -= alpha * q
        rr_new = float(np.vdot(r, r).real)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x, iters


def acs_maps(kspace: npt.ArrayLike) -> C64:
    """Coil maps from the ACS block (longest run of acquired lines) of ``(coils, ny, nx)``."""
    k = as_complex(kspace, "kspace", (3,))
    acs = acs_region(sampled_lines(k))
    if acs.stop - acs.start < 4:
        raise ValueError("need at least 4 consecutive acquired lines (ACS) for coil maps")
    only = np.zeros_like(k)
    only[:, acs] = k[:, acs]
    return coil_maps_from_acs(only)


def cg_sense(
    kspace: npt.ArrayLike,
    maps: npt.ArrayLike,
    iters: int = 30,
    lam: float = 1e-3,
    tol: float = 1e-5,
) -> C64:
    """CG-SENSE image from zero-filled Cartesian ``(coils, ny[, nz], nx)`` k-space.

    Samples are taken as acquired where any coil is non-zero. Returns the complex image;
    with RSS-normalised maps its magnitude is on the scale of the RSS of the coil images.
    """
    k = as_complex(kspace, "kspace", (3, 4))
    s = as_complex(maps, "maps", (3, 4))
    if s.shape != k.shape:
        raise ValueError(f"maps {s.shape} must match k-space {k.shape}")
    positive_int(iters, "iters")
    if not lam >= 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    mask = np.any(k != 0, axis=0)[None]
    s_conj = np.conj(s)

    def normal(x: C64) -> C64:
        coil = fftc(s * x[None]) * mask
        return np.asarray(np.sum(s_conj * ifftc(coil), axis=0) + lam * x, dtype=np.complex64)

    rhs = np.asarray(np.sum(s_conj * ifftc(k), axis=0), dtype=np.complex64)
    x, _ = conjugate_gradient(normal, rhs, iters, tol)
    return x
