"""The triage SR is a valid Comprehensive SR that references the source instances."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import CTImageStorage

from agent.domain.verdicts import BodyPartCall, Finding, Triage
from agent.triage.sr import triage_sr
from tests.support.triage_helpers import head_header


def roundtrip(sr: hd.sr.ComprehensiveSR, tmp_path: Path) -> hd.sr.ComprehensiveSR:
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    ds = dcmread(path)
    return hd.sr.ComprehensiveSR.from_dataset(ds)


def test_sr_carries_findings_scores_and_slices(tmp_path: Path) -> None:
    hdr = head_header("")
    instances = [(CTImageStorage, f"1.2.826.0.1.3680043.8.498.{i}") for i in range(1, 6)]
    triage = Triage(
        "stat",
        (Finding("haemorrhage", 0.97, "stat", "ich@0.1.0", (instances[2][1], instances[3][1]), 0.4),),
        models=("ich@0.1.0", "bodypart@0.1.0"),
        body_part=BodyPartCall("", "HEAD", 0.93, None, "bodypart@0.1.0"),
    )
    sr = triage_sr(triage, hdr, instances)
    back = roundtrip(sr, tmp_path)
    assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert back.StudyInstanceUID == hdr.StudyInstanceUID and back.PatientID == "SYNTH-ICH"
    assert back.SeriesInstanceUID != hdr.SeriesInstanceUID
    evidence = back.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.SeriesInstanceUID == hdr.SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in evidence.ReferencedSOPSequence} == {u for _, u in instances}
    items = back.ContentSequence
    names = [i.ConceptNameCodeSequence[0].CodeMeaning for i in items]
    assert names.count("Algorithm Name") == 2 and "Target Region" in names
    finding = next(i for i in items if i.ConceptNameCodeSequence[0].CodeMeaning == "Finding")
    assert finding.ConceptCodeSequence[0].CodeValue == "50960005"
    kids = finding.ContentSequence
    score = next(k for k in kids if k.ValueType == "NUM")
    assert float(score.MeasuredValueSequence[0].NumericValue) == 0.97
    refs = [k.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for k in kids if k.ValueType == "IMAGE"]
    assert refs == [instances[2][1], instances[3][1]]
    comment = next(i for i in items if i.ConceptNameCodeSequence[0].CodeMeaning == "Comment")
    assert "NOT FOR CLINICAL USE" in comment.TextValue
    region = next(i for i in items if i.ConceptNameCodeSequence[0].CodeMeaning == "Target Region")
    assert "(missing)" in region.ContentSequence[0].TextValue


def test_unavailable_triage_sr(tmp_path: Path) -> None:
    hdr = head_header()
    instances = [(CTImageStorage, "1.2.826.0.1.3680043.8.498.77")]
    triage = Triage("routine", status="unavailable", reasons=("ich: RuntimeError: boom",),
                    models=("ich@0.1.0",))
    back = roundtrip(triage_sr(triage, hdr, instances), tmp_path)
    texts = [i.TextValue for i in back.ContentSequence if i.ValueType == "TEXT"]
    assert any("unavailable" in t and "boom" in t for t in texts)
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
    with caplog.at_level("WARNING", logger="agent.triage.sr"):
        sr = triage_sr(Triage("routine"), hdr, [(str(hdr.SOPClassUID), str(hdr.SOPInstanceUID))])
    back = roundtrip(sr, tmp_path)
    assert (back.StudyTime, back.StudyInstanceUID) == ("140438", hdr.StudyInstanceUID)
    assert hdr.StudyTime == "14:04:38", "the source header itself is left as received"
    assert "StudyTime '14:04:38' -> '140438'" in caplog.text
