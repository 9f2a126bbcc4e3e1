"""CT projection data arriving as DICOM: recognise it, group it, reconstruct it.

    is_projection_data(ds)            DICOM-CT-PD projection or Raw Data Storage sinogram?
    group_projections(datasets)       -> ProjectionSet, views sorted and validated
    reconstruct(projection_set)       -> float32 (slices, rows, columns), attenuation in 1/mm
    to_ct_series(volume, datasets)    -> CT Image Storage data sets, HU, a new series
    reconstruct_files(paths)          the three above for files and folders (``inspect``)

Layouts, tags, units and geometry conventions are in docs/projection-data.md. Scan
geometry follows :mod:`kernels.ct` (``_geometry``): view angle beta puts the source at
-D (sin beta, cos beta) in the image's (x = column, y = row) plane. Every problem with the
input is a ValueError naming the attribute (and the file or view) at fault.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from agent.recon.ct_geometry import F32, MU_WATER_DEFAULT, ProjectionSet, ScanGeometry
from agent.recon.ct_reading import group_projections, is_projection_data, read_geometry
from agent.recon.ct_series import Grid, ct_series
from kernels.device import Device

log = logging.getLogger(__name__)

__all__ = [
    "MU_WATER_DEFAULT",
    "ProjectionSet",
    "ScanGeometry",
    "group_projections",
    "is_projection_data",
    "output_grid",
    "read_geometry",
    "reconstruct",
    "reconstruct_files",
    "to_ct_series",
]


# ---------------------------------------------------------------- reconstruction


def output_grid(geometry: ScanGeometry, size: int | None = None) -> Grid:
    """Pixel pitch and slice offsets of the reconstruction of ``size`` x ``size`` pixels."""
    size = size or default_size(geometry)
    if geometry.kind == "parallel":
        pixel = geometry.du
        offsets = (np.arange(geometry.rows) - geometry.det_center[0]) * (geometry.dv or 0.0)
        return Grid(size, pixel, geometry.dv, tuple(float(o) for o in offsets))
    dist, sdd = float(geometry.source_isocenter or 0), float(geometry.source_detector or 0)
    s = (np.arange(geometry.columns) - geometry.det_center[1]) * geometry.du
    gamma = s / sdd if geometry.detector == "equiangular" else np.arctan2(s, sdd)
    pixel = float(2 * dist * np.sin(min(float(np.abs(gamma).max()), np.pi / 2)) / size)
    slice_mm = geometry.dv * dist / sdd if geometry.dv else None
    if geometry.kind == "fan":
        return Grid(size, pixel, slice_mm, (0.0,))
    nz = geometry.rows
    vz = slice_mm or pixel
    return Grid(size, pixel, vz, tuple(float((k - nz // 2) * vz) for k in range(nz)))


def default_size(geometry: ScanGeometry) -> int:
    return geometry.columns if geometry.kind == "parallel" else min(geometry.columns, 512)


def reconstruct(
    projection_set: ProjectionSet, device: Device = "auto", output_size: int | None = None
) -> F32:
    """(slices, size, size) float32 attenuation in 1/mm, by the geometry's FBP or FDK.

    parallel: :func:`kernels.ct.fbp_parallel` per detector row; fan (one row):
    :func:`kernels.ct.fbp_fan`; cone (several rows, flat panel): :func:`kernels.ct.fdk`.
    """
    from kernels.ct import fbp_fan, fbp_parallel, fdk

    g = projection_set.geometry
    data = projection_set.data
    grid = output_grid(g, output_size)
    if g.kind == "parallel":
        slices = [
            fbp_parallel(data[:, r, :].T, g.angles_deg, output_size=grid.size, device=device)
            for r in range(g.rows)
        ]
        return np.stack(slices) / np.float32(g.du)  # unit-sample integrals -> 1/mm
    dist, sdd = float(g.source_isocenter or 0), float(g.source_detector or 0)
    if g.kind == "fan":
        image = fbp_fan(
            data[:, 0, :].T, g.angles_deg, source_isocenter=dist, source_detector=sdd,
            det_spacing=g.du, detector=g.detector,
            output_size=grid.size, pixel_size=grid.pixel_mm, det_center=g.det_center[1],
            device=device,
        )  # fmt: skip
        return image[None]
    if g.detector != "flat":
        raise ValueError("cone-beam data on a cylindrical detector: FDK here needs a flat panel")
    return fdk(
        data, g.angles_deg, source_isocenter=dist, source_detector=sdd, det_spacing=(g.dv or g.du, g.du),
        volume_shape=(len(grid.offsets_mm), grid.size, grid.size),
        voxel_size=(grid.slice_mm or grid.pixel_mm, grid.pixel_mm), det_center=g.det_center,
        device=device,
    )  # fmt: skip


def to_ct_series(volume: Any, source_datasets: Sequence[Dataset]) -> list[Dataset]:
    """CT Image Storage instances (HU, int16) of ``volume`` from :func:`reconstruct`."""
    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim == 2:
        vol = vol[None]
    if vol.ndim != 3 or vol.shape[1] != vol.shape[2]:
        raise ValueError(f"volume must be (slices, n, n), got shape {vol.shape}")
    geometry = read_geometry(source_datasets)
    grid = output_grid(geometry, vol.shape[1])
    if len(grid.offsets_mm) != vol.shape[0]:
        raise ValueError(f"volume has {vol.shape[0]} slices; this geometry gives "
                         f"{len(grid.offsets_mm)}")  # fmt: skip
    return ct_series(vol, grid, geometry, list(source_datasets))


def reconstruct_files(paths: Iterable[str | Path], device: Device = "auto") -> list[Dataset]:
    """Reconstruct every projection-data series found in files and folders (for ``inspect``).

    Files that are not projection data are skipped; a series that fails raises ValueError
    naming it.
    """
    series: dict[str, list[Dataset]] = {}
    for path in _files(paths):
        try:
            ds = dcmread(path)
        except (InvalidDicomError, OSError, ValueError) as exc:
            log.debug("skipping %s: %s", path, exc)
            continue
        if is_projection_data(ds):
            series.setdefault(str(ds.get("SeriesInstanceUID", path)), []).append(ds)
    out: list[Dataset] = []
    for uid, datasets in series.items():
        try:
            volume = reconstruct(group_projections(datasets), device=device)
        except ValueError as exc:
            raise ValueError(f"series {uid}: {exc}") from exc
        out.extend(to_ct_series(volume, datasets))
    return out


def _files(paths: Iterable[str | Path]) -> Iterable[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path
