"""Analytic MR phantoms: exact k-space of ellipses with smooth coil sensitivities.

Avoiding the inverse crime (Guerquin-Kern et al., 2012): k-space is the continuous Fourier
transform of the object sampled at the k-space positions, never an FFT of a pixel image.

Units: the field of view is 1 (object coordinates in [-1/2, 1/2)), k is in cycles/FOV.
An ellipse with centre c, semi-axes (a, b), rotation theta and intensity rho has

    F(k) = rho * a * b * J1(2 pi kappa) / kappa * exp(-i 2 pi k.c),
    kappa = sqrt((a k_u)^2 + (b k_v)^2),  (k_u, k_v) = k rotated by -theta,

with F(0) = rho * pi * a * b (the area) (Koay, Sarlls, Ozarslan, MRM 58:430, 2007).

Coil sensitivities are chosen as *truncated Fourier series* ``S_c(x) = sum_m s_cm
exp(i 2 pi m.x)`` with integer ``|m_x|, |m_y| <= order``: smooth, complex, and exact in
k-space, because multiplying by ``exp(i 2 pi m.x)`` shifts k-space by ``m``:
``F_c(k) = sum_m s_cm F(k - m)``. The coefficients are the low-order DFT of a Gaussian
bump centred outside the object on a ring, with a coil-dependent phase, so each map looks
like a surface coil. On an integer Cartesian grid the shifted transforms are slices of one
transform on a grid padded by ``order``, so the whole data set costs one phantom evaluation.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt
import scipy.special

from tests.support.ct_phantoms import SHEPP_LOGAN_TOFT

C128 = npt.NDArray[np.complex128]
F64 = npt.NDArray[np.float64]

# Modified Shepp-Logan (Toft), as (rho, a, b, x0, y0, theta_deg) on [-1, 1]; scaled by 0.45
# below so the object fills 90 % of the FOV width.
_SHEPP_LOGAN = SHEPP_LOGAN_TOFT


def ellipses(scale: float = 0.45) -> list[tuple[float, float, float, float, float, float]]:
    """The phantom's ellipses in FOV units: (rho, a, b, x0, y0, theta_rad)."""
    return [
        (rho, a * scale, b * scale, x0 * scale, y0 * scale, np.deg2rad(th))
        for rho, a, b, x0, y0, th in _SHEPP_LOGAN
    ]


def phantom_kspace(kx: npt.ArrayLike, ky: npt.ArrayLike, scale: float = 0.45) -> C128:
    """Continuous FT of the ellipse phantom at (kx, ky) in cycles/FOV."""
    kx_a, ky_a = np.asarray(kx, dtype=np.float64), np.asarray(ky, dtype=np.float64)
    out = np.zeros(np.broadcast(kx_a, ky_a).shape, dtype=np.complex128)
    for rho, a, b, x0, y0, th in ellipses(scale):
        ku = kx_a * np.cos(th) + ky_a * np.sin(th)
        kv = -kx_a * np.sin(th) + ky_a * np.cos(th)
        kappa = np.hypot(a * ku, b * kv)
        safe = np.where(kappa > 1e-12, kappa, 1.0)
        shape = np.where(kappa > 1e-12, scipy.special.j1(2 * np.pi * safe) / safe, np.pi)
        out += rho * a * b * shape * np.exp(-2j * np.pi * (kx_a * x0 + ky_a * y0))
    return out


