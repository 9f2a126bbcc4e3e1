"""Analytic phantoms: exact line integrals through ellipses and ellipsoids.

Projections are computed in closed form, never by sampling a voxel grid, so tests do
not commit the inverse crime of reconstructing data made with the backprojector's own
discretisation. For an ellipsoid {p : |M (p - c)| <= 1} with M = diag(1/a, 1/b[, 1/c]) R^T
and a ray p(s) = o + s d (|d| = 1), put u = M (o - c), w = M d; the ray is inside while
|u + s w|^2 <= 1, a quadratic in s, so the chord length is

    L = 2 sqrt((u.w)^2 - |w|^2 (|u|^2 - 1)) / |w|^2     (0 where the root is imaginary)

and the line integral is the density times L (summed over the ellipsoids).

Coordinates are those of the reconstructions: x along columns, y along rows (both
from the array centre index n//2), z along slices; lengths in millimetres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Ellipsoid:
    """Density, semi-axes (a, b, c) and centre in mm, rotation ``phi_deg`` about z."""

    density: float
    axes: tuple[float, float, float]
    centre: tuple[float, float, float]
    phi_deg: float = 0.0

    def matrix(self) -> F64:
        phi = np.deg2rad(self.phi_deg)
        rot = np.array([[np.cos(phi), -np.sin(phi), 0], [np.sin(phi), np.cos(phi), 0], [0, 0, 1]])
        return np.diag(1.0 / np.asarray(self.axes)) @ rot.T


# Modified Shepp-Logan (Toft 1996): density, a, b, x0, y0, phi on the unit disc.
SHEPP_LOGAN_TOFT = (
    (1.0, 0.69, 0.92, 0.0, 0.0, 0.0),
    (-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0),
    (-0.2, 0.11, 0.31, 0.22, 0.0, -18.0),
    (-0.2, 0.16, 0.41, -0.22, 0.0, 18.0),
    (0.1, 0.21, 0.25, 0.0, 0.35, 0.0),
    (0.1, 0.046, 0.046, 0.0, 0.1, 0.0),
    (0.1, 0.046, 0.046, 0.0, -0.1, 0.0),
    (0.1, 0.046, 0.023, -0.08, -0.605, 0.0),
    (0.1, 0.023, 0.023, 0.0, -0.606, 0.0),
    (0.1, 0.023, 0.046, 0.06, -0.605, 0.0),
)


def shepp_logan_2d(radius_mm: float) -> list[Ellipsoid]:
    """Toft's modified Shepp-Logan scaled to ``radius_mm`` (as cylinders: c is huge)."""
    return [
        Ellipsoid(d, (a * radius_mm, b * radius_mm, 1e9), (x * radius_mm, y * radius_mm, 0.0), p)
        for d, a, b, x, y, p in SHEPP_LOGAN_TOFT
    ]


def head_3d(radius_mm: float) -> list[Ellipsoid]:
    """A 3-D head-like phantom: skull, brain and a few inserts at different heights."""
    r = radius_mm
    return [
        Ellipsoid(1.0, (0.69 * r, 0.92 * r, 0.8 * r), (0.0, 0.0, 0.0)),
        Ellipsoid(-0.8, (0.6624 * r, 0.874 * r, 0.76 * r), (0.0, -0.0184 * r, 0.0)),
        Ellipsoid(-0.2, (0.11 * r, 0.31 * r, 0.22 * r), (0.22 * r, 0.0, -0.1 * r), -18.0),
        Ellipsoid(0.2, (0.16 * r, 0.25 * r, 0.2 * r), (-0.22 * r, 0.1 * r, 0.15 * r), 18.0),
        Ellipsoid(0.1, (0.21 * r, 0.25 * r, 0.15 * r), (0.0, 0.35 * r, 0.3 * r)),
    ]


