"""Shared bits of the triage tests: the MR fixture model, copies to tamper with, head slices."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "models"
SHIPPED = Path(__file__).resolve().parents[2] / "models"


def copy_model(name: str, dest: Path, source: Path = FIXTURES) -> Path:
    """A copy of model ``name`` alone in ``dest/models/``; returns its folder."""
    folder = dest / "models" / name
    shutil.copytree(source / name, folder)
    return folder


def ct_dataset(hu: np.ndarray, header: Dataset, index: int, pixel_mm: float = 2.0) -> Dataset:
    """A CT slice (int16, intercept -1024) holding ``hu``, in the series of ``header``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "PatientID", "PatientName", "StudyDate",
               "AccessionNumber", "SeriesNumber", "SeriesDescription", "BodyPartExamined",
               "FrameOfReferenceUID", "StudyTime", "ReferringPhysicianName", "StudyID"):  # fmt: skip
        if kw in header:
            setattr(ds, kw, header.get(kw))
    ds.Modality = "CT"
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [-128.0, -128.0, -index * 5.0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [pixel_mm, pixel_mm]
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = np.clip(np.round(hu + 1024), -32768, 32767).astype(np.int16).tobytes()
    return ds


def head_header(body_part: str = "HEAD") -> Dataset:
    hdr = Dataset()
    hdr.StudyInstanceUID, hdr.SeriesInstanceUID = generate_uid(), generate_uid()
    hdr.FrameOfReferenceUID = generate_uid()
    hdr.PatientID, hdr.PatientName = "SYNTH-ICH", "Synthetic^Head"
    hdr.StudyDate, hdr.StudyTime, hdr.StudyID = "20240601", "120000", "1"
    hdr.AccessionNumber, hdr.ReferringPhysicianName = "ACC-ICH", ""
    hdr.SeriesNumber, hdr.SeriesDescription = 2, "HEAD PLAIN 5mm"
    if body_part:
        hdr.BodyPartExamined = body_part
    return hdr