def phantom_image(x: npt.ArrayLike, y: npt.ArrayLike, scale: float = 0.45) -> F64:
    """The phantom in image space at positions (x, y) in FOV units."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    out = np.zeros(np.broadcast(xa, ya).shape)
    for rho, a, b, x0, y0, th in ellipses(scale):
        u = (xa - x0) * np.cos(th) + (ya - y0) * np.sin(th)
        v = -(xa - x0) * np.sin(th) + (ya - y0) * np.cos(th)
        out += rho * ((u / a) ** 2 + (v / b) ** 2 <= 1.0)
    return out


def coil_coefficients(ncoils: int, order: int = 2) -> C128:
    """Fourier coefficients ``s[c, my + order, mx + order]`` of smooth surface-coil maps."""
    n = 64
    grid = (np.arange(n) - n // 2) / n
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    coeffs = np.empty((ncoils, 2 * order + 1, 2 * order + 1), dtype=np.complex128)
    for c in range(ncoils):
        ang = 2 * np.pi * c / ncoils
        cx, cy = 0.55 * np.cos(ang), 0.55 * np.sin(ang)
        bump = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 0.35**2))
        field = bump * np.exp(1j * (ang + 2.0 * (xx * np.cos(ang) - yy * np.sin(ang))))
        spec = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(field))) / n**2
        coeffs[c] = spec[n // 2 - order : n // 2 + order + 1, n // 2 - order : n // 2 + order + 1]
    return coeffs


def coil_maps(coeffs: C128, x: npt.ArrayLike, y: npt.ArrayLike) -> C128:
    """Evaluate the coil maps ``S_c(x, y)`` given by :func:`coil_coefficients`."""
    order = coeffs.shape[1] // 2
    m = np.arange(-order, order + 1)
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ex = np.exp(2j * np.pi * m[:, None] * xa.ravel()[None, :])  # (mx, pts)
    ey = np.exp(2j * np.pi * m[:, None] * ya.ravel()[None, :])  # (my, pts)
    maps = np.einsum("cyx,yp,xp->cp", coeffs, ey, ex)
    return maps.reshape((coeffs.shape[0], *xa.shape))


def cartesian_multicoil(n: int, ncoils: int, order: int = 2, ny: int | None = None) -> C128:
    """Fully sampled ``(coils, ny, n)`` k-space at integer k in [-n/2, n/2) (centred)."""
    ny = n if ny is None else ny
    kx = np.arange(-n // 2 - order, n // 2 + order)
    ky = np.arange(-ny // 2 - order, ny // 2 + order)
    big = phantom_kspace(kx[None, :], ky[:, None])
    coeffs = coil_coefficients(ncoils, order)
    out = np.zeros((ncoils, ny, n), dtype=np.complex128)
    for iy, my in enumerate(range(-order, order + 1)):
        for ix, mx in enumerate(range(-order, order + 1)):
            # F(k - m) is the padded transform read at index k - m + order + n/2.
            sl = big[order - my : order - my + ny, order - mx : order - mx + n]
            out += coeffs[:, iy, ix, None, None] * sl[None]
    return out


def pixel_grid(n: int) -> tuple[F64, F64]:
    """Pixel centres (x, y) in FOV units for an n x n centred image, indexed [y, x]."""
    g = (np.arange(n) - n // 2) / n
    yy, xx = np.meshgrid(g, g, indexing="ij")
    return xx, yy


def nrmse(
    estimate: npt.ArrayLike, reference: npt.ArrayLike, mask: npt.ArrayLike | None = None
) -> float:
    """``||est - ref||_2 / ||ref||_2`` over ``mask`` (all pixels when None)."""
    e, r = np.asarray(estimate), np.asarray(reference)
    sel = np.ones(r.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    return float(np.linalg.norm((e - r)[sel]) / np.linalg.norm(r[sel]))


@functools.cache
def phantom_kspace_256() -> npt.NDArray[np.complex64]:
    """Fully sampled 8-coil 256x256 k-space, computed once per process (read-only)."""
    k = cartesian_multicoil(256, 8).astype(np.complex64)
    k.flags.writeable = False
    return k


@functools.cache
def phantom_support_256() -> npt.NDArray[np.bool_]:
    """Object support (outer ellipse) of the 256x256 phantom (read-only)."""
    xx, yy = pixel_grid(256)
    mask = phantom_image(xx, yy) > 0
    mask.flags.writeable = False
    return mask
