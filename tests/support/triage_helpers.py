"""Shared bits of the triage tests: the MR fixture model, copies to tamper with, head slices."""

from __future__ import annotations

import shutil
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.support.dicom_factory import ct_dataset

__all__ = ["SHIPPED", "copy_model", "ct_dataset", "head_header"]

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "models"
SHIPPED = Path(__file__).resolve().parents[2] / "models"


def copy_model(name: str, dest: Path, source: Path = FIXTURES) -> Path:
    """A copy of model ``name`` alone in ``dest/models/``; returns its folder."""
    folder = dest / "models" / name
    shutil.copytree(source / name, folder)
    return folder


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