def line_integrals(phantom: list[Ellipsoid], origins: F64, directions: F64) -> F64:
    """Exact integrals along rays; ``origins``/``directions`` are (..., 3), directions unit."""
    total = np.zeros(origins.shape[:-1])
    for e in phantom:
        m = e.matrix()
        u = (origins - np.asarray(e.centre)) @ m.T
        w = directions @ m.T
        ww = np.einsum("...i,...i", w, w)
        uw = np.einsum("...i,...i", u, w)
        disc = uw**2 - ww * (np.einsum("...i,...i", u, u) - 1.0)
        total += e.density * 2.0 * np.sqrt(np.clip(disc, 0.0, None)) / ww
    return total


def rasterise(phantom: list[Ellipsoid], points: F64) -> F64:
    """Phantom density at ``points`` (..., 3)."""
    total = np.zeros(points.shape[:-1])
    for e in phantom:
        u = (points - np.asarray(e.centre)) @ e.matrix().T
        total += e.density * (np.einsum("...i,...i", u, u) <= 1.0)
    return total


def image_points(size: int, pixel_mm: float, z_mm: float = 0.0) -> F64:
    """Pixel centres (size, size, 3): x = (col - size//2) px, y = (row - size//2) px."""
    axis = (np.arange(size) - size // 2) * pixel_mm
    y, x = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([x, y, np.full_like(x, z_mm)], axis=-1)


def parallel_sinogram(phantom: list[Ellipsoid], n_det: int, theta_deg: F64) -> F64:
    """(n_det, views) in skimage's convention: t = (k - n_det//2), ray direction (sin, cos)."""
    th = np.deg2rad(theta_deg)[None, :]
    t = (np.arange(n_det) - n_det // 2)[:, None] * np.ones_like(th)
    e = np.stack([np.cos(th), -np.sin(th), 0 * th], axis=-1) * np.ones((*t.shape, 1))
    d = np.stack([np.sin(th), np.cos(th), 0 * th], axis=-1) * np.ones((*t.shape, 1))
    return line_integrals(phantom, t[..., None] * e, d)


def fan_sinogram(
    phantom: list[Ellipsoid],
    angles_deg: F64,
    det_s_mm: F64,
    source_isocenter: float,
    source_detector: float,
    detector: str,
) -> F64:
    """(n_det, views) fan data: source at -D (sin b, cos b); detector positions ``det_s_mm``.

    Flat: element at s sits at S + SDD d + s e. Equiangular: fan angle gamma = s / SDD,
    ray direction cos(gamma) d + sin(gamma) e, with d = (sin b, cos b), e = (cos b, -sin b).
    """
    b = np.deg2rad(angles_deg)[None, :]
    s = det_s_mm[:, None]
    gamma = np.arctan2(s, source_detector) if detector == "flat" else s / source_detector
    d = np.stack([np.sin(b), np.cos(b), 0 * b], axis=-1)
    e = np.stack([np.cos(b), -np.sin(b), 0 * b], axis=-1)
    direction = np.cos(gamma)[..., None] * d + np.sin(gamma)[..., None] * e
    origin = -source_isocenter * d * np.ones(direction.shape)
    return line_integrals(phantom, origin, direction)


def cone_projections(
    phantom: list[Ellipsoid],
    angles_deg: F64,
    det_v_mm: F64,
    det_u_mm: F64,
    source_isocenter: float,
    source_detector: float,
) -> F64:
    """(views, rows, cols) flat-panel data: pixel (v, u) at S + SDD d + u e + v z."""
    out = np.empty((angles_deg.shape[0], det_v_mm.shape[0], det_u_mm.shape[0]))
    v, u = np.meshgrid(det_v_mm, det_u_mm, indexing="ij")
    for k, beta in enumerate(np.deg2rad(angles_deg)):
        d = np.array([np.sin(beta), np.cos(beta), 0.0])
        e = np.array([np.cos(beta), -np.sin(beta), 0.0])
        ray = source_detector * d + u[..., None] * e + v[..., None] * np.array([0, 0, 1.0])
        ray /= np.linalg.norm(ray, axis=-1, keepdims=True)
        out[k] = line_integrals(phantom, np.broadcast_to(-source_isocenter * d, ray.shape), ray)
    return out
