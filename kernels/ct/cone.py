"""FDK cone-beam reconstruction (flat panel, circular orbit) in memory-bounded z-chunks."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from kernels.ct import _filters, _geometry, _validate
from kernels.ct._cpu_fan import backproject_cone
from kernels.ct.fan import FanGeometry, fan_response
from kernels.device import Device, resolve_device

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
DEFAULT_BUDGET = 256 * 2**20


@dataclass(frozen=True)
class Cone:
    """Flat-panel geometry: D, SDD, pixel pitch (dv, du) and centre (row, col) indices."""

    dist: float
    sdd: float
    dv: float
    du: float
    cv: float
    cu: float
    shape: tuple[int, int, int]  # volume (nz, ny, nx)
    voxel: tuple[float, float]  # (z, xy) in mm

    def fan(self) -> FanGeometry:
        return FanGeometry(self.dist, self.sdd, self.du, self.cu, equiangular=False)

    def rows_for(self, z0: int, z1: int, n_rows: int) -> tuple[int, int]:
        """Detector rows [a, b) that slices [z0, z1) can project onto, plus a margin."""
        nz, ny, nx = self.shape
        reach = math.hypot(max(nx // 2, nx - 1 - nx // 2), max(ny // 2, ny - 1 - ny // 2))
        zs = ((z0 - nz // 2) * self.voxel[0], (z1 - 1 - nz // 2) * self.voxel[0])
        ls = (self.dist - reach * self.voxel[1], self.dist + reach * self.voxel[1])
        vs = [z * self.sdd / (ell * self.dv) + self.cv for z in zs for ell in ls]
        return max(0, math.floor(min(vs)) - 1), min(n_rows, math.ceil(max(vs)) + 2)


def fdk(
    projections: Any,
    angles_deg: Any,
    *,
    source_isocenter: float,
    source_detector: float,
    det_spacing: float | tuple[float, float],
    volume_shape: tuple[int, int, int] | None = None,
    voxel_size: float | tuple[float, float] | None = None,
    det_center: tuple[float, float] | None = None,
    filter: str = "ramp",
    memory_budget: int = DEFAULT_BUDGET,
    device: Device = "auto",
) -> F32:
    """Feldkamp-Davis-Kress reconstruction (JOSA A 1(6):612, 1984; K & S sec. 3.6).

    Geometry extends :func:`kernels.ct.fbp_fan` (flat detector) by z: ``projections``
    is (views, rows, cols); detector pixel (row, col) sits at S + SDD d + u e + v z with
    u = (col - cu) du, v = (row - cv) dv, ``det_spacing`` = du = dv or (dv, du),
    ``det_center`` = (cv, cu) defaulting to the panel's middle. The volume is
    (nz, ny, nx) = ``volume_shape`` (default (rows, cols, cols)) with voxel (k, row, col)
    at z = (k - nz//2) vz, y = (row - ny//2) vxy, x = (col - nx//2) vxy; ``voxel_size``
    is vxy = vz or (vz, vxy), by default the measured field's diameter over nx.

        f(x, y, z) = sum_beta dbeta (D / L)^2 Q_beta(SDD lat / L, SDD z / L),
        Q_beta = rows of (w R D / sqrt(D^2 + p^2 + zeta^2)) filtered with h_p,

    p and zeta being detector coordinates scaled to the isocentre and w the full-scan
    (1/2) or Parker weight of the column's fan angle. Processing goes in z-chunks: a
    chunk filters only the detector rows its slices project onto and, when needed,
    only some views at a time, so the working memory (filtered rows, FFT scratch and
    the CPU threads' (x, z) accumulators; not the input or the output volume) stays
    under ``memory_budget`` bytes, estimated as documented in ``_row_bytes``. A budget
    below one view's rows for one slice is a ValueError.
    """
    proj = _validate.data_array(projections, 3, "projections")
    beta = _validate.angles(angles_deg, proj.shape[0], "angles_deg")
    cone = _cone(
        proj.shape,
        source_isocenter,
        source_detector,
        det_spacing,
        volume_shape,
        voxel_size,
        det_center,
    )
    name = _validate.filter_name(filter)
    budget = _validate.positive_int(memory_budget, "memory_budget")
    target = resolve_device(device)
    _geometry.angle_step(beta)  # fail on uneven angles before any work
    out = np.zeros(cone.shape, dtype=np.float32)
    backproject = _cpu_chunk if target == "cpu" else _cuda_chunk()
    response = fan_response(proj.shape[2], cone.fan(), name)
    weights = _view_weights(beta, cone, proj.shape[2])
    for z0, z1, rows, views in _chunks(cone, proj.shape, budget):
        q = _filtered(proj, weights, cone, rows, views, response)
        args = (np.sin(beta[views]).astype(np.float32), np.cos(beta[views]).astype(np.float32))
        backproject(q, *args, cone, rows[0], z0, out[z0:z1])
    return out


def _cone(
    shape: tuple[int, ...],
    dist: Any,
    sdd: Any,
    spacing: Any,
    volume: Any,
    voxel: Any,
    centre: Any,
) -> Cone:
    _, n_rows, n_cols = shape
    dv, du = _pair(spacing, "det_spacing")
    cv, cu = ((n_rows - 1) / 2, (n_cols - 1) / 2) if centre is None else _centre(centre)
    d = _validate.positive_float(dist, "source_isocenter")
    s = _validate.positive_float(sdd, "source_detector")
    vol = tuple(
        _validate.positive_int(n, "volume_shape")
        for n in ((n_rows, n_cols, n_cols) if volume is None else volume)
    )
    if len(vol) != 3:
        raise ValueError(f"volume_shape must be (nz, ny, nx), got {volume!r}")
    if voxel is None:
        half_fan = math.atan(max(cu, n_cols - 1 - cu) * du / s)
        voxel = 2 * d * math.sin(half_fan) / vol[2]
    cone = Cone(
        d, s, dv, du, float(cv), float(cu), (vol[0], vol[1], vol[2]), _pair(voxel, "voxel_size")
    )
    if math.hypot(vol[1], vol[2]) / 2 * cone.voxel[1] >= d:
        raise ValueError("the volume reaches the source orbit; shrink volume or voxel_size")
    return cone


def _centre(value: Any) -> tuple[float, float]:
    """(row, column) index of the central ray; any finite numbers."""
    try:
        cv, cu = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"det_center must be (row, column), got {value!r}") from None
    if not (math.isfinite(cv) and math.isfinite(cu)):
        raise ValueError(f"det_center must be finite, got {value!r}")
    return cv, cu


def _pair(value: Any, name: str) -> tuple[float, float]:
    both = value if isinstance(value, tuple | list) else (value, value)
    if len(both) != 2:
        raise ValueError(f"{name} must be a number or a pair, got {value!r}")
    return _validate.positive_float(both[0], name), _validate.positive_float(both[1], name)


def _row_bytes(n_cols: int) -> int:
    """Peak working bytes per filtered detector row: weighted copy, FFT buffers, the
    filtered row and its transposed copy for the CPU kernel."""
    size = _filters.padded_size(n_cols)
    return 4 * (3 * n_cols + 3 * size + 4)


def _chunks(
    cone: Cone, shape: tuple[int, ...], budget: int
) -> Iterator[tuple[int, int, tuple[int, int], slice]]:
    """(z0, z1, detector rows, views) blocks whose filtered rows fit ``budget``."""
    n_views, n_rows, n_cols = shape
    nz = cone.shape[0]
    per_row = _row_bytes(n_cols)
    per_slice = 4 * cone.shape[2] * numba.get_num_threads()  # CPU (x, z) accumulators

    def worst_rows(chunk: int) -> int:
        spans = (cone.rows_for(0, chunk, n_rows), cone.rows_for(nz - chunk, nz, n_rows))
        return max(1, max(b - a for a, b in spans))

    chunk = nz
    while chunk > 1 and worst_rows(chunk) * n_views * per_row + chunk * per_slice > budget:
        chunk = (chunk + 1) // 2
    views_per = min(n_views, (budget - chunk * per_slice) // (worst_rows(chunk) * per_row))
    if views_per < 1:
        need = worst_rows(chunk) * per_row + per_slice
        raise ValueError(f"memory_budget {budget} B is below one view's rows ({need} B)")
    for z0 in range(0, nz, chunk):
        z1 = min(nz, z0 + chunk)
        rows = cone.rows_for(z0, z1, n_rows)
        if rows[1] <= rows[0]:
            continue  # these slices project off the panel: nothing to add
        for v0 in range(0, n_views, views_per):
            yield z0, z1, rows, slice(v0, min(n_views, v0 + views_per))


def _view_weights(beta: F64, cone: Cone, n_cols: int) -> F64:
    """Redundancy weight of each (view, column) times d(beta)."""
    gamma = cone.fan().gamma(n_cols)
    return _geometry.redundancy_weights(beta, gamma) * _geometry.angle_step(beta)


def _filtered(
    proj: F32, weights: F64, cone: Cone, rows: tuple[int, int], views: slice, response: F32
) -> F32:
    """Cosine- and redundancy-weighted, row-filtered block (views, rows + 1, cols + 1)."""
    n_cols = proj.shape[2]
    w = weights[views]
    p = (np.arange(n_cols) - cone.cu) * cone.du * cone.dist / cone.sdd
    zeta = (np.arange(*rows) - cone.cv) * cone.dv * cone.dist / cone.sdd
    cosine = cone.dist / np.sqrt(cone.dist**2 + p[None, :] ** 2 + zeta[:, None] ** 2)
    block = proj[views, rows[0] : rows[1]] * (w[:, None, :] * cosine[None]).astype(np.float32)
    filtered = _filters.filter_rows(block, response)
    return np.pad(filtered, ((0, 0), (0, 1), (0, 1)))


def _cpu_chunk(q: F32, sin_b: F32, cos_b: F32, cone: Cone, row0: int, z0: int, out: F32) -> None:
    mags = (cone.sdd / cone.du, cone.sdd / cone.dv)
    centres = (cone.cu, cone.cv - row0)
    columns = np.ascontiguousarray(q.transpose(0, 2, 1))  # z walks down a detector column
    backproject_cone(
        columns, sin_b, cos_b, cone.dist, mags, centres, cone.voxel, z0 - cone.shape[0] // 2, out
    )


def _cuda_chunk() -> Callable[[F32, F32, F32, Cone, int, int, F32], None]:
    from kernels.ct._cuda import backproject_fdk

    return backproject_fdk
