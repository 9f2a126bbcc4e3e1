"""Reading CT projection data: DICOM-CT-PD projections and Raw Data Storage sinograms.

    is_projection_data(ds)            DICOM-CT-PD projection or Raw Data Storage sinogram?
    read_geometry(datasets)           -> ScanGeometry, from the headers alone
    group_projections(datasets)       -> ProjectionSet, views sorted and validated

Every problem with the input is a ValueError naming the attribute (and the file or view) at
fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import RawDataStorage

from agent.recon import projection_tags as tags
from agent.recon.ct_geometry import (
    F32,
    MU_WATER_DEFAULT,
    REL_TOL,
    Z_TOL_MM,
    ProjectionSet,
    ScanGeometry,
)


def is_projection_data(ds: Dataset) -> bool:
    """True for a DICOM-CT-PD projection or a Raw Data Storage sinogram of our layout."""
    if tags.PD_ANGLE in ds and tags.PD_COLUMNS in ds:
        return True
    return str(ds.get("SOPClassUID", "")) == RawDataStorage and tags.raw_block_base(ds) is not None


def group_projections(datasets: Sequence[Dataset]) -> ProjectionSet:
    """Collect one series' projections into a validated :class:`ProjectionSet`."""
    datasets = list(datasets)
    geometry = read_geometry(datasets)
    if geometry.layout == "raw-sinogram":
        data = _raw_samples(datasets[0], geometry)
    else:
        data = np.stack([_pd_samples(datasets[i], geometry, i) for i in geometry.order])
    sources = tuple((str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in datasets)
    return ProjectionSet(geometry, data, datasets[0], sources)


def read_geometry(datasets: Sequence[Dataset]) -> ScanGeometry:
    """The scan geometry from the headers alone (no pixel data is decoded)."""
    if not datasets:
        raise ValueError("no data sets given")
    kinds = {is_projection_data(ds) for ds in datasets}
    if kinds != {True}:
        raise ValueError("not every data set is CT projection data")
    raw = [ds for ds in datasets if tags.raw_block_values(ds) is not None]
    if raw:
        if len(datasets) != 1:
            raise ValueError(f"a Raw Data sinogram is one data set; got {len(datasets)}")
        return _raw_geometry(raw[0])
    return _pd_geometry(datasets)


# ---------------------------------------------------------------- DICOM-CT-PD


@dataclass(frozen=True)
class _PdView:
    phi: float
    z: float
    rows: int
    columns: int
    fixed: tuple[float, ...]  # du, dv, D, SDD, centre row, centre column
    shape_name: str
    mu_water: float
    number: int | None


def _pd_view(ds: Dataset, index: int) -> _PdView:
    where = f"projection {index} ({ds.get('SOPInstanceUID', '?')})"
    missing = [name for tag, name in tags.PD_REQUIRED.items() if tags.pd_value(ds, tag) is None]
    if missing:
        raise ValueError(f"{where}: missing DICOM-CT-PD geometry: {', '.join(missing)}")

    def value(tag: int) -> float:
        return tags.number(tags.pd_value(ds, tag), f"{where} {tags.PD_REQUIRED[tag]}")

    rows = tags.count(tags.pd_value(ds, tags.PD_ROWS), f"{where} NumberofDetectorRows")
    columns = tags.count(tags.pd_value(ds, tags.PD_COLUMNS), f"{where} NumberofDetectorColumns")
    _check_flying_focal_spot(ds, where)
    dv_raw = tags.pd_value(ds, tags.PD_AXIAL_SPACING)
    dv = tags.number(dv_raw, f"{where} DetectorElementAxialSpacing") if dv_raw is not None else 0.0
    centre = _pd_centre(ds, rows, columns, where)
    shape_raw = tags.pd_value(ds, tags.PD_SHAPE)
    if shape_raw is None:
        raise ValueError(f"{where}: missing DICOM-CT-PD DetectorShape (7029,100B)")
    water = tags.pd_value(ds, tags.PD_WATER)
    fixed = (value(tags.PD_TRANSVERSE_SPACING), dv, value(tags.PD_RADIUS), value(tags.PD_SDD))
    for name, number in zip(("transverse spacing", "focal radius", "SDD"),
                            (fixed[0], fixed[2], fixed[3]), strict=True):  # fmt: skip
        if number <= 0:
            raise ValueError(f"{where}: {name} must be positive, got {number}")
    return _PdView(
        phi=value(tags.PD_ANGLE),
        z=value(tags.PD_AXIAL),
        rows=rows,
        columns=columns,
        fixed=(*fixed, *centre),
        shape_name=tags.text(shape_raw),
        mu_water=tags.number(water, f"{where} WaterAttenuationCoefficient")
        if water is not None
        else MU_WATER_DEFAULT,
        number=_instance_number(ds),
    )


def _pd_centre(ds: Dataset, rows: int, columns: int, where: str) -> tuple[float, float]:
    raw = tags.pd_value(ds, tags.PD_CENTRAL)
    if raw is None:
        return (rows - 1) / 2, (columns - 1) / 2
    values = tags.floats(raw, f"{where} DetectorCentralElement")
    if values.size != 2:
        raise ValueError(f"{where}: DetectorCentralElement needs (column, row), got {values}")
    return float(values[1]) - 1.0, float(values[0]) - 1.0  # 1-based (column, row)


def _check_flying_focal_spot(ds: Dataset, where: str) -> None:
    mode = tags.pd_value(ds, tags.PD_FFS)
    if mode is not None and tags.text(mode) not in ("FFSNONE", ""):
        raise ValueError(f"{where}: flying focal spot {tags.text(mode)} is not supported")
    for tag in (tags.PD_ANGLE_SHIFT, tags.PD_AXIAL_SHIFT, tags.PD_RADIAL_SHIFT):
        shift = tags.pd_value(ds, tag)
        if shift is not None and abs(tags.number(shift, f"{where} source shift")) > 1e-6:
            raise ValueError(f"{where}: a focal spot shift ({tag:08X}) is not supported")


def _instance_number(ds: Dataset) -> int | None:
    try:
        value = ds.get("InstanceNumber")
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _pd_geometry(datasets: Sequence[Dataset]) -> ScanGeometry:
    views = [_pd_view(ds, i) for i, ds in enumerate(datasets)]
    first = views[0]
    for i, view in enumerate(views):
        _same_detector(first, view, i)
    order = _acquisition_order(views)
    phi = np.unwrap(np.array([views[i].phi for i in order]))
    steps = np.diff(phi)
    if steps.size and not ((steps > 0).all() or (steps < 0).all()):
        raise ValueError("projection angles are not monotonic in acquisition order")
    zs = np.array([v.z for v in views])
    if np.ptp(zs) > Z_TOL_MM:
        raise ValueError(
            f"focal centre z spans {np.ptp(zs):.3f} mm: a helical scan, which needs helical "
            "rebinning (not supported); only circular scans are reconstructed"
        )
    beta = np.rad2deg(-phi - np.pi / 2)  # DICOM-CT-PD phi0 -> kernels' beta (see docs)
    if beta.size > 1 and beta[1] < beta[0]:
        order, beta = order[::-1], beta[::-1]
    du, dv, dist, sdd, crow, ccol = first.fixed
    return ScanGeometry(
        layout="DICOM-CT-PD",
        kind="fan" if first.rows == 1 else "cone",
        detector=_pd_detector(first.shape_name, first.rows),
        views=len(views),
        rows=first.rows,
        columns=first.columns,
        angles_deg=beta - beta[0] + (beta[0] % 360.0),
        du=du,
        dv=dv or None,
        source_isocenter=dist,
        source_detector=sdd,
        det_center=(crow, ccol),
        isocenter=(0.0, 0.0, float(zs.mean())),
        mu_water=first.mu_water,
        order=tuple(order),
    )


def _same_detector(first: _PdView, view: _PdView, index: int) -> None:
    if (view.rows, view.columns) != (first.rows, first.columns):
        raise ValueError(
            f"projection {index}: detector is {view.rows}x{view.columns} (rows x columns) but "
            f"projection 0's is {first.rows}x{first.columns}"
        )
    if view.shape_name != first.shape_name:
        raise ValueError(f"projection {index}: detector shape {view.shape_name} differs")
    if not np.allclose(view.fixed, first.fixed, rtol=REL_TOL, atol=1e-6):
        raise ValueError(
            f"projection {index}: geometry (spacing, distances, centre) {view.fixed} differs "
            f"from projection 0's {first.fixed}"
        )


def _acquisition_order(views: list[_PdView]) -> list[int]:
    numbers = [v.number for v in views]
    if None not in numbers and len(set(numbers)) == len(numbers):
        return sorted(range(len(views)), key=lambda i: numbers[i] or 0)
    return sorted(range(len(views)), key=lambda i: views[i].phi)


def _pd_detector(shape_name: str, rows: int) -> str:
    if shape_name == "FLAT":
        return "flat"
    if shape_name == "CYLINDRICAL" or (shape_name == "SPHERICAL" and rows == 1):
        return "equiangular"
    raise ValueError(f"DetectorShape {shape_name!r} is not supported (FLAT or CYLINDRICAL)")


def _pd_samples(ds: Dataset, geometry: ScanGeometry, index: int) -> F32:
    """One projection as (rows, columns) line integrals, RescaleSlope/Intercept applied."""
    where = f"projection {index} ({ds.get('SOPInstanceUID', '?')})"
    try:
        stored = np.asarray(ds.pixel_array, dtype=np.float64)
    except Exception as exc:  # pydicom raises many kinds for missing or broken pixels
        raise ValueError(f"{where}: cannot decode pixel data: {exc}") from exc
    values = stored * float(ds.get("RescaleSlope", 1) or 1) + float(
        ds.get("RescaleIntercept", 0) or 0
    )
    rows, columns = geometry.rows, geometry.columns
    if values.shape == (columns, rows):
        values = values.T  # DICOM-CT-PD: image rows run along the detector's columns
    elif values.shape != (rows, columns):
        raise ValueError(
            f"{where}: image is {values.shape[0]}x{values.shape[1]} but the detector is "
            f"{rows} rows x {columns} columns"
        )
    if not np.isfinite(values).all():
        raise ValueError(f"{where}: projection holds NaN or inf")
    return np.ascontiguousarray(values, dtype=np.float32)


# ---------------------------------------------------------------- Raw Data sinogram


def _raw_geometry(ds: Dataset) -> ScanGeometry:
    values = tags.raw_block_values(ds) or {}
    missing = [name for name in tags.RAW_REQUIRED if name not in values]
    if missing:
        raise ValueError(f"Raw Data sinogram: missing {', '.join(missing)} "
                         f"(private block {tags.RAW_CREATOR!r})")  # fmt: skip
    kind = str(values["GeometryType"]).strip().lower()
    if kind not in ("parallel", "fan", "cone"):
        raise ValueError(f"GeometryType {values['GeometryType']!r}: expected PARALLEL, FAN or CONE")
    views = tags.count(values["NumberOfViews"], "NumberOfViews")
    rows = tags.count(values["NumberOfDetectorRows"], "NumberOfDetectorRows")
    columns = tags.count(values["NumberOfDetectorColumns"], "NumberOfDetectorColumns")
    angles = tags.floats(values["ViewAngles"], "ViewAngles")
    if angles.size != views:
        raise ValueError(f"ViewAngles has {angles.size} values for {views} views")
    order = np.arange(views)
    if views > 1 and angles[1] < angles[0]:
        order, angles = order[::-1], angles[::-1]
    if views > 1 and not (np.diff(angles) > 0).all():
        raise ValueError("ViewAngles must be strictly monotonic")
    if kind == "fan" and rows != 1:
        raise ValueError(f"GeometryType FAN needs one detector row, got {rows}")
    distances = _raw_distances(values, kind)
    return ScanGeometry(
        layout="raw-sinogram",
        kind=kind,  # type: ignore[arg-type]  # checked against the Literal above
        detector=_raw_detector(values, kind),
        views=views,
        rows=rows,
        columns=columns,
        angles_deg=angles,
        du=_positive(values, "DetectorElementTransverseSpacing"),
        dv=_positive(values, "DetectorElementAxialSpacing")
        if "DetectorElementAxialSpacing" in values
        else None,
        source_isocenter=distances[0],
        source_detector=distances[1],
        det_center=_raw_centre(values, kind, rows, columns),
        isocenter=_isocenter(ds),
        mu_water=_positive(values, "WaterAttenuationCoefficient")
        if "WaterAttenuationCoefficient" in values
        else MU_WATER_DEFAULT,
        order=tuple(int(i) for i in order),
    )


def _positive(values: dict[str, Any], name: str) -> float:
    number = tags.number(values[name], name)
    if number <= 0:
        raise ValueError(f"{name} must be positive, got {number}")
    return number


def _raw_distances(values: dict[str, Any], kind: str) -> tuple[float | None, float | None]:
    if kind == "parallel":
        return None, None
    for name in ("DistanceSourceToIsocenter", "DistanceSourceToDetector"):
        if name not in values:
            raise ValueError(f"GeometryType {kind.upper()} needs {name}")
    return (_positive(values, "DistanceSourceToIsocenter"),
            _positive(values, "DistanceSourceToDetector"))  # fmt: skip


def _raw_detector(values: dict[str, Any], kind: str) -> str:
    if kind == "parallel":
        return "flat"
    shape = str(values.get("DetectorShape", "")).strip().upper()
    if shape == "FLAT":
        return "flat"
    if shape == "CYLINDRICAL":
        return "equiangular"
    raise ValueError(f"DetectorShape {shape!r}: expected FLAT or CYLINDRICAL for {kind.upper()}")


def _raw_centre(values: dict[str, Any], kind: str, rows: int, columns: int) -> tuple[float, float]:
    axis = columns // 2 if kind == "parallel" else (columns - 1) / 2
    default = ((rows - 1) / 2, float(axis))
    if "DetectorCentralElement" not in values:
        return default
    centre = tags.floats(values["DetectorCentralElement"], "DetectorCentralElement")
    if centre.size != 2:
        raise ValueError(f"DetectorCentralElement needs (row, column), got {centre}")
    if kind == "parallel" and abs(centre[1] - axis) > 1e-6:
        raise ValueError(f"parallel data must have the rotation axis at column {axis}")
    return float(centre[0]), float(centre[1])


def _isocenter(ds: Dataset) -> tuple[float, float, float]:
    if ds.get("IsocenterPosition") in (None, ""):
        return 0.0, 0.0, 0.0
    pos = tags.floats(ds.IsocenterPosition, "IsocenterPosition")
    if pos.size != 3:
        raise ValueError(f"IsocenterPosition needs x, y, z; got {pos}")
    return float(pos[0]), float(pos[1]), float(pos[2])


def _raw_samples(ds: Dataset, geometry: ScanGeometry) -> F32:
    values = tags.raw_block_values(ds) or {}
    raw = values["ProjectionData"]
    buffer = bytes(raw) if isinstance(raw, bytes | bytearray) else np.asarray(raw, "<f4").tobytes()
    shape = (geometry.views, geometry.rows, geometry.columns)
    if len(buffer) != 4 * int(np.prod(shape)):
        raise ValueError(f"ProjectionData holds {len(buffer) // 4} floats, "
                         f"(views, rows, columns) {shape} needs {int(np.prod(shape))}")  # fmt: skip
    data = np.frombuffer(buffer, dtype="<f4").reshape(shape)[list(geometry.order)]
    if not np.isfinite(data).all():
        bad = int(np.argwhere(~np.isfinite(data))[0][0])
        raise ValueError(f"ProjectionData holds NaN or inf (first in view {bad})")
    return np.ascontiguousarray(data, dtype=np.float32)
