"""Fan-beam filtered backprojection (equiangular or flat detector, full or short scan)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from kernels.ct import _filters, _geometry, _validate
from kernels.ct._cpu_fan import backproject_fan
from kernels.device import Device, resolve_device

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
DETECTORS = ("equiangular", "flat")


@dataclass(frozen=True)
class FanGeometry:
    """Source-isocentre D and source-detector SDD distances, detector pitch (mm)."""

    dist: float
    sdd: float
    du: float
    centre: float
    equiangular: bool

    def gamma(self, n_det: int) -> F64:
        """Fan angle of each detector element (radians)."""
        s = (np.arange(n_det) - self.centre) * self.du
        gamma = s / self.sdd if self.equiangular else np.arctan2(s, self.sdd)
        return np.asarray(gamma, dtype=np.float64)

    def mag(self) -> float:
        """Detector samples per unit of the backprojector's coordinate (radian or mm)."""
        return self.sdd / self.du


def fbp_fan(
    sinogram: Any,
    angles_deg: Any,
    *,
    source_isocenter: float,
    source_detector: float,
    det_spacing: float,
    detector: str = "equiangular",
    filter: str = "ramp",
    output_size: int | None = None,
    pixel_size: float | None = None,
    det_center: float | None = None,
    device: Device = "auto",
) -> F32:
    """Fan-beam FBP (Kak & Slaney 1988, sec. 3.4) with Parker short-scan weights.

    Geometry (lengths in mm, angles in degrees, image coordinates
    x = (col - N//2) * pixel_size, y = (row - N//2) * pixel_size as in iradon):

    * ``sinogram`` is (detectors, views), ``angles_deg`` the source angle beta of each
      view, strictly increasing and evenly spaced. The source sits at
      S = -D (sin beta, cos beta), D = ``source_isocenter``; the central ray runs
      along d = (sin beta, cos beta) through the isocentre; the detector axis is
      e = (cos beta, -sin beta). Ray (beta, gamma) is iradon's parallel ray
      theta = beta + gamma at t = D sin(gamma).
    * ``detector="flat"``: element k lies on the line S + SDD d + s e with
      s = (k - det_center) * det_spacing, SDD = ``source_detector``; fan angle
      gamma = atan(s / SDD). ``"equiangular"``: elements on an arc of radius SDD about
      the source, gamma = (k - det_center) * det_spacing / SDD (pitch is arc length).
    * ``det_center`` (index hit by the central ray) defaults to (detectors - 1) / 2.
    * 360 degrees of views (within half a step) is a full scan, weight 1/2 per ray;
      less is a short scan with Parker weights and needs >= 180 degrees + fan angle.
    * ``output_size`` defaults to the detector count and ``pixel_size`` to the
      diameter of the measured field, 2 D sin(max|gamma|), over ``output_size``.

    Formulas: flat, Q = (w R D/sqrt(D^2+p^2)) * h_p and f = sum dbeta (D/L)^2 Q(p')
    (K & S sec. 3.4.2; p on the detector scaled to the isocentre); equiangular,
    Q = (w R D cos gamma) * g, g(n a) = (n a / sin n a)^2 h(n a), f = sum dbeta Q / L^2
    (K & S sec. 3.4.1); w the redundancy weight; h the ramp of
    :mod:`kernels.ct._filters` with the iradon windows. Returns float32.
    """
    sino = _validate.data_array(sinogram, 2, "sinogram")
    beta = _validate.angles(angles_deg, sino.shape[1], "angles_deg")
    geo = _fan_geometry(
        sino.shape[0], source_isocenter, source_detector, det_spacing, detector, det_center
    )
    name = _validate.filter_name(filter)
    size = _validate.positive_int(
        sino.shape[0] if output_size is None else output_size, "output_size"
    )
    pixel = _pixel_size(geo, sino.shape[0], size, pixel_size)
    if size / np.sqrt(2) * pixel >= geo.dist:
        raise ValueError("the image reaches the source orbit; shrink output_size or pixel_size")
    target = resolve_device(device)
    q = _filtered(sino.T, beta, geo, name)
    sin_b, cos_b = np.sin(beta).astype(np.float32), np.cos(beta).astype(np.float32)
    args = (geo.dist, geo.mag(), geo.centre, geo.equiangular, pixel)
    if target == "cuda":
        from kernels.ct._cuda import backproject_fan as cuda_backproject

        return cuda_backproject(q, sin_b, cos_b, *args, size)
    out = np.zeros((size, size), dtype=np.float32)
    backproject_fan(q, sin_b, cos_b, *args, out)
    return out


def _fan_geometry(
    n_det: int, dist: Any, sdd: Any, du: Any, detector: Any, centre: Any
) -> FanGeometry:
    geo = FanGeometry(
        dist=_validate.positive_float(dist, "source_isocenter"),
        sdd=_validate.positive_float(sdd, "source_detector"),
        du=_validate.positive_float(du, "det_spacing"),
        centre=(n_det - 1) / 2 if centre is None else _finite(centre, "det_center"),
        equiangular=_validate.choice(detector, DETECTORS, "detector") == "equiangular",
    )
    if geo.equiangular and (n_det + abs(geo.centre)) * geo.du / geo.sdd >= np.pi:
        raise ValueError("equiangular detector spans 180 degrees or more; check det_spacing")
    return geo


def _finite(value: Any, name: str) -> float:
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _pixel_size(geo: FanGeometry, n_det: int, size: int, pixel: Any) -> float:
    if pixel is not None:
        return _validate.positive_float(pixel, "pixel_size")
    half_fan = float(np.abs(geo.gamma(n_det)).max())
    return float(2 * geo.dist * np.sin(min(half_fan, np.pi / 2)) / size)


def _filtered(views: F32, beta: F64, geo: FanGeometry, name: str) -> F32:
    """Weighted, ramp-filtered views (views, detectors + 1), scaled by d(beta)."""
    n = views.shape[1]
    gamma = geo.gamma(n)
    step = _geometry.angle_step(beta)
    pre = np.cos(gamma) * (geo.dist if geo.equiangular else 1.0)
    weights = _geometry.redundancy_weights(beta, gamma) * pre * step
    filtered = _filters.filter_rows(
        (views * weights).astype(np.float32), fan_response(n, geo, name)
    )
    return np.pad(filtered, ((0, 0), (0, 1)))


def fan_response(n: int, geo: FanGeometry, name: str) -> F32:
    """Ramp for sample spacing a: h(n a) = h_1(n) / a^2, times a for the integral.

    Flat detectors filter on the isocentre-scaled axis, a = du D / SDD. Equiangular
    ones use a = du / SDD radians and g(n a) = (n a / sin n a)^2 h(n a); lags at or
    beyond ``n`` never meet data and are zeroed so sin(n a) never vanishes.
    """
    size = _filters.padded_size(n)
    kernel = _filters.ramp_kernel(size)
    if geo.equiangular:
        a = geo.du / geo.sdd
        lag = np.minimum(np.arange(size), size - np.arange(size))
        kernel[lag >= n] = 0.0
        nz = (lag > 0) & (lag < n)
        kernel[nz] *= (lag[nz] * a / np.sin(lag[nz] * a)) ** 2
    else:
        a = geo.du * geo.dist / geo.sdd
    return _filters.frequency_response(kernel / a, name)
