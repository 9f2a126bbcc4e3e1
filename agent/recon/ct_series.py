"""Writing a reconstruction as a CT Image Storage series (HU, int16, one slice per instance).

Geometry: the reconstruction's (x = column, y = row) plane is the patient's axial plane
(ImageOrientationPatient 1\\0\\0\\0\\1\\0); pixel (row, column) of slice k sits at
isocentre + ((column - n//2) p, (row - n//2) p, offset_k), the kernels' convention.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

if TYPE_CHECKING:
    from agent.recon.ct_geometry import ScanGeometry

F32 = npt.NDArray[np.float32]
HU_INTERCEPT = -1024
SERIES_NUMBER_OFFSET = 1000  # reconstructed series number = source series number + this
_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
           "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
           "ReferringPhysicianName", "StudyDescription", "Manufacturer", "InstitutionName",
           "StationName", "BodyPartExamined", "PatientPosition", "KVP", "SpecificCharacterSet",
           "FrameOfReferenceUID")  # fmt: skip


@dataclass(frozen=True)
class Grid:
    """The reconstruction grid: size x size pixels of ``pixel_mm``, slice offsets in z."""

    size: int
    pixel_mm: float
    slice_mm: float | None  # None: unknown (SliceThickness is then left empty)
    offsets_mm: tuple[float, ...]  # z of each slice relative to the isocentre


def to_hu(volume: F32, mu_water: float) -> npt.NDArray[np.int16]:
    """Stored values with RescaleIntercept -1024: HU = 1000 (mu / mu_water - 1)."""
    hu = 1000.0 * (volume.astype(np.float64) / mu_water - 1.0)
    stored = np.clip(np.rint(hu - HU_INTERCEPT), -32768, 32767)
    return stored.astype(np.int16)


def ct_series(
    volume: F32, grid: Grid, geometry: ScanGeometry, sources: list[Dataset]
) -> list[Dataset]:
    """One CT Image Storage data set per slice of ``volume`` (slices, n, n), in 1/mm."""
    stored = to_hu(volume, geometry.mu_water)
    common = _common(sources[0], geometry, grid, len(stored))
    references = _references(sources)
    out = []
    for k, pixels in enumerate(stored):
        ds = _slice(common, grid, geometry, k, pixels)
        ds.update(references)
        out.append(ds)
    return out


def _common(src: Dataset, geometry: ScanGeometry, grid: Grid, count: int) -> Dataset:
    ds = Dataset()
    for keyword in _COPIED:
        if keyword in src:
            setattr(ds, keyword, src.get(keyword))
    ds.FrameOfReferenceUID = src.get("FrameOfReferenceUID") or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = int(src.get("SeriesNumber") or 0) + SERIES_NUMBER_OFFSET
    ds.SeriesDescription = f"RECON {src.get('SeriesDescription', '')}".strip()[:64]
    now = datetime.datetime.now()
    ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.Modality = "CT"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.AcquisitionNumber = 1
    ds.ImagesInAcquisition = count
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [_ds(grid.pixel_mm), _ds(grid.pixel_mm)]
    ds.SliceThickness = _ds(grid.slice_mm) if grid.slice_mm else None
    if count > 1 and grid.slice_mm:
        ds.SpacingBetweenSlices = _ds(grid.slice_mm)
    ds.ReconstructionDiameter = _ds(grid.pixel_mm * grid.size)
    ds.ConvolutionKernel = "RAMP"
    ds.Rows = ds.Columns = grid.size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = HU_INTERCEPT, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.DerivationDescription = _derivation(geometry, src)
    return ds


def _derivation(geometry: ScanGeometry, src: Dataset) -> str:
    method = {"parallel": "parallel-beam FBP", "fan": "fan-beam FBP", "cone": "FDK"}
    return (
        f"Reconstructed by scanner-agent ({method[geometry.kind]}, ramp filter) from "
        f"{geometry.views} {geometry.layout} views of series {src.get('SeriesInstanceUID', '')}; "
        f"water attenuation {geometry.mu_water:g}/mm"
    )[:1024]


def _slice(
    common: Dataset, grid: Grid, geometry: ScanGeometry, k: int, pixels: npt.NDArray[np.int16]
) -> Dataset:
    ds = Dataset()
    ds.update(common)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = k + 1
    x0, y0, z0 = geometry.isocenter
    corner = -(grid.size // 2) * grid.pixel_mm
    z = z0 + grid.offsets_mm[k]
    ds.ImagePositionPatient = [_ds(x0 + corner), _ds(y0 + corner), _ds(z)]
    ds.SliceLocation = _ds(z)
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    return ds


def _references(sources: list[Dataset]) -> Dataset:
    """SourceImageSequence for image sources (DICOM-CT-PD), SourceInstanceSequence else."""
    images, others = Sequence(), Sequence()
    for src in sources:
        item = Dataset()
        item.ReferencedSOPClassUID = src.SOPClassUID
        item.ReferencedSOPInstanceUID = src.SOPInstanceUID
        (images if "PixelData" in src or "Rows" in src else others).append(item)
    refs = Dataset()
    if images:
        refs.SourceImageSequence = images
    if others:
        refs.SourceInstanceSequence = others
    return refs


def _ds(value: float | None) -> str:
    """A decimal string of at most 16 characters."""
    if value is None:
        return ""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if len(text) <= 16 else f"{value:.8g}"
