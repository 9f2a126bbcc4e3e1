"""Reconstructed MR slices as DICOM MR Image Storage data sets.

Geometry follows the ISMRMRD conventions (positions and directions in the patient
coordinate system, mm, as DICOM's): columns run along ``read_dir`` and rows along
``phase_dir``, so ImageOrientationPatient is read_dir then phase_dir, and
ImagePositionPatient is the centre of the top-left pixel, ``position`` being the centre
of the slice, which in the centred-FFT convention is pixel (ny/2, nx/2).

UIDs are derived deterministically (``2.25.`` + a name-based UUID) from a session key:
the header's measurementID when present, so a resent measurement amends the same series,
otherwise a key made per connection. The header's studyInstanceUID, seriesInstanceUIDRoot
and frameOfReferenceUID win when they are valid.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    MRImageStorage,
)

from agent.recon.mrd_recon import ReconImage
from agent.recon.mrd_session import Encoding

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_TARGET = 3000.0  # the first slice's 99.9th percentile maps here; later slices share the scale
# A warning that goes into the series' verdict (QC warn, a review alert) and the images
DEFAULT_ORIENTATION = (
    "recon.default_orientation",
    "the raw data has no slice orientation (all direction vectors zero): reconstructed as "
    "axial (read along x, phase along y); the images' patient orientation is assumed",
)


def _valid_uid(value: Any) -> str | None:
    text = str(value).strip() if value else ""
    return text if _UID_RE.match(text) and len(text) <= 64 else None


_NAMESPACE = uuid.UUID("6f2b1f8e-4a43-5c1e-9d0a-6d72642d7569")  # scanner-agent MRD UIDs


def _uid(key: str, *parts: object) -> str:
    """``2.25.<uuid5>``: a name-based UUID as a UID (PS3.5 B.2), the same for the same name."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, '|'.join([key, *map(str, parts)])).int}"


@dataclass
class SeriesContext:
    """What every image of one MRD session shares. ``scale`` is set by the first image."""

    key: str
    source: str  # e.g. "MRD stream from 10.0.0.5:40122"
    header: Any
    encoding: Encoding
    study_uid: str
    series_uid: str
    frame_uid: str
    series_number: int
    scale: float | None = None
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (code, message), once each

    @staticmethod
    def create(header: Any, encoding: Encoding, source: str, fallback_key: str) -> SeriesContext:
        meas = header.measurementInformation
        study = header.studyInformation
        mid = str(meas.measurementID).strip() if meas is not None and meas.measurementID else ""
        key = f"measurement:{mid}" if mid else f"session:{fallback_key}"
        number = (
            int(meas.initialSeriesNumber) if meas is not None and meas.initialSeriesNumber else 1
        )
        root = _valid_uid(meas.seriesInstanceUIDRoot) if meas is not None else None
        series = f"{root}.{number}" if root and len(root) + len(str(number)) < 64 else None
        return SeriesContext(
            key=key,
            source=source,
            header=header,
            encoding=encoding,
            study_uid=(study and _valid_uid(study.studyInstanceUID)) or _uid(key, "study"),
            series_uid=series or _uid(key, "series"),
            frame_uid=(meas and _valid_uid(meas.frameOfReferenceUID)) or _uid(key, "frame"),
            series_number=number,
        )

    def instance_number(self, key: tuple[int, ...]) -> int:
        slices, contrasts, _ = self.encoding.counts
        s, c, r = key[0], key[1], key[2]
        return 1 + s + (slices or 1) * (c + (contrasts or 1) * r)


def session_key(xml: bytes, peer: str, started: float) -> str:
    """A key for a session without a measurementID: the header, the peer and the time."""
    return hashlib.sha256(xml + f"|{peer}|{started!r}".encode()).hexdigest()[:32]


def scaled_pixels(image: ReconImage, ctx: SeriesContext) -> np.ndarray:
    """uint16 pixels; the scale is fixed by the session's first image so slices compare."""
    if ctx.scale is None:
        ref = float(np.percentile(image.pixels, 99.9)) if image.pixels.size else 0.0
        ctx.scale = _TARGET / ref if ref > 0 else 1.0
    out: np.ndarray = np.clip(np.rint(image.pixels * ctx.scale), 0, 65535).astype(np.uint16)
    return out


def to_dataset(image: ReconImage, ctx: SeriesContext, now: dt.datetime | None = None) -> Dataset:
    """An MR Image Storage data set (Explicit VR Little Endian) for one magnitude image."""
    pixels = scaled_pixels(image, ctx)
    inum = ctx.instance_number(image.key)
    ds = Dataset()
    _identity(ds, ctx, inum, now or dt.datetime.now(dt.UTC))
    _patient(ds, ctx.header)
    _equipment(ds, ctx.header)
    _geometry(ds, image)
    _mr(ds, ctx, image)
    _pixels(ds, pixels)
    ds.DerivationDescription = (
        f"Reconstructed by scanner-agent from ISMRMRD raw data ({ctx.source}; {image.method})"
    )[:1024]
    ds.ImageComments = f"MRD {ctx.key}; pixel = magnitude x {ctx.scale:.6g}"[:10240]
    if image.geometry.defaulted:
        if DEFAULT_ORIENTATION not in ctx.warnings:
            ctx.warnings.append(DEFAULT_ORIENTATION)
        ds.ImageComments = f"{ds.ImageComments}; WARNING: {DEFAULT_ORIENTATION[1]}"[:10240]
    ds.file_meta = _file_meta(ds)
    return ds


