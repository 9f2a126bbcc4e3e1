"""Synthetic DICOM for tests and benchmarks, built from real pixels where possible."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from agent.receive.spool import dataset_offset

REAL_FILES = {
    "CT": "693_UNCI.dcm",
    "MR": "MR2_UNCI.dcm",
    "CR": "RG1_UNCI.dcm",
    "enhanced CT": "eCT_Supplemental.dcm",
}
COMPRESSED_FILES = [
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline
    "JPEG-LL.dcm",  # JPEG lossless
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "JPEG2000.dcm",  # JPEG 2000
    "MR_small_RLE.dcm",  # RLE
    "image_dfl.dcm",  # deflated explicit VR little endian
]


def real_file(name: str) -> Path:
    """A file from pydicom's test data or pydicom-data; never downloads."""
    return Path(get_testdata_file(name, download=False))


@functools.cache
def _ct_pixels() -> np.ndarray:
    ds = dcmread(real_file(REAL_FILES["CT"]))
    pixels: np.ndarray = ds.pixel_array.astype(np.int16)
    return pixels


def new_instance(sop_class: str, transfer_syntax: str = ExplicitVRLittleEndian) -> Dataset:
    """An empty data set of ``sop_class`` with a fresh SOP Instance UID and its file meta."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


_SERIES_KEYWORDS = (
    "StudyInstanceUID", "SeriesInstanceUID", "PatientID", "PatientName", "StudyDate",
    "StudyTime", "StudyID", "ReferringPhysicianName", "AccessionNumber", "SeriesNumber",
    "SeriesDescription", "BodyPartExamined", "FrameOfReferenceUID",
)  # fmt: skip


def _ct_image(stored: np.ndarray, header: Dataset, index: int, *, pixel_mm: float,
              slice_mm: float, corner_mm: float, thickness: float | None) -> Dataset:  # fmt: skip
    """An axial CT Image Storage slice of int16 ``stored`` values (intercept -1024)."""
    ds = new_instance(CTImageStorage)
    for keyword in _SERIES_KEYWORDS:
        if keyword in header:
            setattr(ds, keyword, header.get(keyword))
    ds.Modality = "CT"
    ds.InstanceNumber = index + 1
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [corner_mm, corner_mm, -index * slice_mm]
    if thickness is not None:
        ds.SliceThickness = thickness
    ds.PixelSpacing = [pixel_mm, pixel_mm]
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = stored.astype(np.int16).tobytes()
    return ds


def ct_slice(series: Dataset, index: int, *, images_in_acquisition: int | None = None) -> Dataset:
    """Slice ``index`` (0-based) of a synthetic axial CT series built on real CT pixels."""
    ds = _ct_image(_ct_pixels(), series, index, pixel_mm=0.9765625, slice_mm=1.25,
                   corner_mm=-250.0, thickness=1.25)  # fmt: skip
    if images_in_acquisition:
        ds.ImagesInAcquisition = images_in_acquisition
        ds.AcquisitionNumber = 1
    return ds


def ct_dataset(hu: np.ndarray, header: Dataset, index: int, pixel_mm: float = 2.0) -> Dataset:
    """A 5 mm axial CT slice holding ``hu`` (int16, intercept -1024), in the series of ``header``."""
    stored = np.clip(np.round(hu + 1024), -32768, 32767)
    return _ct_image(stored, header, index, pixel_mm=pixel_mm, slice_mm=5.0, corner_mm=-128.0,
                     thickness=None)  # fmt: skip


def series_header(description: str = "SYNTH AXIAL", body_part: str = "CHEST") -> Dataset:
    hdr = Dataset()
    hdr.StudyInstanceUID = generate_uid()
    hdr.SeriesInstanceUID = generate_uid()
    hdr.FrameOfReferenceUID = generate_uid()
    hdr.PatientID = "SYNTH-0001"
    hdr.PatientName = "Synthetic^Patient"
    hdr.StudyDate = "20261129"
    hdr.AccessionNumber = "ACC0001"
    hdr.SeriesNumber = 2
    hdr.SeriesDescription = description
    hdr.BodyPartExamined = body_part
    return hdr


def write_ct_series(
    folder: Path, count: int, *, images_in_acquisition: int | None = None,
    header: Dataset | None = None,
) -> list[Path]:  # fmt: skip
    """Write ``count`` slices as Part 10 files; returns their paths in slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    hdr = header or series_header()
    paths = []
    for i in range(count):
        ds = ct_slice(hdr, i, images_in_acquisition=images_in_acquisition)
        path = folder / f"ct{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def video_like_object(path: Path) -> Path:
    """A Secondary Capture in MPEG-2 (which nothing here can decode), for refusal tests."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import MPEG2MPML, SecondaryCaptureImageStorage

    hdr = series_header("VIDEO CLIP", "ABDOMEN")
    ds = new_instance(SecondaryCaptureImageStorage, MPEG2MPML)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "PatientID", "PatientName"):
        setattr(ds, keyword, hdr.get(keyword))
    ds.Modality = "OT"
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 64, 64, 3
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PlanarConfiguration = 0
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(range(256)) * 4])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def jpeg2000_ct(path: Path) -> Path:
    """A real MR slice compressed with JPEG 2000 lossless (pydicom's own test file)."""
    import shutil

    shutil.copyfile(real_file("MR_small_jp2klossless.dcm"), path)
    return path


def dataset_sha256(data: bytes) -> str:
    """The journal's hash: SHA-256 of the data set bytes after the Part 10 preamble and meta."""
    return hashlib.sha256(data[dataset_offset(data[:1024]) :]).hexdigest()
