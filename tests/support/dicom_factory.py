"""Synthetic DICOM for tests and benchmarks, built from real pixels where possible."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

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


def ct_slice(series: Dataset, index: int, *, images_in_acquisition: int | None = None) -> Dataset:
    """Slice ``index`` (0-based) of a synthetic axial CT series built on real CT pixels."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "PatientID", "PatientName",
                    "StudyDate", "AccessionNumber", "SeriesNumber", "SeriesDescription",
                    "BodyPartExamined", "FrameOfReferenceUID"):  # fmt: skip
        setattr(ds, keyword, series.get(keyword))
    ds.Modality = "CT"
    ds.InstanceNumber = index + 1
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-250.0, -250.0, -index * 1.25]
    ds.SliceThickness = 1.25
    ds.PixelSpacing = [0.9765625, 0.9765625]
    if images_in_acquisition:
        ds.ImagesInAcquisition = images_in_acquisition
        ds.AcquisitionNumber = 1
    pixels = _ct_pixels()
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = pixels.tobytes()
    return ds


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
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
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
