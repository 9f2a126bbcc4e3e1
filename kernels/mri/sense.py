"""SENSE: direct Cartesian unfolding (Pruessmann et al., MRM 42:952, 1999) and conjugate
gradients for any Cartesian mask (Pruessmann et al., MRM 46:638, 2001).

The encoding operator of Cartesian data is ``E x = M F (S_c x)`` with coil maps ``S``,
the centred orthonormal FFT ``F`` and the sampling mask ``M``. CG solves the normal
equations ``(E^H E + lam I) x = E^H y``; with RSS-normalised maps (``sum_c |S_c|^2 = 1``
in the object) ``E^H E`` has eigenvalues in [0, 1], so ``lam`` needs no data scaling.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from numba import njit, prange

from kernels.mri._checks import as_complex, positive_int
from kernels.mri.cartesian import fftc, ifftc
from kernels.mri.coils import coil_maps_from_acs
from kernels.mri.grappa import acs_region, lattice_phase, sampled_lines

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


@njit(nogil=True, cache=True)
def _solve_hpd(a: npt.NDArray[np.complex128], b: npt.NDArray[np.complex128]) -> None:
    """Solve ``a x = b`` in place (x in b) for a small Hermitian positive definite ``a``:
    Gaussian elimination needs no pivoting for such matrices (Golub and Van Loan, 4.2)."""
    n = b.size
    for i in range(n):
        for j in range(i + 1, n):
            f = a[j, i] / a[i, i]
            for k in range(i, n):
                a[j, k] -= f * a[i, k]
            b[j] -= f * b[i]
    for i in range(n - 1, -1, -1):
        for k in range(i + 1, n):
            b[i] -= a[i, k] * b[k]
        b[i] /= a[i, i]


@njit(parallel=True, nogil=True, cache=True)
def _unfold(a: C64, s: C64, alpha: C64, lam: float) -> C64:  # pragma: no cover - jitted
    """Solve ``(E^H E + lam tr/R I) x = E^H a`` for each set of R aliased pixels, where
    ``E[(c, m), m'] = alpha[(m - m') mod R] S_c(y_m')``."""
    nc, ny, nx = a.shape
    r = alpha.size
    step = ny // r
    out = np.zeros((ny, nx), dtype=np.complex64)
    for g in prange(step):
        e = np.empty((nc * r, r), dtype=np.complex128)
        ehe = np.empty((r, r), dtype=np.complex128)
        ehb = np.empty(r, dtype=np.complex128)
        for x in range(nx):
            for c in range(nc):
                for m in range(r):
                    for mp in range(r):
                        e[c * r + m, mp] = alpha[(m - mp) % r] * s[c, g + mp * step, x]
            tr = 0.0
            for i in range(r):
                ehb[i] = 0
                for q in range(nc * r):
                    ehb[i] += np.conj(e[q, i]) * a[q // r, g + (q % r) * step, x]
                for j in range(r):
                    acc = 0j
                    for q in range(nc * r):
                        acc += np.conj(e[q, i]) * e[q, j]
                    ehe[i, j] = acc
                tr += ehe[i, i].real
            if tr == 0.0:
                continue  # every pixel of the set lies outside the coil maps
            for i in range(r):
                ehe[i, i] += lam * tr / r
            _solve_hpd(ehe, ehb)
            for m in range(r):
                out[g + m * step, x] = ehb[m]
    return out


def _alias_weights(ny: int, r: int, phase: int) -> C64:
    """``alpha_j``: response at ``j ny / R`` to a unit pixel, for the R-lattice at ``phase``
    (computed through the same ``ifftc``/``fftc`` as the data, so no sign conventions)."""
    delta = np.zeros((1, ny, 1), dtype=np.complex64)
    delta[0, ny // 2, 0] = 1
    lattice = np.zeros((1, ny, 1), dtype=np.float32)
    lattice[0, phase::r, 0] = 1
    resp = ifftc(fftc(delta) * lattice)[0, :, 0]
    return np.ascontiguousarray(resp[(ny // 2 + np.arange(r) * (ny // r)) % ny])


def sense_unfold(
    kspace: npt.ArrayLike, maps: npt.ArrayLike, acceleration: int, lam: float = 1e-3
) -> C64:
    """Direct SENSE for regular 1D undersampling along ky of ``(coils, ny, nx)`` k-space.

    Only the lattice lines are used (extra ACS lines would break the aliasing pattern).
    Each pixel set ``y_m = g + m ny/R`` solves the regularised least squares
    ``a_c(y_m) = sum_m' alpha_{m-m'} S_c(y_m') x(y_m')`` (Pruessmann 1999, eq. 9), with
    ``lam`` relative to the mean eigenvalue of ``E^H E``. Requires ``ny % R == 0``.
    """
    k = as_complex(kspace, "kspace", (3,))
    s = as_complex(maps, "maps", (3,))
    r = positive_int(acceleration, "acceleration", 2)
    if s.shape != k.shape:
        raise ValueError(f"maps {s.shape} must match k-space {k.shape}")
    if k.shape[1] % r:
        raise ValueError(f"ny={k.shape[1]} must be a multiple of R={r} for direct SENSE")
    if not lam >= 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    phase = lattice_phase(sampled_lines(k), r)
    lattice = np.zeros_like(k)
    lattice[:, phase::r] = k[:, phase::r]
    return np.asarray(_unfold(ifftc(lattice), s, _alias_weights(k.shape[1], r, phase), lam))
