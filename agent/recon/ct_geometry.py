"""The geometry of a CT projection series: the types every CT reconstruction module shares.

Scan geometry follows :mod:`kernels.ct` (``_geometry``): view angle beta puts the source at
-D (sin beta, cos beta) in the image's (x = column, y = row) plane; docs/projection-data.md
has the layouts and conventions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Kind = Literal["parallel", "fan", "cone"]
MU_WATER_DEFAULT = 0.0192  # 1/mm, water at about 70 keV; used only when the data give none
REL_TOL = 1e-4  # per-view geometry must agree to this relative tolerance
Z_TOL_MM = 1e-3  # a circular scan keeps the focal centre at one z


@dataclass(frozen=True, eq=False)
class ScanGeometry:
    """Everything but the samples: enough to reconstruct and to place the images."""

    layout: str  # "DICOM-CT-PD" | "raw-sinogram"
    kind: Kind
    detector: str  # "flat" | "equiangular" (parallel: "flat")
    views: int
    rows: int
    columns: int
    angles_deg: F64  # kernels' beta, strictly increasing
    du: float  # mm; at the detector (fan, cone) or at the isocentre (parallel)
    dv: float | None  # mm, detector row pitch; None when unknown
    source_isocenter: float | None
    source_detector: float | None
    det_center: tuple[float, float]  # (row, column), 0-based
    isocenter: tuple[float, float, float]  # patient mm
    mu_water: float  # 1/mm
    order: tuple[int, ...]  # source index of each view, in angle order


@dataclass(frozen=True, eq=False)
class ProjectionSet:
    geometry: ScanGeometry
    data: F32  # (views, rows, columns) line integrals of mu (1/mm) over mm: dimensionless
    header: Dataset  # a source data set, for patient and study attributes
    sources: tuple[tuple[str, str], ...]  # (SOP Class UID, SOP Instance UID) of each source
