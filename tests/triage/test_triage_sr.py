"""The triage SR is a TID 1500 Measurement Report, valid for dicom3tools, that references the\nsource instances."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

from agent.domain.results import SCHEME
from agent.domain.verdicts import BodyPartCall, Finding, Triage
from agent.triage.sr import triage_sr
from tests.support.dicom3tools import assert_valid
from tests.support.triage_helpers import ct_dataset, head_header

ICH = hd.sr.CodedConcept("1386000", "SCT", "Intracranial hemorrhage")


def roundtrip(sr: hd.sr.ComprehensiveSR, tmp_path: Path) -> hd.sr.ComprehensiveSR:
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    ds = dcmread(path)
    return hd.sr.ComprehensiveSR.from_dataset(ds)


def _head_series(tmp_path: Path, n: int = 5) -> tuple[list[Path], list[Dataset]]:
    """A written head CT series (so dcentvfy can compare the report with it)."""
    hdr = head_header("")
    files = []
    for i in range(n):
        ds = ct_dataset(np.zeros((32, 32)), hdr, i)
        files.append(tmp_path / f"ct{i}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    return files, [dcmread(f, stop_before_pixels=True) for f in files]


def _stat(instances: list[tuple[str, str]]) -> Triage:
    return Triage(
        "stat",
        (
            Finding(
                "haemorrhage", 0.97, "stat", "ich@0.1.0", (instances[2][1], instances[3][1]), 0.4
            ),
        ),
        models=("ich@0.1.0", "bodypart@0.1.0"),
        body_part=BodyPartCall("", "HEAD", 0.93, None, "bodypart@0.1.0"),
    )


def _texts(items: Any) -> list[str]:
    return [i.TextValue for i in items if i.ValueType == "TEXT"]


def test_sr_is_tid_1500_with_findings_scores_and_slices(tmp_path: Path) -> None:
    _, headers = _head_series(tmp_path)
    hdr = headers[0]
    instances = [(str(h.SOPClassUID), str(h.SOPInstanceUID)) for h in headers]
    back = roundtrip(triage_sr(_stat(instances), hdr, instances), tmp_path)
    assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert back.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert back.StudyInstanceUID == hdr.StudyInstanceUID and back.PatientID == "SYNTH-ICH"
    assert back.SeriesInstanceUID != hdr.SeriesInstanceUID
    assert [c.CodingSchemeDesignator for c in back.CodingSchemeIdentificationSequence] == [SCHEME]
    evidence = back.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.SeriesInstanceUID == hdr.SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in evidence.ReferencedSOPSequence} == {
        u for _, u in instances
    }
    report = back.content
    (finding,) = report.get_image_measurement_groups(finding_type=ICH)
    (score,) = [m for m in finding.get_measurements() if m.name.meaning == "AI score"]
    assert (score.value, score.unit.value) == (0.97, "{ratio}")
    (priority,) = finding.get_qualitative_evaluations()
    assert (priority.name.value, priority.value.value) == ("260870009", "stat")
    refs = [i.referenced_sop_instance_uid for i in finding.source_images]
    assert refs == [instances[2][1], instances[3][1]]
    library = next(
        i for i in back.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "111028"
    )
    entries = [i for i in library.ContentSequence[0].ContentSequence if i.ValueType == "IMAGE"]
    assert len(entries) == len(instances), "every source instance is in the image library"
    (box,) = [
        i for i in back.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "C0034375"
    ]
    names = [i.ConceptNameCodeSequence[0].CodeMeaning for i in box.ContentSequence]
    assert names.count("Algorithm Name") == 2 and "Target Region" in names
    texts = _texts(box.ContentSequence)
    assert any("NOT FOR CLINICAL USE" in t for t in texts)
    assert any("(missing)" in t for t in texts)


def test_triage_report_passes_dciodvfy_and_dcentvfy(tmp_path: Path) -> None:
    files, headers = _head_series(tmp_path)
    instances = [(str(h.SOPClassUID), str(h.SOPInstanceUID)) for h in headers]
    for n, triage in enumerate((_stat(instances), Triage("routine"))):
        out = tmp_path / f"triage{n}.dcm"
        triage_sr(triage, headers[0], instances).save_as(out, enforce_file_format=True)
        assert_valid(out, files)


def test_unavailable_triage_sr(tmp_path: Path) -> None:
    hdr = head_header()
    instances = [(CTImageStorage, "1.2.826.0.1.3680043.8.498.77")]
    triage = Triage(
        "routine", status="unavailable", reasons=("ich: RuntimeError: boom",), models=("ich@0.1.0",)
    )
    back = roundtrip(triage_sr(triage, hdr, instances), tmp_path)
    box = next(
        i for i in back.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "C0034375"
    )
    assert any("unavailable" in t and "boom" in t for t in _texts(box.ContentSequence))
    buf = BytesIO()
    back.save_as(buf)
    assert buf.getvalue()


def test_non_conformant_study_time_is_repaired_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A real ultrasound header (pydicom's test files): StudyTime '14:04:38', which highdicom
    # refuses, so the report would be lost with a ValueError.
    path = get_testdata_file("ExplVR_BigEnd.dcm", download=False)
    assert path is not None, "pydicom's test files are missing"
    hdr = dcmread(path, stop_before_pixels=True)
    assert hdr.StudyTime == "14:04:38"
    with caplog.at_level("WARNING", logger="agent.domain.headers"):
        sr = triage_sr(Triage("routine"), hdr, [(str(hdr.SOPClassUID), str(hdr.SOPInstanceUID))])
    back = roundtrip(sr, tmp_path)
    assert (back.StudyTime, back.StudyInstanceUID) == ("140438", hdr.StudyInstanceUID)
    assert hdr.StudyTime == "14:04:38", "the source header itself is left as received"
    assert "StudyTime '14:04:38' -> '140438'" in caplog.text