def _identity(ds: Dataset, ctx: SeriesContext, inum: int, now: dt.datetime) -> None:
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = _uid(ctx.key, "image", ctx.series_uid, inum)
    ds.StudyInstanceUID = ctx.study_uid
    ds.SeriesInstanceUID = ctx.series_uid
    ds.FrameOfReferenceUID = ctx.frame_uid
    ds.Modality = "MR"
    ds.SeriesNumber = ctx.series_number
    ds.InstanceNumber = inum
    ds.AcquisitionNumber = 1
    expected = ctx.encoding.images_expected
    if expected is not None:
        ds.ImagesInAcquisition = expected
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    meas, study = ctx.header.measurementInformation, ctx.header.studyInformation
    day = now.strftime("%Y%m%d")
    ds.StudyDate = str(study.studyDate).replace("-", "") if study and study.studyDate else day
    ds.SeriesDate = str(meas.seriesDate).replace("-", "") if meas and meas.seriesDate else day
    ds.ContentDate, ds.ContentTime = day, now.strftime("%H%M%S.%f")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime
    ds.StudyID = (study and study.studyID) or ""
    ds.AccessionNumber = str(study.accessionNumber) if study and study.accessionNumber else ""
    ds.ReferringPhysicianName = (study and study.referringPhysicianName) or ""
    ds.StudyDescription = (study and study.studyDescription) or ""
    ds.SeriesDescription = (
        (meas and (meas.seriesDescription or meas.protocolName)) or "MRD recon"
    )[:64]
    if study and study.bodyPartExamined:
        ds.BodyPartExamined = str(study.bodyPartExamined)[:16]
    if meas is not None and meas.patientPosition is not None:
        ds.PatientPosition = str(meas.patientPosition.value)


def _patient(ds: Dataset, header: Any) -> None:
    subj = header.subjectInformation
    ds.PatientName = (subj and subj.patientName) or ""
    ds.PatientID = (subj and subj.patientID) or ""
    ds.PatientBirthDate = (
        str(subj.patientBirthdate).replace("-", "") if subj and subj.patientBirthdate else ""
    )
    gender = str(subj.patientGender) if subj and subj.patientGender else ""
    ds.PatientSex = gender if gender in ("M", "F", "O") else ""


def _equipment(ds: Dataset, header: Any) -> None:
    sys = header.acquisitionSystemInformation
    ds.Manufacturer = (sys and sys.systemVendor) or ""
    if sys is not None:
        if sys.systemModel:
            ds.ManufacturerModelName = sys.systemModel
        if sys.institutionName:
            ds.InstitutionName = sys.institutionName
        if sys.stationName:
            ds.StationName = str(sys.stationName)[:16]
        if sys.systemFieldStrength_T:
            ds.MagneticFieldStrength = f"{float(sys.systemFieldStrength_T):.6g}"
        if sys.receiverChannels:
            ds.ReceiveCoilName = f"{sys.receiverChannels} channels"


def _unit(v: tuple[float, float, float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    n = float(np.linalg.norm(a))
    if not n > 0:
        raise ValueError(f"direction {v} is not a vector")
    return a / n


def _geometry(ds: Dataset, image: ReconImage) -> None:
    g = image.geometry
    ny, nx = image.pixels.shape
    dx, dy = image.fov[0] / nx, image.fov[1] / ny
    read, phase = _unit(g.read_dir), _unit(g.phase_dir)
    normal = np.cross(read, phase)
    centre = np.asarray(g.position, dtype=np.float64)
    corner = centre - (nx // 2) * dx * read - (ny // 2) * dy * phase
    ds.ImagePositionPatient = [f"{v:.6f}".rstrip("0").rstrip(".") or "0" for v in corner]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*read, *phase)]
    ds.PixelSpacing = [f"{dy:.6g}", f"{dx:.6g}"]
    ds.SliceThickness = f"{image.fov[2]:.6g}"
    ds.SliceLocation = f"{float(centre @ normal):.6f}"
    ds.PositionReferenceIndicator = ""


def _mr(ds: Dataset, ctx: SeriesContext, image: ReconImage) -> None:
    seq = ctx.header.sequenceParameters
    contrast = image.key[1]

    def pick(values: Any) -> str | None:
        if not values:
            return None
        return f"{float(values[min(contrast, len(values) - 1)]):.6g}"

    ds.ScanningSequence = "RM"  # research mode: the sequence is not described in the header
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = pick(seq.TR) if seq else None
    ds.EchoTime = pick(seq.TE) if seq else None
    ds.EchoTrainLength = ctx.header.encoding[0].echoTrainLength or None
    if seq and seq.flipAngle_deg:
        ds.FlipAngle = pick(seq.flipAngle_deg)
    ds.AcquisitionMatrix = [0, ctx.encoding.recon_matrix[0], ctx.encoding.recon_matrix[1], 0]
    ds.TemporalPositionIdentifier = image.key[2] + 1


def _pixels(ds: Dataset, pixels: np.ndarray) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    hi = int(pixels.max()) if pixels.size else 0
    ds.WindowCenter, ds.WindowWidth = f"{hi / 2:.0f}", f"{max(hi, 1)}"


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta
