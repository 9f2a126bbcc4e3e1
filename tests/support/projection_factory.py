"""Synthetic CT projection data as DICOM: DICOM-CT-PD projections and Raw Data sinograms.

Objects come from scikit-image's Shepp-Logan phantom, the analytic phantoms of
tests/ct_phantoms.py and a real CT slice (pydicom's 693_UNCI.dcm) turned into attenuation.
Geometry follows kernels.ct: view angle beta puts the source at -D (sin beta, cos beta) in
the image's (x = column, y = row) plane; DICOM-CT-PD's phi0 = -(beta + 90 degrees).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, RawDataStorage, generate_uid
from scipy import ndimage

from agent.recon import projection_tags as tags
from tests.support.dicom_factory import new_instance, real_file

F64 = npt.NDArray[np.float64]
MU_WATER = 0.0192  # 1/mm, written into every object made here
PD_SLOPE = 1.0 / 8192  # DICOM-CT-PD rescale: line integrals up to 8 in uint16


def shepp_logan_mu(size: int) -> F64:
    """skimage's Shepp-Logan (400 px) resized to ``size``; its 0.2 (brain) becomes water."""
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    image = resize(shepp_logan_phantom(), (size, size), anti_aliasing=True)
    return np.asarray(image, dtype=np.float64) * (MU_WATER / 0.2)


def real_slice_mu(size: int) -> tuple[F64, float]:
    """693_UNCI.dcm resized to ``size``, HU -> mu (1/mm, >= 0), zeroed outside the circle.

    Returns the image and its pixel size in mm.
    """
    from skimage.transform import resize

    ds = dcmread(real_file("693_UNCI.dcm"))
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    mu = np.clip(MU_WATER * (1.0 + hu / 1000.0), 0.0, None)
    image = np.asarray(resize(mu, (size, size), anti_aliasing=True), dtype=np.float64)
    return inscribed(image), float(ds.PixelSpacing[0]) * ds.Rows / size


def inscribed(image: F64) -> F64:
    """Zero outside the inscribed circle (radon's circle=True field)."""
    n = image.shape[0]
    yy, xx = np.mgrid[:n, :n] - n // 2
    return np.where(xx**2 + yy**2 <= (n // 2 - 1) ** 2, image, 0.0)


def radon_parallel(image: F64, pixel_mm: float, angles_deg: F64) -> F64:
    """(detectors, views) line integrals (dimensionless) by skimage.transform.radon."""
    from skimage.transform import radon

    return np.asarray(radon(image, angles_deg, circle=True), dtype=np.float64) * pixel_mm


def project_fan(
    image: F64, pixel_mm: float, angles_deg: F64, det_s_mm: F64, dist: float, sdd: float,
    detector: str,
) -> F64:  # fmt: skip
    """(detectors, views) ray-driven line integrals through a pixel image (bilinear, p/2 steps).

    Flat detector: element at s sits at S + SDD d + s e, fan angle atan(s / SDD);
    equiangular: fan angle s / SDD. d = (sin b, cos b), e = (cos b, -sin b).
    """
    n = image.shape[0]
    step = pixel_mm / 2
    reach = n / 2 * pixel_mm * np.sqrt(2)
    t = np.arange(dist - reach, dist + reach, step)
    gamma = np.arctan2(det_s_mm, sdd) if detector == "flat" else det_s_mm / sdd
    out = np.empty((det_s_mm.shape[0], angles_deg.shape[0]))
    for k, beta in enumerate(np.deg2rad(angles_deg)):
        d = np.array([np.sin(beta), np.cos(beta)])
        e = np.array([np.cos(beta), -np.sin(beta)])
        direction = np.cos(gamma)[:, None] * d + np.sin(gamma)[:, None] * e  # (det, 2)
        points = -dist * d + t[None, :, None] * direction[:, None, :]  # (det, samples, 2)
        cols = points[..., 0] / pixel_mm + n // 2
        rows = points[..., 1] / pixel_mm + n // 2
        values = ndimage.map_coordinates(image, [rows.ravel(), cols.ravel()], order=1, cval=0.0)
        out[:, k] = values.reshape(rows.shape).sum(axis=1) * step
    return out


@dataclass
class Study:
    """Patient, study and series attributes shared by the objects of one test."""

    study_uid: str = field(default_factory=generate_uid)
    series_uid: str = field(default_factory=generate_uid)
    frame_uid: str = field(default_factory=generate_uid)

    def apply(self, ds: Dataset, description: str) -> None:
        ds.StudyInstanceUID, ds.SeriesInstanceUID = self.study_uid, self.series_uid
        ds.FrameOfReferenceUID = self.frame_uid
        ds.PatientName, ds.PatientID = "Synthetic^Projection", "SYNTH-PD-1"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20261129", "101500", "ACCPD1"
        ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "CT", 7, description
        ds.Manufacturer = "scanner-agent tests"


def _f32(*values: float) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


def ct_pd_series(
    projections: F64, angles_deg: F64, *, dist: float, sdd: float, du: float, dv: float,
    shape: str = "CYLINDRICAL", z_mm: float = 0.0, study: Study | None = None,
    centre: tuple[float, float] | None = None,
) -> list[Dataset]:  # fmt: skip
    """DICOM-CT-PD instances, one per view, from (views, rows, columns) line integrals.

    Geometry values are float32 bytes with VR UN, as in the TCIA files; the image is
    stored (detector columns x detector rows) in uint16 with RescaleSlope 1/8192.
    ``centre`` is the central element as 0-based (row, column); None: the panel's middle.
    """
    study = study or Study()
    views, rows, columns = projections.shape
    crow, ccol = centre if centre is not None else ((rows - 1) / 2, (columns - 1) / 2)
    out = []
    for k in range(views):
        ds = new_instance(CTImageStorage)
        study.apply(ds, "SYNTH DICOM-CT-PD")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = k + 1
        for group in (0x7029, 0x7031, 0x7033, 0x7041):
            ds.add_new((group << 16) | 0x0010, "LO", "SYNTHETIC DICOM-CT-PD")
        phi = np.mod(-np.deg2rad(angles_deg[k]) - np.pi / 2, 2 * np.pi)
        for tag, value in ((tags.PD_ROWS, _f32(rows)), (tags.PD_COLUMNS, _f32(columns)),
                           (tags.PD_TRANSVERSE_SPACING, _f32(du)), (tags.PD_AXIAL_SPACING, _f32(dv)),
                           (tags.PD_ANGLE, _f32(phi)), (tags.PD_AXIAL, _f32(z_mm)),
                           (tags.PD_RADIUS, _f32(dist)), (tags.PD_SDD, _f32(sdd)),
                           (tags.PD_CENTRAL, _f32(ccol + 1, crow + 1)),
                           (tags.PD_ANGLE_SHIFT, _f32(0)), (tags.PD_AXIAL_SHIFT, _f32(0)),
                           (tags.PD_RADIAL_SHIFT, _f32(0))):  # fmt: skip
            ds.add_new(tag, "UN", value)
        ds.add_new(tags.PD_SHAPE, "UN", shape.encode().ljust(len(shape) + len(shape) % 2))
        ds.add_new(tags.PD_FFS, "UN", b"FFSNONE ")
        ds.add_new(tags.PD_WATER, "UN", f"{MU_WATER}".encode())
        stored = np.clip(np.rint(projections[k].T / PD_SLOPE), 0, 65535).astype("<u2")
        ds.Rows, ds.Columns = stored.shape  # (detector columns, detector rows)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = f"{PD_SLOPE:.10f}", 0
        ds.PixelData = stored.tobytes()
        out.append(ds)
    return out


def raw_sinogram(
    projections: F64, angles_deg: F64, *, geometry: str, du: float,
    dist: float | None = None, sdd: float | None = None, shape: str | None = None,
    dv: float | None = None, isocenter: tuple[float, float, float] | None = None,
    study: Study | None = None,
) -> Dataset:  # fmt: skip
    """A Raw Data Storage instance holding (views, rows, columns) float32 line integrals."""
    study = study or Study()
    views, rows, columns = projections.shape
    ds = new_instance(RawDataStorage)
    study.apply(ds, f"SYNTH {geometry} SINOGRAM")
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = "20261129", "101500"
    if isocenter is not None:
        ds.IsocenterPosition = [f"{v:g}" for v in isocenter]
    block = ds.private_block(tags.RAW_GROUP, tags.RAW_CREATOR, create=True)
    put = lambda name, value: block.add_new(  # noqa: E731
        tags.RAW_OFFSETS[name], tags.RAW_ELEMENTS[tags.RAW_OFFSETS[name]][0], value
    )
    put("GeometryType", geometry)
    put("NumberOfViews", views)
    put("NumberOfDetectorRows", rows)
    put("NumberOfDetectorColumns", columns)
    put("ViewAngles", [float(a) for a in angles_deg])
    put("DetectorElementTransverseSpacing", du)
    put("WaterAttenuationCoefficient", MU_WATER)
    for name, value in (("DistanceSourceToIsocenter", dist), ("DistanceSourceToDetector", sdd),
                        ("DetectorShape", shape), ("DetectorElementAxialSpacing", dv)):  # fmt: skip
        if value is not None:
            put(name, value)
    put("ProjectionData", np.ascontiguousarray(projections, dtype="<f4").tobytes())
    return ds
